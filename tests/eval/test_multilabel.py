"""Multi-label data through the generic protocols: multi-hot targets from the AST JSON lists, binary
cross-entropy fine-tuning and linear probing, mixup of multi-hot rows, k-NN neighbour votes, and mAP.

The JSON lists, label csv and wavs are written by the tests (short tones, a few seconds of audio in all).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader, TensorDataset

import maezoo
from maezoo.eval.finetune import Classifier, FinetuneConfig, evaluate, finetune, resolve_task
from maezoo.eval.knn import knn_classify, knn_multilabel, knn_scores
from maezoo.eval.metrics import mean_average_precision
from maezoo.eval.protocols import EvalData, ProtocolEnv, get_protocol
from maezoo.image.models import mae_vit

MIDS = ["/m/dog", "/m/rain", "/m/bell"]
FREQS = [300.0, 900.0, 2100.0]  # one tone per label; a clip with two labels holds both tones


def write_multilabel_lists(root: Path, n_train: int = 18, n_test: int = 9) -> dict[str, str]:
    """Train/test AST lists over three labels; every third clip has two labels (two tones)."""
    audio = root / "audio"
    audio.mkdir(parents=True)
    (root / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{m},"{m[3:]}"\n' for i, m in enumerate(MIDS)))
    out = {}
    sr = 16000
    t = np.arange(int(0.4 * sr)) / sr
    for split, n in (("train", n_train), ("test", n_test)):
        data = []
        for i in range(n):
            labels = [i % 3] + ([(i + 1) % 3] if i % 3 == 2 else [])
            g = np.random.default_rng(i + (0 if split == "train" else 1000))
            x = sum(0.2 * np.sin(2 * np.pi * FREQS[c] * t) for c in labels) + 0.01 * g.standard_normal(t.size)
            f = audio / f"{split}{i}.wav"
            sf.write(f, x.astype(np.float32), sr)
            data.append({"wav": f"audio/{f.name}", "labels": ",".join(MIDS[c] for c in labels)})
        (root / f"{split}.json").write_text(json.dumps({"data": data}))
        out[split] = str(root / f"{split}.json")
    return {**out, "label_csv": str(root / "class_labels_indices.csv")}


# -- the metric -------------------------------------------------------------------------------------------
def test_map_matches_a_hand_computation():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.7, 0.4], [0.3, 0.2, 0.3], [0.1, 0.6, 0.2]])
    target = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)
    # class 0 ranked 0.9(+) 0.8(-) 0.3(+) 0.1(-): AP = (1/1 + 2/3) / 2; class 1: 0.7(+) first: AP = 1;
    # class 2 has no positive and is left out of the macro average
    assert mean_average_precision(scores, target) == pytest.approx(100 * ((1 + 2 / 3) / 2 + 1) / 2)
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(scores, torch.zeros(4, 3))


# -- data -------------------------------------------------------------------------------------------------
def test_json_lists_give_multi_hot_targets_and_the_flag_forces_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    args = write_multilabel_lists(tmp_path)
    ds = maezoo.build("dataset", "audio_json", split="train", transform="eval", target_frames=32, **args)
    assert ds.multilabel and ds.num_classes == 3
    ys = torch.stack([ds[i][1] for i in range(6)])
    assert ys.dtype == torch.float32 and ys.tolist()[2] == [1.0, 0.0, 1.0] and ys.tolist()[0] == [1.0, 0.0, 0.0]
    single = {**args, "train": str(tmp_path / "single.json")}  # one label per clip: class ids ...
    rows = json.loads(Path(args["train"]).read_text())["data"]
    Path(single["train"]).write_text(json.dumps({"data": [{**r, "labels": r["labels"].split(",")[0]} for r in rows]}))
    one = maezoo.build("dataset", "audio_json", split="train", transform="eval", target_frames=32,
                       **{**single, "test": single["train"]})
    assert not one.multilabel and isinstance(one[0][1], int)
    forced = maezoo.build("dataset", "audio_json", split="train", transform="eval", target_frames=32,  # ... unless asked
                          multilabel=True, **{**single, "test": single["train"]})
    assert forced.multilabel and forced[1][1].tolist() == [0.0, 1.0, 0.0]


# -- fine-tuning ------------------------------------------------------------------------------------------
def _multi_hot_images(n: int, seed: int = 0):
    """16x16 one-channel images holding a bright square in the quadrant of each of their labels (4 labels)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, 4, generator=g) < 0.4).float()
    y[y.sum(1) == 0, 0] = 1.0
    x = 0.1 * torch.randn(n, 1, 16, 16, generator=g)
    for c, (r, s) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
        x[:, 0, r:r + 8, s:s + 8] += 2.0 * y[:, c, None, None]
    return x, y


def tiny_image_mae():
    torch.manual_seed(0)
    return mae_vit(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2, decoder_dim=16,
                   decoder_depth=1, decoder_heads=2)


def test_finetune_trains_multi_hot_targets_with_bce_and_reports_map():
    x, y = _multi_hot_images(256)
    xt, yt = _multi_hot_images(96, seed=1)
    train = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    test = DataLoader(TensorDataset(xt, yt), batch_size=48)
    assert resolve_task("auto", train, test, 4) == "multilabel"  # float [C] labels, no flag on the dataset
    cfg = FinetuneConfig(epochs=6, lr=5e-3, warmup_epochs=0, mixup_prob=0.0, label_smoothing=0.0, precision="fp32",
                         layer_decay=None)
    res = finetune(tiny_image_mae(), train, test, 4, cfg)
    assert res["task"] == "multilabel" and "top1" not in res and res["mAP"] > 90  # measured 95.6; untrained ~40
    before = evaluate(Classifier(tiny_image_mae(), 4), test, task="multilabel")  # the untrained head
    assert res["mAP"] > before["mAP"] + 15 and math.isfinite(res["test_loss"])
    # image mixup/cutmix mixes the multi-hot rows (timm's multi-label mixup) instead of failing on class ids
    mixed = finetune(tiny_image_mae(), train, test, 4, FinetuneConfig(epochs=1, lr=2e-3, precision="fp32"))
    assert mixed["mixup"] and 0 <= mixed["mAP"] <= 100 and math.isfinite(mixed["train_loss"])
    with pytest.raises(ValueError, match="multi-hot float labels"):  # class ids under task=multilabel
        finetune(tiny_image_mae(), DataLoader(TensorDataset(x, y.argmax(1)), batch_size=32), test, 4,
                 FinetuneConfig(epochs=1, lr=1e-3, precision="fp32", task="multilabel"))


def test_single_label_data_resolves_to_classification_and_leaves_the_generator_alone():
    x, y = _multi_hot_images(8)
    loader = DataLoader(TensorDataset(x, y.argmax(1)), batch_size=4)
    torch.manual_seed(3)
    state = torch.get_rng_state()
    assert resolve_task("auto", loader, loader, 4) == "classification"
    assert torch.equal(torch.get_rng_state(), state)
    assert resolve_task("multilabel", loader, loader, 4) == "multilabel"  # an explicit task wins


# -- k-NN -------------------------------------------------------------------------------------------------
def test_knn_multi_hot_votes_are_the_weighted_share_of_neighbours():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    q = torch.tensor([[1.0, 0.05]])
    s = knn_scores(train, labels, q, k=2, temperature=0.1)
    sims = torch.nn.functional.normalize(train, dim=1) @ torch.nn.functional.normalize(q, dim=1)[0]
    w = (sims[:2] / 0.1).exp()  # the two nearest: rows 0 and 1
    expect = (w[:, None] * labels[:2]).sum(0) / w.sum()
    assert torch.allclose(s[0], expect, atol=1e-6) and s.shape == (1, 3)
    # single-label behaviour unchanged: integer labels still vote by class id
    assert knn_classify(train, torch.tensor([0, 0, 1]), q, torch.tensor([0]), k=2)["top1"] == 100.0
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(200, 4, generator=g) < 0.4).float()
    feats = y + 0.1 * torch.randn(200, 4, generator=g)
    assert knn_multilabel(feats[:150], y[:150], feats[150:], y[150:], k=5)["mAP"] > 95


# -- protocols end to end -----------------------------------------------------------------------------------
def _tiny_audio_model():
    return maezoo.create_model("audiomae", target_frames=32, embed_dim=32, depth=1, num_heads=2, decoder_dim=16,
                               decoder_depth=2, decoder_heads=2)


def test_protocols_report_map_on_multi_label_audio_lists(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    args = write_multilabel_lists(tmp_path)

    def build(split: str, transform: str):
        return maezoo.build("dataset", "audio_json", split=split, transform=transform, target_frames=32,
                            freqm=8 if transform == "finetune" else 0, **args)

    data, env = EvalData(build, "tiny-multilabel"), ProtocolEnv(torch.device("cpu"), batch_size=8, progress=False)
    model = _tiny_audio_model()
    out = {}
    for name in ("knn", "linprobe", "finetune", "scratch"):
        fn = get_protocol(name)
        kw = {"epochs": 2, "batch_size": 6, "lr": 1e-3, "mixup_prob": 0.0} if fn.section == "finetune" else {}
        kw |= {"epochs": 5} if name == "linprobe" else {}
        out[name] = fn(model, data, fn.Settings(pool="mean", **kw), env)
    for name, o in out.items():
        assert set(o.metrics) == {"mAP"} and 0 < o.metrics["mAP"] <= 100, (name, o.metrics)
    assert out["linprobe"].extra["task"] == "multilabel" and out["knn"].extra["task"] == "multilabel"


def test_maezoo_run_reports_map_rows_for_multi_label_lists(tmp_path, monkeypatch):
    from maezoo.cli import main
    from maezoo.results import read_results

    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    args = write_multilabel_lists(tmp_path)
    tiny = ["model.name=audiomae", "model.args.embed_dim=32", "model.args.depth=1", "model.args.num_heads=2",
            "model.args.decoder_dim=16", "model.args.decoder_depth=2", "model.args.decoder_heads=2",
            "model.args.target_frames=32", "data.args.target_frames=32", "data.args.norm_stats=null",
            "trainer.max_steps=2", "trainer.batch_size=6", "trainer.warmup_steps=1", "trainer.threads=1",
            "trainer.num_workers=0", "eval.num_workers=0", "eval.batch_size=8", "linprobe.epochs=2",
            "finetune.epochs=1", "finetune.batch_size=6", "trainer.precision=fp32", "visualize=0",
            "stages=[pretrain,knn,linprobe,finetune,scratch]", "published=[]"]
    run = tmp_path / "run"
    assert main(["run", "audio/audiomae_esc50", *tiny, *[f"data.args.{k}={v}" for k, v in args.items()],
                 "--run-dir", str(run)]) == 0
    _, rows = read_results(run / "results.json")
    got = {(r.protocol, r.init) for r in rows if r.metric == "mAP"}
    assert got == {("knn", "pretrained"), ("knn", "random"), ("linprobe", "pretrained"), ("linprobe", "random"),
                   ("finetune", "pretrained"), ("finetune", "random")}
    assert not any(r.metric in ("top1", "top5") for r in rows)
