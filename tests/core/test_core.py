"""Core MAE: masked-only losses, reference forward (drop and replace), targets, determinism, pos embeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maezoo.core import (
    MaskedAutoencoder,
    MaskedCrossEntropy,
    MaskedL1,
    MaskedMSE,
    RandomMasking,
    ScaledCosineError,
    TransformerDecoder,
    ViTEncoder,
    interpolate_pos_embed,
    masked_mean,
    sincos_pos_embed,
)
from maezoo.core.masking import Mask
from maezoo.core.targets import norm_target, raw_target
from maezoo.image import PatchTokenizer

# -- reference formulas (copied from facebookresearch/mae util/pos_embed.py, generalised to h != w) ----------


def mae_1d(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_2d(embed_dim, h, w):
    grid_h = np.arange(h, dtype=np.float32)
    grid_w = np.arange(w, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0).reshape([2, 1, h, w])
    emb_h = mae_1d(embed_dim // 2, grid[0])
    emb_w = mae_1d(embed_dim // 2, grid[1])
    return torch.from_numpy(np.concatenate([emb_h, emb_w], axis=1)).float()


def mae_norm_target(patches):
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)  # MAE: torch default, unbiased
    return (patches - mean) / (var + 1.0e-6) ** 0.5


# -- a tiny model and a hand-written reference forward -----------------------------------------------------

P, C, D, DD = 4, 3, 16, 8


def make_model(mask_mode="drop", ratio=0.5, cls_token=True, target="norm", loss="mse", enc_depth=2):
    tok = PatchTokenizer(D, P, C, img_size=None)
    enc = ViTEncoder(D, enc_depth, 2, cls_token=cls_token)
    dec = TransformerDecoder(D, tok.target_dim, DD, 1, 2, num_prefix_tokens=enc.num_prefix_tokens)
    model = MaskedAutoencoder(tok, enc, dec, RandomMasking(ratio), target=target, loss=loss, mask_mode=mask_mode)
    with torch.no_grad():  # make the zero-initialised pieces non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def reference_forward(model, x, mask_bool):
    """MAE forward written out with loops and plain indexing, sharing the model's parameters."""
    tok, enc, dec = model.tokenizer, model.encoder, model.decoder
    b, _, hh, ww = x.shape
    h, w = hh // P, ww // P
    n = h * w
    # patchify (MAE's (p, q, c) order) and embed like the strided conv
    patches = torch.stack([x[:, :, i * P : (i + 1) * P, j * P : (j + 1) * P] for i in range(h) for j in range(w)], 1)
    emb = torch.einsum("bncpq,dcpq->bnd", patches, tok.proj.weight) + tok.proj.bias
    pos = mae_2d(D, h, w)
    emb = emb + pos
    target_raw = patches.permute(0, 1, 3, 4, 2).reshape(b, n, -1)
    preds = []
    for s in range(b):
        vis = [i for i in range(n) if not mask_bool[s, i]]
        hid = [i for i in range(n) if mask_bool[s, i]]
        if model.mask_mode == "drop":
            seq = emb[s, vis]
        else:
            seq = emb[s].clone()
            for i in hid:  # SimMIM/BERT: mask token plus the position's embedding
                seq[i] = model.mask_token + pos[i]
        if enc.cls_token is not None:
            seq = torch.cat([enc.cls_token[0], seq], 0)
        z = seq[None]
        for blk in enc.blocks:
            z = blk(z)
        z = enc.norm(z)[0]
        y = dec.embed(z)
        k = enc.num_prefix_tokens
        full = torch.empty(n, DD)
        if model.mask_mode == "drop":
            for j, i in enumerate(vis):
                full[i] = y[k + j]
        else:
            full[:] = y[k:]
        for i in hid:
            full[i] = dec.mask_token.view(-1)
        full = full + mae_2d(DD, h, w)
        z = torch.cat([y[:k], full], 0)[None]
        for blk in dec.blocks:
            z = blk(z)
        preds.append(dec.pred(dec.norm(z))[0, k:])
    pred = torch.stack(preds)
    target = mae_norm_target(target_raw) if model.target_name == "norm" else target_raw
    per = ((pred - target) ** 2).mean(-1)
    loss = (per * mask_bool).sum() / mask_bool.sum()
    return pred, target, loss


@pytest.mark.parametrize("mask_mode", ["drop", "replace"])
@pytest.mark.parametrize("cls_token", [True, False])
@pytest.mark.parametrize("target", ["norm", "raw"])
@pytest.mark.parametrize("shape", [(8, 8), (8, 12)])
def test_forward_matches_reference(mask_mode, cls_token, target, shape):
    model = make_model(mask_mode, 0.5, cls_token, target)
    x = torch.randn(3, C, *shape)
    n = (shape[0] // P) * (shape[1] // P)
    mask = model.masking(3, (shape[0] // P, shape[1] // P), generator=torch.Generator().manual_seed(4))
    assert mask.mask.shape == (3, n)
    out = model(x, mask=mask)
    with torch.no_grad():
        ref_pred, ref_target, ref_loss = reference_forward(model, x, mask.mask)
    torch.testing.assert_close(out.target, ref_target, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pred, ref_pred, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert out.grid == (shape[0] // P, shape[1] // P)
    assert out.losses["recon"] is out.loss


def test_replace_mode_mask_tokens_keep_their_position():
    """Two hidden tokens must reach the encoder as different vectors (mask token + own position)."""
    model = make_model("replace", 0.5)
    x = torch.randn(1, C, 8, 8)
    mask = Mask.from_bool(torch.tensor([[True, True, False, False]]))
    tok = model.tokenizer(x)
    seen = model._replace(tok.tokens, mask, None, tok.context.get("pos_embed"))
    assert not torch.allclose(seen[0, 0], seen[0, 1])
    torch.testing.assert_close(seen[0, 0] - seen[0, 1], sincos_pos_embed(D, (2, 2))[0] - sincos_pos_embed(D, (2, 2))[1])
    torch.testing.assert_close(seen[0, 2:], tok.tokens[0, 2:])


def test_replace_rate_substitutes_some_hidden_tokens():
    tok = PatchTokenizer(D, P, C, img_size=None)
    enc, dec = ViTEncoder(D, 1, 2), TransformerDecoder(D, tok.target_dim, DD, 1, 2)
    model = MaskedAutoencoder(tok, enc, dec, RandomMasking(0.75), mask_mode="replace", replace_rate=0.5).train()
    x = torch.randn(4, C, 16, 16)
    t = tok(x)
    mask = model.masking(4, t.grid, generator=torch.Generator().manual_seed(0))
    pos = t.context["pos_embed"]
    seen = model._replace(t.tokens, mask, torch.Generator().manual_seed(1), pos)
    plain = (model.mask_token + pos).expand_as(seen)
    hidden_same = torch.isclose(seen, plain).all(-1)[mask.mask]
    assert 0 < int((~hidden_same).sum()) < hidden_same.numel()  # some, not all, substituted
    torch.testing.assert_close(seen[~mask.mask], t.tokens[~mask.mask])
    out = model(x, generator=torch.Generator().manual_seed(2))
    out.loss.backward()
    torch.testing.assert_close(out.loss, model.loss_fn(out.pred, out.target, out.mask.mask))
    assert out.loss.item() > 0
    with pytest.raises(ValueError, match="replace_rate"):
        MaskedAutoencoder(tok, enc, dec, RandomMasking(0.5), mask_mode="replace", replace_rate=1.0)
    with pytest.raises(ValueError, match="mask_mode"):
        MaskedAutoencoder(tok, enc, dec, RandomMasking(0.5), mask_mode="zero")


# -- losses reach only masked positions ---------------------------------------------------------------------


@pytest.mark.parametrize("mask_mode", ["drop", "replace"])
@pytest.mark.parametrize("target", ["norm", "raw"])
@pytest.mark.parametrize("loss", ["mse", "l1", "sce"])
def test_loss_gradient_reaches_only_masked_predictions(mask_mode, target, loss):
    model = make_model(mask_mode, 0.5, target=target, loss=loss).train()
    x = torch.randn(2, C, 8, 16)
    out = model(x, generator=torch.Generator().manual_seed(0))
    out.pred.retain_grad()
    out.loss.backward()
    g = out.pred.grad.abs().sum(-1)
    assert torch.all(g[~out.mask.mask] == 0), "visible tokens must get no gradient"
    assert torch.all(g[out.mask.mask] > 0), "every masked token must get gradient"


@pytest.mark.parametrize("loss_fn", [MaskedMSE(), MaskedL1(), ScaledCosineError(), ScaledCosineError(3.0)], ids=repr)
@pytest.mark.parametrize("target_fn", [raw_target, norm_target], ids=["raw", "norm"])
def test_loss_gradient_direct(loss_fn, target_fn):
    pred = torch.randn(3, 10, 12, requires_grad=True)
    target = target_fn(torch.randn(3, 10, 12))
    weight = torch.rand(3, 10) < 0.5
    weight[:, 0] = True
    loss_fn(pred, target, weight).backward()
    g = pred.grad.abs().sum(-1)
    assert torch.all(g[~weight] == 0) and torch.all(g[weight] > 0)


def test_ce_gradient_and_value():
    logits = torch.randn(2, 6, 5, requires_grad=True)
    labels = torch.randint(0, 5, (2, 6))
    weight = torch.tensor([[1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    loss = MaskedCrossEntropy()(logits, labels, weight)
    ref = torch.nn.functional.cross_entropy(logits[weight], labels[weight])
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert torch.all(logits.grad[~weight] == 0) and torch.all(logits.grad[weight].abs().sum(-1) > 0)


@pytest.mark.parametrize("name", ["mse", "l1", "sce", "ce"])
def test_empty_mask_is_safe_for_every_loss(name):
    import maezoo

    fn = maezoo.create("loss", name)
    pred = torch.randn(2, 4, 6, requires_grad=True)
    target = torch.randint(0, 6, (2, 4)) if name == "ce" else torch.randn(2, 4, 6)
    for weight in (torch.zeros(2, 4, dtype=torch.bool), torch.zeros(2, 4)):
        pred.grad = None
        loss = fn(pred, target, weight)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_loss_values_match_mae_formula():
    pred, target = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    mask = torch.tensor([[1, 0, 1, 0, 1], [0, 0, 1, 1, 0]], dtype=torch.float)
    ref = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    torch.testing.assert_close(MaskedMSE()(pred, target, mask.bool()), ref)
    ref_l1 = ((pred - target).abs().mean(-1) * mask).sum() / mask.sum()
    torch.testing.assert_close(MaskedL1()(pred, target, mask), ref_l1)
    cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1)
    torch.testing.assert_close(ScaledCosineError(2.0)(pred, target, mask), (((1 - cos) ** 2) * mask).sum() / mask.sum())


def test_masked_mean_with_fractional_weights_is_a_weighted_mean():
    per = torch.tensor([[2.0, 4.0, 100.0]])
    assert masked_mean(per, torch.tensor([[0.5, 0.0, 0.0]])).item() == pytest.approx(2.0)
    assert masked_mean(per, torch.tensor([[0.25, 0.25, 0.0]])).item() == pytest.approx(3.0)
    # NaN at an unselected token does not leak into the value
    assert masked_mean(torch.tensor([[1.0, float("nan")]]), torch.tensor([[True, False]])).item() == 1.0


def test_norm_target_matches_mae_unbiased_variance():
    patches = torch.randn(2, 9, 48) * 3 + 1
    torch.testing.assert_close(norm_target(patches), mae_norm_target(patches))
    p = patches.shape[-1]
    mean = patches.mean(-1, keepdim=True)
    var_unbiased = ((patches - mean) ** 2).sum(-1, keepdim=True) / (p - 1)
    torch.testing.assert_close(norm_target(patches), (patches - mean) / (var_unbiased + 1e-6).sqrt())
    # constant patches stay finite
    assert torch.isfinite(norm_target(torch.ones(1, 2, 16))).all()


# -- mask ratio 0, encode, determinism -----------------------------------------------------------------------


@pytest.mark.parametrize("mask_mode", ["drop", "replace"])
@pytest.mark.parametrize("loss", ["mse", "l1", "sce"])
def test_mask_ratio_zero(mask_mode, loss):
    model = make_model(mask_mode, 0.0, loss=loss).train()
    out = model(torch.randn(2, C, 8, 8))
    assert not out.mask.mask.any()
    assert out.loss.item() == 0.0 and torch.isfinite(out.pred).all()
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.equal(p.grad, torch.zeros_like(p.grad)), name


def test_encode_without_masking():
    model = make_model("drop", 0.75)
    x = torch.randn(3, C, 8, 12)
    assert model.encode(x, pool="cls").shape == (3, D)
    assert model.encode(x, pool="mean").shape == (3, D)
    feats = model.encode(x, pool="none")
    assert feats.shape == (3, 6, D)
    # no masking: same features every call, equal to the encoder on all tokens
    torch.testing.assert_close(model.encode(x, pool="none"), feats)
    full = model.encoder(model.tokenizer(x).tokens)
    torch.testing.assert_close(feats, full[:, 1:])
    torch.testing.assert_close(model.encode(x, pool="mean"), full[:, 1:].mean(1))
    with pytest.raises(ValueError, match="pool"):
        model.encode(x, pool="max")
    no_cls = make_model("drop", 0.75, cls_token=False)
    assert no_cls.encode(x, pool="mean").shape == (3, D)
    with pytest.raises(ValueError, match="class token"):
        no_cls.encode(x, pool="cls")


def test_determinism_under_generator():
    model = make_model("drop", 0.75).train()
    x = torch.randn(2, C, 16, 16)
    a = model(x, generator=torch.Generator().manual_seed(7))
    b = model(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.mask.mask, b.mask.mask)
    assert torch.equal(a.loss, b.loss)
    c = model(x, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a.mask.mask, c.mask.mask)
    s = model.sample_mask(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(s.mask, a.mask.mask)


def test_fixed_mask_reused_and_wrong_mask_rejected():
    model = make_model("drop", 0.5)
    x = torch.randn(2, C, 8, 8)
    m = model.sample_mask(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x, mask=m).mask.mask, m.mask)
    with pytest.raises(ValueError, match="mask is"):
        model(x, mask=RandomMasking(0.5)(3, (2, 2)))
    with pytest.raises(ValueError, match="mask is"):
        model(x, mask=RandomMasking(0.5)(2, (4, 4)))


def test_training_step_reduces_loss():
    model = make_model("drop", 0.5, enc_depth=1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(4, C, 8, 8)
    m = model.sample_mask(x, generator=torch.Generator().manual_seed(0))
    first = None
    for _ in range(12):
        loss = model(x, mask=m).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.7 * first


def test_official_mae_init():
    enc = ViTEncoder(32, 1, 2)
    dec = TransformerDecoder(32, 12, 16, 1, 2)
    tok = PatchTokenizer(32, 2, 3, img_size=None)
    for m in [*enc.modules(), *dec.modules()]:
        if isinstance(m, torch.nn.Linear):
            assert torch.all(m.bias == 0)
            bound = math.sqrt(6 / (m.in_features + m.out_features))
            assert m.weight.abs().max() <= bound
        if isinstance(m, torch.nn.LayerNorm):
            assert m.eps == 1e-6 and torch.all(m.weight == 1)
    assert 0.005 < enc.cls_token.std() < 0.05 and 0.005 < dec.mask_token.std() < 0.05
    assert torch.all(tok.proj.bias == 0)
    assert [n for n, _ in enc.named_parameters()][:1] == ["cls_token"]
    assert {"embed.weight", "mask_token", "norm.weight", "pred.weight"} <= {n for n, _ in dec.named_parameters()}


def test_decoder_rejects_mismatched_latent():
    dec = TransformerDecoder(8, 4, 8, 1, 2, num_prefix_tokens=1)
    mask = RandomMasking(0.5)(1, (4,))
    with pytest.raises(ValueError, match="latent tokens"):
        dec(torch.randn(1, 1 + 3, 8), mask, (4,))


# -- sin-cos position embeddings ---------------------------------------------------------------------------


@pytest.mark.parametrize("grid,dim", [((7,), 16), ((3, 5), 32), ((2, 3, 4), 48), ((2, 3, 4), 512), ((4, 4), 768)])
def test_sincos_shapes_and_uniqueness(grid, dim):
    pe = sincos_pos_embed(dim, grid)
    assert pe.shape == (math.prod(grid), dim) and pe.dtype == torch.float32
    assert torch.unique(pe, dim=0).shape[0] == math.prod(grid), "every position must get its own embedding"
    assert pe.abs().max() <= 1.0


def test_sincos_1d_matches_transformer_formula():
    pe = sincos_pos_embed(16, (10,))
    torch.testing.assert_close(pe, torch.from_numpy(mae_1d(16, np.arange(10.0))).float())


@pytest.mark.parametrize("h,w,dim", [(14, 14, 768), (4, 4, 16), (2, 5, 32), (6, 3, 64)])
def test_sincos_2d_matches_mae_layout(h, w, dim):
    torch.testing.assert_close(sincos_pos_embed(dim, (h, w)), mae_2d(dim, h, w), atol=1e-6, rtol=0)


def test_sincos_3d_parts_encode_each_axis():
    pe = sincos_pos_embed(48, (2, 3, 4)).view(2, 3, 4, 48)
    x_part, y_part, t_part = pe[..., :16], pe[..., 16:32], pe[..., 32:]
    assert torch.equal(x_part, x_part[:1, :1].expand_as(x_part))  # depends on w only
    assert torch.equal(y_part, y_part[:1, :, :1].expand_as(y_part))
    assert torch.equal(t_part, t_part[:, :1, :1].expand_as(t_part))


def test_sincos_errors():
    with pytest.raises(ValueError):
        sincos_pos_embed(15, (4, 4))
    with pytest.raises(ValueError):
        sincos_pos_embed(16, (2, 2, 2, 2))


@pytest.mark.parametrize("old,new", [((8,), (12,)), ((4, 4), (6, 3)), ((2, 2, 2), (3, 4, 2))])
def test_interpolate_pos_embed(old, new):
    dim = 24
    pe = sincos_pos_embed(dim, old)
    out = interpolate_pos_embed(pe, old, new)
    assert out.shape == (math.prod(new), dim)
    assert interpolate_pos_embed(pe[None], old, new).shape == (1, math.prod(new), dim)
    assert torch.equal(interpolate_pos_embed(pe, old, old), pe)
    assert torch.equal(interpolate_pos_embed(pe[None], old, old), pe[None])


def test_interpolate_constant_and_errors():
    pe = torch.ones(16, 8) * 3
    torch.testing.assert_close(interpolate_pos_embed(pe, (4, 4), (8, 8)), torch.full((64, 8), 3.0))
    with pytest.raises(ValueError):
        interpolate_pos_embed(pe, (4, 4), (8,))
    with pytest.raises(ValueError, match="rows"):
        interpolate_pos_embed(pe, (5, 4), (8, 8))


@pytest.mark.parametrize("loss_fn", [MaskedMSE(), MaskedL1(), ScaledCosineError(3.0)])
def test_bool_weight_selects_rows_with_same_value_and_gradients(loss_fn):
    # a bool weight scores only the selected tokens (select_rows); value and gradients equal the float path
    torch.manual_seed(0)
    pred = torch.randn(2, 6, 5, requires_grad=True)
    target = torch.randn(2, 6, 5)
    mask = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 1, 0, 1, 1, 0]]).bool()
    a = loss_fn(pred, target, mask)
    (ga,) = torch.autograd.grad(a, pred)
    b = loss_fn(pred, target, mask.float())
    (gb,) = torch.autograd.grad(b, pred)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)
    assert ga[~mask].abs().sum() == 0
    # a NaN at an unselected token reaches neither the value nor (bool path) the gradients
    target[0, 1] = float("nan")
    c = loss_fn(pred, target, mask)
    (gc,) = torch.autograd.grad(c, pred)
    torch.testing.assert_close(c, a)
    torch.testing.assert_close(gc, ga)


def test_ce_bool_weight_selects_rows():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 4, 9), torch.randint(0, 9, (2, 4))
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 1]]).bool()
    ref = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    torch.testing.assert_close(MaskedCrossEntropy()(logits, labels, mask), ref)
    torch.testing.assert_close(MaskedCrossEntropy()(logits, labels, mask.float()), ref)


def test_dropout_op_distribution_scale_and_gradient():
    from maezoo.core.ops import dropout

    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    y = dropout(x, 0.2, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005  # 200k draws: std of the share ~0.0009
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.8))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d(x * keep / (1-p)) / dx = keep / (1-p)
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0) is x
    assert dropout(x, 1.0).abs().sum() == 0
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(x, 1.5)
