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
from torch import Tensor

from maezoo.core.decoder import TransformerDecoder
from maezoo.core.mae import MaskedAutoencoder
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
        super().__init__(in_dim, out_dim, dim, depth, num_heads, mlp_ratio, num_prefix_tokens=num_prefix_tokens,
                         embed_bias=False)
        self.pos_grid = tuple(int(g) for g in pos_grid) if pos_grid is not None else None

    def position_embedding(self, grid: tuple[int, ...], like: Tensor) -> Tensor:
        """``[prod(grid), dim]``: the official table for ``pos_grid``, resized to ``grid`` when they differ."""
        ref = self.pos_grid or tuple(grid)
        table = sinusoid_table(int(torch.tensor(ref).prod()), self.embed.out_features)
        return interpolate_pos_embed(table, ref, tuple(grid)).to(like.device, like.dtype)


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
