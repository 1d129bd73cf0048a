"""Downstream protocols: k-NN, linear probe, (partial) fine-tuning, metrics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch.utils.data import DataLoader, TensorDataset

from maezoo.eval import (
    Classifier,
    FinetuneConfig,
    KNNMonitor,
    LinearHead,
    build_finetune_optimizer,
    extract_features,
    finetune,
    knn_classify,
    linear_probe,
)
from maezoo.image.models import mae_vit
from maezoo.registry import get


def tiny_mae(depth: int = 2, seed: int = 0, **kw):
    torch.manual_seed(seed)
    args = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=depth, num_heads=2,
                decoder_dim=32, decoder_depth=1, decoder_heads=2)
    return mae_vit(**{**args, **kw})


def clusters(n: int, c: int = 5, d: int = 16, spread: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(c, d, generator=g), dim=1) * 3
    y = torch.randint(0, c, (n,), generator=g)
    return centers[y] + spread * torch.randn(n, d, generator=g), y


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8]
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


# -- k-NN ---------------------------------------------------------------------------------------------
def test_knn_separable_and_random():
    feats, labels = clusters(700)
    xtr, ytr, xte, yte = feats[:500], labels[:500], feats[500:], labels[500:]
    res = knn_classify(xtr, ytr, xte, yte, k=20)
    g = torch.Generator().manual_seed(1)
    assert set(res) == {"top1", "top5"}
    assert res["top1"] > 99.0 and res["top5"] == 100.0
    # random labels: chance (10 classes -> ~10%)
    f = torch.randn(2000, 32, generator=g)
    lab = torch.randint(0, 10, (2000,), generator=g)
    chance = knn_classify(f[:1500], lab[:1500], f[1500:], lab[1500:], k=20)["top1"]
    assert 3.0 < chance < 20.0


def test_knn_k1_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    xtr, ytr = torch.randn(300, 8, generator=g), torch.randint(0, 7, (300,), generator=g)
    xte, yte = torch.randn(123, 8, generator=g), torch.randint(0, 7, (123,), generator=g)
    res = knn_classify(xtr, ytr, xte, yte, k=1, chunk=17)  # chunking must not matter
    a, b = xtr / xtr.norm(dim=1, keepdim=True), xte / xte.norm(dim=1, keepdim=True)
    pred = np.array([ytr[int(np.argmax([float(a[j] @ b[i]) for j in range(300)]))] for i in range(123)])
    assert res["top1"] == pytest.approx(100.0 * (pred == yte.numpy()).mean())


def test_knn_monitor_runs_every_n_and_restores_mode(digits):
    (x, y), _ = digits
    mae = tiny_mae().train()
    tr = DataLoader(TensorDataset(x[:200], y[:200]), batch_size=100)
    te = DataLoader(TensorDataset(x[200:300], y[200:300]), batch_size=100)
    mon = KNNMonitor(tr, te, every=5, k=10, pool="cls")
    assert mon.maybe_run(mae, 0) is None and mon.maybe_run(mae, 3) is None
    r = mon.maybe_run(mae, 10)
    ftr, ytr = extract_features(mae, tr, pool="cls")
    fte, yte = extract_features(mae, te, pool="cls")
    want = knn_classify(ftr, ytr, fte, yte, k=10)
    assert r is not None and r["step"] == 10 and r["top1"] == pytest.approx(want["top1"])
    assert mae.training and len(mon.history) == 1


def test_extract_features_shapes(digits):
    (x, y), _ = digits
    mae = tiny_mae()
    loader = DataLoader(TensorDataset(x[:50], y[:50]), batch_size=16)
    f, lab = extract_features(mae, loader, pool="mean")
    assert f.shape == (50, 32) and f.dtype == torch.float32 and lab.dtype == torch.long
    f, _ = extract_features(mae, loader, pool="cls", amp_dtype="bf16")
    assert f.shape == (50, 32) and f.dtype == torch.float32
    f, _ = extract_features(mae, loader, pool="none")
    assert f.shape == (50, 16, 32)


# -- linear probe ----------------------------------------------------------------------------------------
def test_linear_probe_separable_and_bn_without_affine():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 4, generator=g)
    x = torch.randn(1200, 20, generator=g) * 5 + 3  # un-normalised features: BatchNorm handles the scale
    y = (x @ w).argmax(dim=1)  # linearly separable, 4 classes
    res = linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], epochs=30, batch_size=128, return_head=True)
    assert res["top1"] > 90.0 and res["steps"] == 30 * (1000 // 128)
    head = res["head"]
    assert isinstance(head, LinearHead)
    assert head.bn.affine is False and head.bn.weight is None and len(list(head.bn.parameters())) == 0
    assert head.bn.eps == 1e-6


def test_linear_probe_manual_gradient_matches_autograd():
    h = LinearHead(16, 5)
    h2 = copy.deepcopy(h)
    x, y = torch.randn(32, 16) * 3 + 1, torch.randint(0, 5, (32,))
    ref = F.cross_entropy(h(x), y)
    ref.backward()
    loss = h2.train_step_(x, y)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(h2.linear.weight.grad, h.linear.weight.grad)
    torch.testing.assert_close(h2.linear.bias.grad, h.linear.bias.grad)
    torch.testing.assert_close(h2.bn.running_var, h.bn.running_var)


# -- fine-tuning -------------------------------------------------------------------------------------------
def test_partial_finetune_freezes_all_but_last_block(digits):
    (x, y), (xt, yt) = digits
    mae = tiny_mae(depth=3)
    before = copy.deepcopy(mae.state_dict())
    cfg = FinetuneConfig(epochs=1, max_steps=4, lr=1e-2, trainable_blocks=1, mixup_prob=0.0, drop_path=0.0, precision="fp32")
    tr = DataLoader(TensorDataset(x[:128], y[:128]), batch_size=32)
    te = DataLoader(TensorDataset(xt[:64], yt[:64]), batch_size=64)
    clf0 = Classifier(mae, 10)
    res = finetune(mae, tr, te, 10, cfg, return_model=True)
    clf = res["model"]
    sd0, sd = clf0.state_dict(), clf.state_dict()
    for name in sd:
        changed = not torch.equal(sd[name], sd0[name])
        if name.startswith("tokenizer.") or name.startswith(("encoder.blocks.0.", "encoder.blocks.1.")) or name == "encoder.cls_token":
            assert not changed, name
    assert not torch.equal(sd["encoder.blocks.2.mlp.fc1.weight"], sd0["encoder.blocks.2.mlp.fc1.weight"])
    assert not torch.equal(sd["head.weight"], sd0["head.weight"])
    assert not torch.equal(sd["fc_norm.weight"], sd0["fc_norm.weight"])
    # the pre-trained model itself is untouched (the next protocol starts from it)
    assert all(torch.equal(v, before[k]) for k, v in mae.state_dict().items())
    assert res["steps"] == 4 and {"top1", "top5", "steps", "wall_time_s"} <= set(res)


def test_layer_decay_scales_decrease_towards_embeddings():
    clf = Classifier(tiny_mae(depth=3), 10)
    opt = build_finetune_optimizer(clf, FinetuneConfig(layer_decay=0.5), lr=1.0)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    named = dict(clf.named_parameters())

    def s(name: str) -> float:
        return scale[id(named[name])]

    chain = ["tokenizer.proj.weight", "encoder.blocks.0.attn.qkv.weight", "encoder.blocks.1.attn.qkv.weight",
             "encoder.blocks.2.attn.qkv.weight", "head.weight"]
    values = [s(n) for n in chain]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert s("head.weight") == 1.0 and s("encoder.cls_token") == s("tokenizer.proj.weight") == 0.5**4


def test_classifier_drop_path_increases_with_depth():
    clf = Classifier(tiny_mae(depth=4), 10, drop_path=0.3)
    rates = []
    for blk in clf.encoder.blocks:
        dp = blk.drop_path1
        rates.append(dp.drop_prob if isinstance(dp, DropPath) else 0.0)
        assert type(blk.drop_path2) is type(dp)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert all(a < b for a, b in zip(rates, rates[1:]))
    assert isinstance(clf.encoder.norm, torch.nn.Identity)  # mean pool: fc_norm replaces the encoder norm


def test_finetune_tiny_vit_on_digits_beats_chance(digits):
    (x, y), (xt, yt) = digits
    g = torch.Generator().manual_seed(0)
    tr = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=g, drop_last=True)
    te = DataLoader(TensorDataset(xt, yt), batch_size=256)
    cfg = FinetuneConfig(epochs=4, lr=3e-3, warmup_epochs=0.5, mixup_prob=0.0, drop_path=0.0, precision="bf16", log_every=10)
    logs: list[dict] = []
    res = finetune(tiny_mae(), tr, te, 10, cfg, log=logs.append)
    assert res["top1"] > 40.0, res  # chance is 10%
    assert res["steps"] == 4 * len(tr) and logs and not res["mixup"]


def test_finetune_mixup_only_for_images(digits):
    (x, y), (xt, yt) = digits
    tr = DataLoader(TensorDataset(x[:66], y[:66]), batch_size=33)  # odd batches: last sample dropped
    te = DataLoader(TensorDataset(xt[:32], yt[:32]), batch_size=32)
    res = finetune(tiny_mae(), tr, te, 10, FinetuneConfig(epochs=1, lr=1e-3, precision="fp32"))
    assert res["mixup"] and res["steps"] == 2


# -- metrics -------------------------------------------------------------------------------------------------
def test_metrics_registry():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    scores, target = rng.random((50, 6)), (rng.random((50, 6)) > 0.6).astype(np.float32)
    m = get("metric", "mAP")
    assert m.higher_is_better
    assert m(torch.tensor(scores), torch.tensor(target)) == pytest.approx(
        100 * average_precision_score(target, scores, average="macro")
    )
    mse = get("metric", "mse")
    assert not mse.higher_is_better and not get("metric", "mae").higher_is_better
    assert mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])) == pytest.approx(2.5)
    assert get("metric", "mae")(np.array([1.0, 2.0]), np.array([0.0, 4.0])) == pytest.approx(1.5)
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    assert get("metric", "top1")(logits, torch.tensor([1, 2])) == 50.0
    assert get("metric", "top5")(logits, torch.tensor([1, 2])) == 100.0
    assert get("metric", "accuracy")(logits, torch.tensor([1, -100])) == 100.0


def test_the_old_amp_key_is_refused_naming_precision():
    from maezoo.config import ConfigError, from_dict
    from maezoo.eval.protocols import FinetuneSettings

    with pytest.raises(ConfigError, match=r"unknown key\(s\) amp in finetune \(amp is now precision\); valid keys: .*precision"):
        from_dict(FinetuneSettings, {"amp": "auto"}, "finetune")
    assert from_dict(FinetuneSettings, {"precision": "bf16"}, "finetune").precision == "bf16"
