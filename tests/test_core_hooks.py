"""Core hooks: decoder-side target subsets, configurable targets, token batch != input batch, coarse mask
grids with layer ids, replace rules, segment pooling and dict inputs. Every test checks values against a
hand computation on a tiny model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from maezoo.core import (
    MaskedAutoencoder,
    RandomMasking,
    ReplaceRule,
    RunningCellMasking,
    Tokenizer,
    Tokens,
    TransformerDecoder,
    ViTEncoder,
    layer_id,
    layer_ids,
    norm_target,
    resolve_target,
    select_decoder_targets,
    sincos_pos_embed,
)
from maezoo.core.mae import _batch_size, segment_pool
from maezoo.core.masking import REPLACE_KEEP, REPLACE_MASK, REPLACE_RANDOM, Mask, apply_replace, apply_replace_rule
from maezoo.image import PatchTokenizer

P, C, D, DD = 4, 3, 16, 8


def perturb(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # make the zero-initialised pieces non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def make_model(mask_mode="drop", ratio=0.5, target: Any = "norm", **kw) -> MaskedAutoencoder:
    tok = PatchTokenizer(D, P, C, img_size=None)
    enc = ViTEncoder(D, 1, 2)
    dec = TransformerDecoder(D, tok.target_dim, DD, 1, 2, num_prefix_tokens=1)
    model = MaskedAutoencoder(tok, enc, dec, RandomMasking(ratio), target=target, mask_mode=mask_mode, **kw)
    return perturb(model).eval()


def mse_per_token(pred: Tensor, target: Tensor) -> Tensor:
    return ((pred - target) ** 2).mean(-1)


# -- 1. decoder-side target subset (VideoMAE V2) ------------------------------------------------------------


@pytest.mark.parametrize("mask_mode", ["drop", "replace"])
def test_decoder_masking_scores_exactly_the_selected_hidden_tokens(mask_mode):
    torch.manual_seed(0)
    model = make_model(mask_mode, 0.5, decoder_masking={"name": "random", "args": {"ratio": 0.5}})
    x = torch.randn(3, C, 8, 16)  # grid (2, 4): N = 8, M = 4 hidden, K = 4 * 4 // 8 = 2 targets
    out = model(x, generator=torch.Generator().manual_seed(3))
    ids, hidden = out.mask.ids_target, out.mask.mask
    assert ids.shape == (3, 2) and out.pred.shape == out.target.shape == (3, 2, P * P * C)
    assert torch.gather(hidden, 1, ids).all(), "targets must be hidden tokens"
    assert (ids[:, 1:] > ids[:, :1]).all(), "ascending, distinct"
    assert torch.equal(out.target_mask, torch.zeros_like(hidden).scatter(1, ids, True))
    # sample_mask draws the same mask and targets as forward from the same generator
    s = model.sample_mask(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s.mask, hidden) and torch.equal(s.ids_target, ids)

    # hand-computed loss over exactly the selected tokens
    patches = model.tokenizer.patchify(x)
    mu, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
    target_all = (patches - mu) / (var + 1e-6).sqrt()
    sel_target = torch.stack([target_all[b, ids[b]] for b in range(3)])
    torch.testing.assert_close(out.target, sel_target)
    torch.testing.assert_close(out.loss, mse_per_token(out.pred, sel_target).mean())

    # the decoder sees visible + selected-hidden tokens only; reference written in grid order with loops
    dec = model.decoder
    with torch.no_grad():
        y = dec.embed(out.latent)
        pe = sincos_pos_embed(DD, out.grid)
        for b in range(3):
            vis_pos = out.mask.ids_keep[b].tolist()
            body = y[b, 1:] if mask_mode == "drop" else y[b, 1:][vis_pos]
            rows, vis_i = [], 0
            for i in range(8):
                if i in vis_pos:
                    rows.append(body[vis_i] + pe[i])
                    vis_i += 1
                elif i in ids[b].tolist():
                    rows.append(dec.mask_token.view(-1) + pe[i])
            z = torch.cat([y[b, :1], torch.stack(rows)])[None]
            for blk in dec.blocks:
                z = blk(z)
            z = dec.pred(dec.norm(z))[0, 1:]
            order = [i for i in range(8) if i in vis_pos or i in ids[b].tolist()]
            ref = torch.stack([z[order.index(i)] for i in ids[b].tolist()])
            torch.testing.assert_close(out.pred[b], ref, atol=1e-5, rtol=1e-5)


class FullGridDecoder(nn.Module):
    """Predicts every token (ignores ``ids_target``) and keeps its output so the test can read its gradient."""

    def __init__(self, inner: TransformerDecoder) -> None:
        super().__init__()
        self.inner, self.last = inner, None

    def forward(self, latent, mask, grid, context=None):
        self.last = self.inner(latent, mask.with_targets(None), grid, context)
        self.last.retain_grad()
        return self.last


def test_unselected_hidden_tokens_get_no_gradient_through_the_prediction():
    torch.manual_seed(0)
    tok = PatchTokenizer(D, P, C, img_size=None)
    dec = FullGridDecoder(TransformerDecoder(D, tok.target_dim, DD, 1, 2))
    model = perturb(MaskedAutoencoder(tok, ViTEncoder(D, 1, 2), dec, RandomMasking(0.75),
                                      decoder_masking=RandomMasking(0.5))).train()
    x = torch.randn(2, C, 16, 16)  # N = 16, M = 12, K = 6
    out = model(x, generator=torch.Generator().manual_seed(0))
    assert dec.last.shape == (2, 16, tok.target_dim) and out.pred.shape == (2, 6, tok.target_dim)
    out.loss.backward()
    g = dec.last.grad.abs().sum(-1)
    selected = out.target_mask
    unselected_hidden = out.mask.mask & ~selected
    assert int(unselected_hidden.sum()) == 12 and int(selected.sum()) == 12
    assert torch.all(g[unselected_hidden] == 0) and torch.all(g[~out.mask.mask] == 0)
    assert torch.all(g[selected] > 0)
    # the gathered prediction is the full prediction on the targets
    torch.testing.assert_close(out.pred, torch.stack([dec.last[b, out.mask.ids_target[b]] for b in range(2)]))


def test_default_has_no_decoder_targets():
    model = make_model()
    out = model(torch.randn(2, C, 8, 8), generator=torch.Generator().manual_seed(0))
    assert out.mask.ids_target is None and out.ids_target is None
    assert torch.equal(out.target_mask, out.mask.mask) and out.pred.shape == (2, 4, P * P * C)


def test_running_cell_pattern_and_target_preference():
    rc = RunningCellMasking(0.5)
    m = rc(4, (3, 4, 4), generator=torch.Generator().manual_seed(0)).mask.view(4, 3, 4, 4)
    cells = m.view(4, 3, 2, 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(4, 3, 4, 4)  # [B, T, cell, 4]
    assert (cells.sum(-1) == 2).all(), "half of every 2x2 cell is hidden"
    assert (cells == cells[:, :, :1]).all(), "same pattern in every cell of a frame"
    first = cells[:, :, 0]  # [B, T, 4]
    torch.testing.assert_close(first[:, 1:], first[:, :-1].roll(-1, dims=-1))  # runs by one per frame
    # VideoMAE V2: cell value at j, frame t is queue[(j + ptr + t + 1) % 4], queue = [1, 1, 0, 0]
    q = torch.tensor([True, True, False, False])
    for b in range(4):
        ptr = next(p for p in range(4) if torch.equal(first[b, 0], q[(torch.arange(4) + p + 1) % 4]))
        for t in range(3):
            assert torch.equal(first[b, t], q[(torch.arange(4) + ptr + t + 1) % 4])
    # as decoder masking: targets prefer hidden tokens the running cell keeps, fill up randomly
    enc_mask = RandomMasking(0.75)(4, (3, 4, 4), generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    ids = select_decoder_targets(enc_mask, rc, (3, 4, 4), g)
    dropped = rc(4, (3, 4, 4), generator=torch.Generator().manual_seed(2)).mask
    k = (36 * 24) // 48
    assert ids.shape == (4, k)
    for b in range(4):
        chosen = set(ids[b].tolist())
        assert chosen <= set(enc_mask.ids_masked[b].tolist())
        preferred = set((enc_mask.mask[b] & ~dropped[b]).nonzero().squeeze(1).tolist())
        assert len(chosen & preferred) == min(k, len(preferred))


# -- 2. targets with parameters -----------------------------------------------------------------------------


def test_norm_target_options_match_direct_formulas():
    torch.manual_seed(0)
    pix, ch = 8, 3
    patches = torch.randn(2, 5, pix * ch, dtype=torch.float64) * 2 + 0.5
    a = patches.numpy()
    # MAE default: per token, unbiased var, (x - m) / sqrt(var + eps)
    ref = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(norm_target(patches).numpy(), ref, rtol=1e-10)
    # biased variance, other eps
    ref = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, ddof=0, keepdims=True) + 1e-3)
    np.testing.assert_allclose(norm_target(patches, eps=1e-3, unbiased=False).numpy(), ref, rtol=1e-10)
    # VideoMAE: values laid out [pixels, C], per channel over the tubelet's pixels, (x - m) / (std + 1e-6)
    v = a.reshape(2, 5, pix, ch)
    ref = ((v - v.mean(-2, keepdims=True)) / (v.std(-2, ddof=1, keepdims=True) + 1e-6)).reshape(2, 5, -1)
    got = norm_target(patches, axes="channel", channels=ch, eps_mode="std")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    # the VideoMAE code itself (rearrange 'b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c')
    sq = patches.view(2, 5, pix, ch)
    videomae = (sq - sq.mean(dim=-2, keepdim=True)) / (sq.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    torch.testing.assert_close(got, videomae.reshape(2, 5, -1))


def test_target_specs_in_the_model():
    torch.manual_seed(0)
    x = torch.randn(2, C, 8, 8)
    spec = {"name": "norm", "args": {"axes": "channel", "channels": C, "eps_mode": "std"}}
    model = make_model(target=spec)
    assert model.target_name == "norm"
    out = model(x, generator=torch.Generator().manual_seed(0))
    raw = model.tokenizer.patchify(x).view(2, 4, P * P, C)  # MAE's (p, q, c) order: channel fastest
    ref = (raw - raw.mean(-2, keepdim=True)) / (raw.std(-2, keepdim=True) + 1e-6)
    torch.testing.assert_close(out.target, ref.reshape(2, 4, -1))
    # a callable target
    model = make_model(target=lambda p: 2 * p)
    torch.testing.assert_close(model(x).target, 2 * model.tokenizer.patchify(x))
    # raw as a mapping without args
    name, fn = resolve_target({"name": "raw"})
    assert name == "raw" and torch.equal(fn(x), x)
    # the string form keeps today's function
    assert resolve_target("norm")[1] is norm_target


def test_bad_target_specs_fail_early():
    with pytest.raises(TypeError, match="valid options"):
        resolve_target({"name": "norm", "args": {"axis": "channel"}})
    with pytest.raises(ValueError, match="axes"):
        resolve_target({"name": "norm", "args": {"axes": "pixel"}})
    with pytest.raises(ValueError, match="channels"):
        resolve_target({"name": "norm", "args": {"axes": "channel"}})
    with pytest.raises(ValueError, match="eps_mode"):
        make_model(target={"name": "norm", "args": {"eps_mode": "sqrt"}})
    with pytest.raises(ValueError, match="'name'"):
        resolve_target({"norm": {}})


# -- 3. token batch != input batch (channel independence, RevIN) ----------------------------------------------


class ChannelIndependentTokenizer(Tokenizer):
    """``[B, C, L] -> [B * C, L / p, D]``: every channel a separate series, RevIN-normalised per series."""

    def __init__(self, patch: int = 4, dim: int = D) -> None:
        super().__init__()
        self.patch, self.embed_dim, self.target_dim = patch, dim, patch
        self.proj = nn.Linear(patch, dim)

    def _revin(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, c, length = x.shape
        series = x.reshape(b * c, length)
        mean = series.mean(-1, keepdim=True)
        std = (series.var(-1, keepdim=True, unbiased=False) + 1e-5).sqrt()
        return ((series - mean) / std).view(b * c, length // self.patch, self.patch), mean[..., None], std[..., None]

    def grid(self, x):
        return (x.shape[-1] // self.patch,)

    def token_batch_size(self, x):
        return x.shape[0] * x.shape[1]

    def patchify(self, x):
        return self._revin(x)[0]

    def forward(self, x):
        patches, mean, std = self._revin(x)
        pe = sincos_pos_embed(self.embed_dim, self.grid(x))
        return Tokens(self.proj(patches) + pe, self.grid(x), {"mean": mean, "std": std, "pos_embed": pe})

    def inverse(self, values, context):
        return values * context["std"] + context["mean"]


def test_channel_independent_token_batch():
    torch.manual_seed(0)
    tok = ChannelIndependentTokenizer()
    enc = ViTEncoder(D, 1, 2)
    model = perturb(MaskedAutoencoder(tok, enc, TransformerDecoder(D, 4, DD, 1, 2), RandomMasking(0.5),
                                      target="raw", mask_mode="replace")).eval()
    x = torch.randn(2, 3, 24) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1) + 3
    out = model(x, generator=torch.Generator().manual_seed(1))
    assert out.mask.mask.shape == (6, 6) and int(out.mask.mask.sum()) == 18
    s = model.sample_mask(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s.mask, out.mask.mask)
    assert _batch_size(x, tok) == 6
    # RevIN statistics reach the output; inverse(target) gives back the raw patches
    assert out.context["mean"].shape == (6, 1, 1)
    torch.testing.assert_close(tok.inverse(out.target, out.context), x.reshape(6, 6, 4), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, mse_per_token(out.pred, out.target)[out.mask.mask].mean())
    # encode is per token-batch row
    feats = model.encode(x, pool="mean")
    assert feats.shape == (6, D)
    torch.testing.assert_close(feats, enc(tok(x).tokens)[:, 1:].mean(1))


# -- 4. coarse mask grid (ConvMAE) and layer ids ----------------------------------------------------------------


class TwoScaleTokenizer(Tokenizer):
    """Tokens on a (4, 4) grid of 2x2 patches; masks and targets on the (2, 2) grid of 4x4 patches."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_dim, self.target_dim = D, 16 * C
        self.proj = nn.Conv2d(C, D, 2, 2)

    def grid(self, x):
        return (x.shape[2] // 2, x.shape[3] // 2)

    def mask_grid(self, x):
        return (x.shape[2] // 4, x.shape[3] // 4)

    def forward(self, x):
        t = self.proj(x).flatten(2).transpose(1, 2)
        return Tokens(t + sincos_pos_embed(D, self.grid(x)), self.grid(x), mask_grid=self.mask_grid(x))

    def patchify(self, x):
        b, c, h, w = x.shape
        return x.view(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // 4) * (w // 4), -1)


class Stage(nn.Module):
    def __init__(self, depth: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = nn.Linear(D, D) if downsample else None
        self.blocks = nn.ModuleList(nn.Linear(D, D) for _ in range(depth))


class TwoStageEncoder(nn.Module):
    """Stage 0 on the fine grid with hidden regions zeroed (masked convolution), 2x2 merge, stage 1 on the
    visible coarse tokens only."""

    consumes = "mask"
    num_prefix_tokens = 0

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([Stage(2, False), Stage(3, True)])
        self.norm = nn.LayerNorm(D)
        self.seen: Mask | None = None

    def forward(self, tokens, context=None):
        b = tokens.shape[0]
        mask = (context or {}).get("mask")
        self.seen = mask
        x = tokens
        if mask is not None:
            fine = mask.mask.view(b, 2, 1, 2, 1).expand(b, 2, 2, 2, 2).reshape(b, 16)  # upsample x2
            x = x * (~fine).unsqueeze(-1)
        for blk in self.stages[0].blocks:
            x = x + torch.tanh(blk(x))
        x = x.view(b, 2, 2, 2, 2, D).mean((2, 4)).reshape(b, 4, D)  # merge 2x2 -> (2, 2) grid
        x = self.stages[1].downsample(x)
        if mask is not None:
            x = torch.gather(x, 1, mask.ids_keep.unsqueeze(-1).expand(-1, -1, D))
        for blk in self.stages[1].blocks:
            x = x + torch.tanh(blk(x))
        return self.norm(x)


def test_coarse_mask_grid_for_hierarchical_encoders():
    torch.manual_seed(0)
    tok, enc = TwoScaleTokenizer(), TwoStageEncoder()
    dec = TransformerDecoder(D, tok.target_dim, DD, 1, 2, num_prefix_tokens=0)
    model = perturb(MaskedAutoencoder(tok, enc, dec, RandomMasking(0.5), target="raw")).eval()
    x = torch.randn(3, C, 8, 8)
    out = model(x, generator=torch.Generator().manual_seed(0))
    assert out.grid == (2, 2) and out.token_grid == (4, 4)
    assert out.mask.mask.shape == (3, 4) and enc.seen is out.mask
    assert out.latent.shape == (3, 2, D)  # visible coarse tokens only
    assert torch.equal(model.sample_mask(x, generator=torch.Generator().manual_seed(0)).mask, out.mask.mask)
    # targets on the mask grid: 4x4 patches in (p, q, c) order
    for i, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        torch.testing.assert_close(out.target[:, i], x[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].permute(0, 2, 3, 1)
                                   .reshape(3, -1))
    # the decoder ran on the (2, 2) grid: same as calling it by hand
    with torch.no_grad():
        torch.testing.assert_close(out.pred, dec(out.latent, out.mask, (2, 2)))
    torch.testing.assert_close(out.loss, mse_per_token(out.pred, out.target)[out.mask.mask].mean())
    # hidden fine tokens never reach the encoder: changing pixels under hidden regions changes nothing there
    x2 = x.clone()
    m = out.mask.mask.view(3, 2, 2).repeat_interleave(4, 1).repeat_interleave(4, 2)
    x2[m.unsqueeze(1).expand_as(x2)] = 7.0
    torch.testing.assert_close(model(x2, mask=out.mask).latent, out.latent)
    # an encoder that does not consume the mask cannot apply a coarse one
    plain = MaskedAutoencoder(tok, ViTEncoder(D, 1, 2, cls_token=False), dec, RandomMasking(0.5))
    with pytest.raises(ValueError, match="consumes = 'mask'"):
        plain(x)


def test_layer_ids_rank_stages_after_earlier_stages():
    tok, enc = TwoScaleTokenizer(), TwoStageEncoder()
    model = MaskedAutoencoder(tok, enc, TransformerDecoder(D, tok.target_dim, DD, 1, 2, num_prefix_tokens=0),
                              RandomMasking(0.5))
    table, num_layers = layer_ids(model)
    assert num_layers == 5
    expect = {
        "tokenizer.proj.weight": 0,
        "encoder.stages.0.blocks.0.weight": 1, "encoder.stages.0.blocks.1.weight": 2,
        "encoder.stages.1.downsample.weight": 2,  # ranks with the last block of the stage before
        "encoder.stages.1.blocks.0.weight": 3, "encoder.stages.1.blocks.2.bias": 5,
        "encoder.norm.weight": 6, "decoder.blocks.0.attn.qkv.weight": 6, "decoder.mask_token": 6,
    }
    assert {k: table[k] for k in expect} == expect
    stage0 = [v for k, v in table.items() if k.startswith("encoder.stages.0.blocks")]
    stage1 = [v for k, v in table.items() if k.startswith("encoder.stages.1.blocks")]
    assert max(stage0) < min(stage1)
    # other spellings with explicit depths; ConvMAE's 1-based blocks<s>
    assert layer_id("encoder.stage1.blocks.1.w", 5, [2, 3]) == 2
    assert layer_id("encoder.stage2.blocks.0.w", 5, [2, 3]) == 3
    assert layer_id("encoder.blocks2.2.w", 5, [2, 3]) == 5
    assert layer_id("encoder.patch_embed1.proj.weight", 5, [2, 3]) == 0
    with pytest.raises(ValueError, match="stage_depths"):
        layer_id("encoder.stages.1.blocks.0.w", 5)
    # ViT rule unchanged
    vit = make_model()
    vt, vl = layer_ids(vit)
    assert vl == 1 and vt["encoder.blocks.0.attn.qkv.weight"] == 1 and vt["encoder.cls_token"] == 0
    assert vt["tokenizer.proj.weight"] == 0 and vt["encoder.norm.weight"] == 2 and vt["decoder.embed.weight"] == 2
    # an encoder's own layer_ids() wins
    enc.layer_ids = lambda: {"stages.1.downsample.weight": 3}
    assert layer_ids(model)[0]["encoder.stages.1.downsample.weight"] == 3


# -- 5. replace rules ------------------------------------------------------------------------------------------


def legacy_replace(model, x, mask, generator, pos=None):
    """The pre-ReplaceRule ``MaskedAutoencoder._replace`` (GraphMAE's numerics), verbatim."""
    b, n, d = x.shape
    pos_full = pos.to(x.device, x.dtype).expand(b, n, d) if pos is not None else None
    token = model.mask_token if pos_full is None else model.mask_token.to(x.dtype) + pos_full
    out = apply_replace(x, mask, token)
    if model.replace_rate > 0 and model.training:
        hidden = mask.ids_masked
        gen_dev = generator.device if generator is not None else x.device
        pick = torch.rand(hidden.shape, generator=generator, device=gen_dev).to(x.device) < model.replace_rate
        src = torch.randint(0, b * n, hidden.shape, generator=generator, device=gen_dev).to(x.device)
        content = x if pos_full is None else x - pos_full
        noise = content.reshape(b * n, d)[src]
        idx = hidden.unsqueeze(-1).expand(-1, -1, d)
        if pos_full is not None:
            noise = noise + torch.gather(pos_full, 1, idx)
        cur = torch.gather(out, 1, idx)
        out = out.scatter(1, idx, torch.where(pick.unsqueeze(-1), noise, cur))
    return out


@pytest.mark.parametrize("with_pos", [False, True])
def test_replace_rate_keeps_graphmae_numerics(with_pos):
    model = make_model("replace", 0.5, replace_rate=0.3).train()
    assert model.replace_rule == ReplaceRule(mask=0.7, random=0.3, keep=0.0) and model.replace_rate == 0.3
    x = torch.randn(4, 16, D)
    pos = sincos_pos_embed(D, (16,)) if with_pos else None
    mask = RandomMasking(0.5)(4, (16,), generator=torch.Generator().manual_seed(0))
    new = model._replace(x, mask, torch.Generator().manual_seed(5), pos)
    old = legacy_replace(model, x, mask, torch.Generator().manual_seed(5), pos)
    assert torch.equal(new, old)


def test_consumes_replace_encoder_gets_unmasked_tokens_and_the_same_draws():
    """An encoder with ``consumes = "replace"`` builds the replaced input itself from ``context["replace"]``: it gets
    the unmasked tokens and exactly the draws apply_replace_rule makes (GraphMAE's sparse first layer)."""
    import dataclasses

    model = make_model("replace", 0.5, replace_rate=0.3).train()
    tokenize = model.tokenizer.forward

    def no_pos(x, *a, **k):  # the hook is for tokenizers that add no position embedding (node features)
        tok = tokenize(x, *a, **k)
        return dataclasses.replace(tok, context={k: v for k, v in tok.context.items() if k != "pos_embed"})

    model.tokenizer.forward = no_pos
    plain, seen = model.encoder, {}

    class Consumer(nn.Module):
        consumes = "replace"
        num_prefix_tokens = plain.num_prefix_tokens

        def forward(self, tokens: Tensor, context: dict[str, Any]) -> Tensor:
            rep = context["replace"]
            seen.update(tokens=tokens, kind=rep["kind"], token=rep["token"])
            built = apply_replace(tokens, rep["mask"], rep["token"])  # mask token, then the random substitutes
            hid = rep["mask"].ids_masked
            b, n, d = tokens.shape
            sub = tokens.reshape(b * n, d)[rep["source"]]  # [B, M, D]
            rows = torch.where((rep["kind"] == REPLACE_RANDOM).unsqueeze(-1), sub,
                               torch.gather(built, 1, hid.unsqueeze(-1).expand(-1, -1, d)))
            return plain(built.scatter(1, hid.unsqueeze(-1).expand(-1, -1, d), rows), context)

    x = torch.randn(2, C, 16, 16)
    ref = model(x, generator=torch.Generator().manual_seed(3))
    model.encoder = Consumer()
    got = model(x, generator=torch.Generator().manual_seed(3))
    tok = no_pos(x).tokens
    assert torch.equal(seen["tokens"], tok) and seen["token"] is model.mask_token  # unmasked tokens
    _, kind = apply_replace_rule(tok, ref.mask, model.mask_token, model.replace_rule, _draws_after_mask(model, x))
    assert torch.equal(seen["kind"], kind) and torch.equal(ref.mask.mask, got.mask.mask)
    torch.testing.assert_close(got.loss, ref.loss)


def _draws_after_mask(model: MaskedAutoencoder, x: Tensor) -> torch.Generator:
    """The generator as the model leaves it after drawing the mask (the replace draws come next)."""
    g = torch.Generator().manual_seed(3)
    model.masking(x.shape[0], model.tokenizer(x).mask_grid, generator=g)
    return g


def test_replace_rule_shares_and_kept_tokens():
    torch.manual_seed(0)
    b, n = 64, 64
    x = torch.randn(b, n, D)
    pos = sincos_pos_embed(D, (n,))
    tok = torch.randn(D)
    mask = RandomMasking(0.5)(b, (n,), generator=torch.Generator().manual_seed(0))
    rule = ReplaceRule(mask=0.8, random=0.1, keep=0.1)
    out, kind = apply_replace_rule(x, mask, tok, rule, torch.Generator().manual_seed(1), pos)
    m = kind.numel()  # 2048 hidden tokens: the std of a 10% share is ~0.0066
    shares = [float((kind == k).sum()) / m for k in (REPLACE_MASK, REPLACE_RANDOM, REPLACE_KEEP)]
    assert abs(shares[0] - 0.8) < 0.03 and abs(shares[1] - 0.1) < 0.025 and abs(shares[2] - 0.1) < 0.025
    hid = mask.ids_masked
    rows = torch.gather(out, 1, hid.unsqueeze(-1).expand(-1, -1, D))
    orig = torch.gather(x, 1, hid.unsqueeze(-1).expand(-1, -1, D))
    hpos = pos[hid]
    keep, rand, msk = kind == REPLACE_KEEP, kind == REPLACE_RANDOM, kind == REPLACE_MASK
    assert torch.equal(rows[keep], orig[keep])  # kept tokens are the input tokens
    torch.testing.assert_close(rows[msk], (tok + hpos)[msk])
    content = (x - pos).reshape(-1, D)  # a random substitute is some token's content at its own position
    sub = rows[rand] - hpos[rand]
    assert all(bool(torch.isclose(r, content, atol=1e-6).all(-1).any()) for r in sub)
    assert not torch.isclose(sub, orig[rand] - hpos[rand]).all(-1).all()
    vis = ~mask.mask
    assert torch.equal(out[vis], x[vis])
    # the model uses the rule in training, only the mask token in eval
    model = make_model("replace", 0.5, replace={"mask": 0.8, "random": 0.1, "keep": 0.1})
    model.mask_token.data.copy_(tok)
    model.train()
    torch.testing.assert_close(model._replace(x, mask, torch.Generator().manual_seed(1), pos), out)
    model.eval()
    torch.testing.assert_close(model._replace(x, mask, torch.Generator().manual_seed(1), pos),
                               apply_replace(x, mask, tok + pos))


def test_replace_rule_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        ReplaceRule(mask=0.8, random=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ReplaceRule(mask=1.2, random=-0.2)
    with pytest.raises(ValueError, match="not both"):
        make_model("replace", replace_rate=0.1, replace=ReplaceRule(0.8, 0.1, 0.1))
    assert ReplaceRule.from_replace_rate(0.0) == ReplaceRule()


# -- 6. segment pooling -------------------------------------------------------------------------------------


class PackedTokenizer(Tokenizer):
    """One row of ``N`` tokens holding several samples; ``x = (features [N, D], segment_ids [N])``."""

    def __init__(self, num_segments: int) -> None:
        super().__init__()
        self.embed_dim = self.target_dim = D
        self.num_segments = num_segments

    def grid(self, x):
        return (x[0].shape[0],)

    def forward(self, x):
        return Tokens(x[0][None], self.grid(x), {"segment_ids": x[1], "num_segments": self.num_segments})

    def patchify(self, x):
        return x[0][None]


def test_segment_pooling_matches_manual_per_segment_reduction():
    torch.manual_seed(0)
    seg = torch.tensor([0, 0, 1, 2, 2, 2, 0, 1, 4])  # segment 3 is empty
    model = MaskedAutoencoder(PackedTokenizer(5), ViTEncoder(D, 1, 2, cls_token=False),
                              TransformerDecoder(D, D, DD, 1, 2, num_prefix_tokens=0), RandomMasking(0.5)).eval()
    x = (torch.randn(9, D), seg)
    feats = model.encode(x, pool="none")[0]  # [N, D]
    for pool, fn in [("mean", lambda r: r.mean(0)), ("max", lambda r: r.max(0).values), ("sum", lambda r: r.sum(0))]:
        got = model.encode(x, pool=pool)
        assert got.shape == (5, D)
        for s in range(5):
            rows = feats[seg == s]
            ref = fn(rows) if len(rows) else torch.zeros(D)
            torch.testing.assert_close(got[s], ref)
    # two rows of the same packing: each row gets its own segments
    two = segment_pool(torch.stack([feats, 2 * feats]), seg, 5, "sum")
    torch.testing.assert_close(two, torch.cat([model.encode(x, pool="sum"), 2 * model.encode(x, pool="sum")]))
    # gradients flow through max pooling to the arg-max rows only
    f = feats.detach().clone().requires_grad_(True)
    segment_pool(f[None], seg, 5, "max").sum().backward()
    assert int((f.grad != 0).sum()) == 4 * D  # one winner per non-empty segment and channel
    with pytest.raises(ValueError, match="pool"):
        make_model().encode(torch.randn(1, C, 8, 8), pool="max")


def test_graph_tokenizer_segments_pool_per_graph():
    pytest.importorskip("torch_geometric")
    from torch_geometric.data import Batch, Data

    from maezoo.graph.models import graphmae

    torch.manual_seed(0)
    graphs = [Data(x=torch.rand(n, 4), edge_index=torch.tensor([[i, (i + 1) % n] for i in range(n)]).t())
              for n in (3, 5, 4)]
    batch = Batch.from_data_list(graphs)
    model = graphmae(4, hidden=8, heads=2, num_layers=1, feat_drop=0.0, attn_drop=0.0).eval()
    ctx = model.tokenizer(batch).context
    assert torch.equal(ctx["segment_ids"], ctx["batch"]) and ctx["num_segments"] == ctx["num_graphs"] == 3
    nodes = model.encode(batch, pool="none")[0]
    means = model.encode(batch, pool="mean")
    assert means.shape == (3, 8)
    for g, (lo, hi) in enumerate([(0, 3), (3, 8), (8, 12)]):
        torch.testing.assert_close(means[g], nodes[lo:hi].mean(0))
        torch.testing.assert_close(model.encode(batch, pool="max")[g], nodes[lo:hi].max(0).values)


# -- 7. dict inputs ------------------------------------------------------------------------------------------


class TwoViewTokenizer(Tokenizer):
    """``{"a": [B, 8], "b": [B, 12]}`` -> tokens of 4 values each, ``a``'s then ``b``'s (grid ``(5,)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_dim, self.target_dim = D, 4
        self.proj_a, self.proj_b = nn.Linear(4, D), nn.Linear(4, D)

    def validate(self, x):
        if not isinstance(x, dict) or set(x) != {"a", "b"}:
            raise ValueError("expected a dict with views 'a' and 'b'")

    def grid(self, x):
        return (x["a"].shape[1] // 4 + x["b"].shape[1] // 4,)

    def forward(self, x):
        b = x["a"].shape[0]
        t = torch.cat([self.proj_a(x["a"].view(b, -1, 4)), self.proj_b(x["b"].view(b, -1, 4))], 1)
        return Tokens(t + sincos_pos_embed(D, self.grid(x)), self.grid(x))

    def patchify(self, x):
        b = x["a"].shape[0]
        return torch.cat([x["a"].view(b, -1, 4), x["b"].view(b, -1, 4)], 1)


def test_dict_inputs_ask_the_tokenizer_for_the_batch():
    torch.manual_seed(0)
    tok, enc = TwoViewTokenizer(), ViTEncoder(D, 1, 2)
    model = perturb(MaskedAutoencoder(tok, enc, TransformerDecoder(D, 4, DD, 1, 2), RandomMasking(0.4),
                                      target="raw")).eval()
    x = {"a": torch.randn(3, 8), "b": torch.randn(3, 12)}
    assert _batch_size(x, tok) == 3 and tok.token_batch_size(x) == 3
    s = model.sample_mask(x, generator=torch.Generator().manual_seed(2))
    out = model(x, generator=torch.Generator().manual_seed(2))
    assert out.mask.mask.shape == (3, 5) and torch.equal(s.mask, out.mask.mask)
    torch.testing.assert_close(out.target, torch.cat([x["a"].view(3, 2, 4), x["b"].view(3, 3, 4)], 1))
    torch.testing.assert_close(out.loss, mse_per_token(out.pred, out.target)[out.mask.mask].mean())
    torch.testing.assert_close(model.encode(x, pool="cls"), enc(tok(x).tokens)[:, 0])
    assert math.isfinite(out.loss.item())
