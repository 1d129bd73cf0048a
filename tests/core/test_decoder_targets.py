"""Decoder-side target subsets (VideoMAE V2). Every test checks values against a hand computation on a tiny model."""

from __future__ import annotations

import pytest
import torch
from core_helpers import DD, C, D, P, make_model, mse_per_token, perturb
from torch import nn

from maezoo.core import (
    MaskedAutoencoder,
    RandomMasking,
    RunningCellMasking,
    TransformerDecoder,
    ViTEncoder,
    select_decoder_targets,
    sincos_pos_embed,
)
from maezoo.image import PatchTokenizer


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
