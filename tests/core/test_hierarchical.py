"""Coarse mask grids for hierarchical encoders (ConvMAE) and layer ids. Every test checks values against a hand computation on a tiny model."""

from __future__ import annotations

import pytest
import torch
from core_helpers import DD, C, D, make_model, mse_per_token, perturb
from torch import nn

from maezoo.core import (
    MaskedAutoencoder,
    RandomMasking,
    Tokenizer,
    Tokens,
    TransformerDecoder,
    ViTEncoder,
    layer_id,
    layer_ids,
    sincos_pos_embed,
)
from maezoo.core.masking import Mask


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
