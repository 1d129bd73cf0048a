"""VideoMAE with the official position tables, so released VideoMAE / VideoMAE V2 weights run as published.

maezoo's ``videomae`` decodes with MAE's 3-D sin-cos positions; the official code (MCG-NJU/VideoMAE,
OpenGVLab/VideoMAEv2, and Hugging Face's ``VideoMAEForPreTraining``) uses the 1-D BEiT table over the flattened
``(t h w)`` tokens in the encoder *and* the decoder, and its ``encoder_to_decoder`` projection has no bias.
``videomae_official`` is ``videomae(pos_embed="1d")`` with a decoder that matches both: the same parameter names
as MAE's decoder (``embed``, ``mask_token``, ``blocks``, ``norm``, ``pred``), ``embed`` without a bias, and the
1-D table built for ``pos_grid`` (the grid the weights were trained on) and resized trilinearly to another grid,
as the tokenizer does. The attention keeps timm's fused ``qkv`` bias; the official blocks have no key bias, which
a softmax ignores (its gradient is zero), so a key bias loaded as zeros stays zero.

Shapes:
    as :func:`maezoo.video.models.videomae`: x ``[B, C, T, H, W]`` -> pred/target ``[B, N, t*p*p*C]``
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from maezoo.core.attention import select_attention
from maezoo.core.decoder import TransformerDecoder
from maezoo.core.mae import MaskedAutoencoder
from maezoo.core.masking import Mask, gather_tokens, unshuffle
from maezoo.core.pos_embed import interpolate_pos_embed
from maezoo.registry import check_kwargs, register
from maezoo.video.models import videomae
from maezoo.video.tokenizer import sinusoid_table


@register("decoder", "videomae_official")
class OfficialVideoDecoder(TransformerDecoder):
    """MAE's decoder with the official VideoMAE 1-D position table and a bias-free input projection.

    Args:
        in_dim, out_dim, dim, depth, num_heads, mlp_ratio, num_prefix_tokens: as :class:`TransformerDecoder`.
        pos_grid: the ``(T, H, W)`` token grid of the table (``None``: the table of each batch's grid).
    """

    pos_embed_kind = "1d"

    def __init__(self, in_dim: int, out_dim: int, dim: int = 384, depth: int = 4, num_heads: int = 6,
                 mlp_ratio: float = 4.0, num_prefix_tokens: int = 0, pos_grid: Sequence[int] | None = None) -> None:
        super().__init__(in_dim, out_dim, dim, depth, num_heads, mlp_ratio, num_prefix_tokens=num_prefix_tokens)
        self.embed = nn.Linear(in_dim, dim, bias=False)
        nn.init.xavier_uniform_(self.embed.weight)
        self.pos_grid = tuple(int(g) for g in pos_grid) if pos_grid is not None else None

    def position_embedding(self, grid: tuple[int, ...], like: Tensor) -> Tensor:
        """``[prod(grid), dim]``: the official table for ``pos_grid``, resized to ``grid`` when they differ."""
        ref = self.pos_grid or tuple(grid)
        table = sinusoid_table(int(torch.tensor(ref).prod()), self.embed.out_features)
        return interpolate_pos_embed(table, ref, tuple(grid)).to(like.device, like.dtype)

    def forward(self, latent: Tensor, mask: Mask, grid: tuple[int, ...], context: dict[str, Any] | None = None) -> Tensor:
        x = self.embed(latent)
        p = self.num_prefix_tokens
        prefix, x = x[:, :p], x[:, p:]
        n = mask.mask.shape[1]
        if x.shape[1] not in (mask.num_visible, n):
            raise ValueError(f"decoder got {x.shape[1]} latent tokens after {p} prefix token(s); expected "
                             f"{mask.num_visible} (drop mode) or {n} (replace mode) for grid {tuple(grid)}")
        pe = self.position_embedding(grid, x)
        if mask.ids_target is not None:  # VideoMAE V2: visible tokens + mask tokens at the selected positions
            vis = gather_tokens(x, mask.ids_keep) if x.shape[1] == n else x
            tgt = self.mask_token.to(x.dtype).expand(x.shape[0], mask.ids_target.shape[1], -1)
            seq = torch.cat([prefix, vis + pe[mask.ids_keep], tgt + pe[mask.ids_target]], dim=1)
            k = mask.ids_target.shape[1]
        else:
            if x.shape[1] == mask.num_visible and mask.num_visible != n:
                x = unshuffle(x, mask, self.mask_token.view(-1))
            else:
                x = torch.where(mask.mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
            seq, k = torch.cat([prefix, x + pe], dim=1), n
        select_attention(self.blocks, seq)
        for blk in self.blocks:
            seq = blk(seq)
        return self.pred(self.norm(seq[:, seq.shape[1] - k:]))


@register("model", "videomae_official")
def videomae_official(pos_grid: Sequence[int] | None = None, **kwargs: Any) -> MaskedAutoencoder:
    """:func:`~maezoo.video.models.videomae` with the official 1-D position tables in encoder and decoder.

    ``pos_grid``: the ``(T/t, H/p, W/p)`` grid the weights were trained on (default: the grid of ``num_frames`` x
    ``img_size``); other kwargs as ``videomae`` (``pos_embed`` is fixed to ``"1d"``).
    """
    check_kwargs(videomae, kwargs, "videomae_official")
    if "pos_embed" in kwargs or "pos_grid" in kwargs:
        raise TypeError("videomae_official fixes pos_embed='1d'; give pos_grid as its own argument only")
    model = videomae(pos_embed="1d", **kwargs)
    tok, dec = model.tokenizer, model.decoder
    if pos_grid is None:
        t, s = int(kwargs.get("num_frames", 16)), int(kwargs.get("img_size", 224))
        pos_grid = (t // tok.tubelet_size, s // tok.patch_size, s // tok.patch_size)
    tok.pos_grid = tuple(int(g) for g in pos_grid)
    blk = dec.blocks[0] if len(dec.blocks) else None
    model.decoder = OfficialVideoDecoder(
        dec.embed.in_features, dec.pred.out_features, dec.embed.out_features, len(dec.blocks),
        blk.attn.num_heads if blk is not None else int(kwargs.get("decoder_heads", 6)),
        float(kwargs.get("mlp_ratio", 4.0)), dec.num_prefix_tokens, pos_grid=tok.pos_grid)
    return model


videomae_official.smoke_kwargs = {  # type: ignore[attr-defined]
    "img_size": 16, "num_frames": 4, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2,
    "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2,
}
