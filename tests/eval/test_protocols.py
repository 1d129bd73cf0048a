"""Protocols as a registered kind: multi-label and regression probes, fine-tuning with input masking and
multi-view testing, and a third-party protocol composed by the system through a recipe section."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import maezoo
from maezoo.eval.finetune import Classifier, FinetuneConfig, evaluate, finetune, view_logits
from maezoo.eval.linprobe import infer_task, linear_probe_dense
from maezoo.eval.protocols import EvalData, ProtocolEnv, ProtocolOutput, get_protocol, protocol
from maezoo.image.models import mae_vit


def tiny_mae(**kw):
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2, decoder_dim=16,
                decoder_depth=1, decoder_heads=2)
    return mae_vit(**{**args, **kw})


def test_every_builtin_protocol_is_registered_with_settings():
    for name in ("knn", "linprobe", "finetune", "partial_finetune", "scratch", "node_linprobe", "svm"):
        fn = get_protocol(name)
        assert fn.Settings.__dataclass_fields__ and fn.section in ("finetune", name)
    assert get_protocol("scratch").init == "random" and get_protocol("knn").compares_random_init


def test_task_inference():
    assert infer_task(torch.tensor([0, 2, 1])) == "classification"
    assert infer_task(torch.tensor([[0.0, 1.0], [1.0, 1.0]])) == "multilabel"
    assert infer_task(torch.tensor([0.3, -1.2])) == "regression"


def test_multilabel_probe_reports_map_and_learns_a_linear_rule():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    y = torch.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0, x[:, 3] < -0.5], 1).float()  # linear in x
    r = linear_probe_dense(x[:400], y[:400], x[400:], y[400:], "multilabel", epochs=30, batch_size=64)
    assert r["mAP"] > 95  # separable labels; random scores give roughly the positive rate (~16-50)
    shuffled = linear_probe_dense(x[:400], y[torch.randperm(400, generator=g)], x[400:], y[400:], "multilabel",
                                  epochs=30, batch_size=64)
    assert shuffled["mAP"] < 70


def test_regression_probe_reports_mse_and_mae_in_original_units():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 4, generator=g)
    y = 100 + 10 * (2 * x[:, 0] - x[:, 1])  # offset and scale: standardised inside, reported in these units
    r = linear_probe_dense(x[:400], y[:400], x[400:], y[400:], "regression", epochs=40, batch_size=64)
    baseline = (y[400:] - y[:400].mean()).pow(2).mean().item()  # predicting the mean
    assert r["mse"] < 0.05 * baseline and r["mae"] < 3.0


def test_finetune_input_masking_drops_tokens_in_training_only():
    mae = tiny_mae()
    seen: list[int] = []
    clf = Classifier(mae, 10, pool="mean")
    clf.encoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    clf.input_masking = maezoo.create("masking", "random", ratio=0.5)
    x = torch.randn(4, 1, 16, 16)
    clf.train()
    clf(x)
    clf.eval()
    clf(x)
    assert seen == [8, 16]  # 16 tokens, half dropped while training, all at test time
    loader = DataLoader(TensorDataset(torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32,))), batch_size=16)
    cfg = FinetuneConfig(epochs=1, mixup_prob=0.0, precision="fp32", masking="random", masking_args={"ratio": 0.5},
                         layer_decay=None, drop_path=0.0)
    out = finetune(mae, loader, loader, 10, cfg)
    assert out["steps"] == 2


def test_multi_view_testing_averages_softmax_over_views():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randn(5, 2, 4)  # 5 samples, 2 views each
    got = view_logits(model, x, 2).exp()
    want = (model(x[:, 0]).softmax(-1) + model(x[:, 1]).softmax(-1)) / 2
    torch.testing.assert_close(got, want)
    y = want.argmax(-1)
    res = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=5), views=2)
    assert res["top1"] == 100.0
    with pytest.raises(ValueError, match="views=3"):
        view_logits(model, x, 3)


@dataclass
class _CountSettings:
    scale: float = 1.0


def test_a_third_party_protocol_runs_from_a_recipe_section(tmp_path):
    calls = []

    @protocol("token_count_test", _CountSettings)
    def token_count(model, data: EvalData, s: _CountSettings, env: ProtocolEnv) -> ProtocolOutput:
        calls.append((s.scale, env.seed))
        n = len(data.get("test"))
        return ProtocolOutput({"scaled_n": s.scale * n})

    try:
        from maezoo.cli import main
        from maezoo.results import read_results

        run = tmp_path / "run"
        args = ["run", "image/mae_digits_demo", "stages=[pretrain,token_count_test]", "token_count_test.scale=2",
                "trainer.max_steps=2", "visualize=0", "model.args.depth=1", "seeds=[3]", "--run-dir", str(run)]
        assert main(args) == 0
        _, rows = read_results(run / "results.json")
        (row,) = rows
        assert row.protocol == "token_count_test" and row.value == 2 * 497 and calls == [(2.0, 3)]
    finally:
        from maezoo.registry import _REGISTRY

        _REGISTRY["protocol"].pop("token_count_test", None)
