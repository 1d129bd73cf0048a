"""The pivot every image-ViT mapping goes through: the official MAE layout (timm names).

``cls_token, pos_embed, patch_embed.proj.*, blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*,
norm.*`` for the encoder and ``mask_token, decoder_pos_embed, decoder_embed.*, decoder_blocks.<i>.*,
decoder_norm.*, decoder_pred.*`` for the decoder. maezoo's MAE names its parameters after it
(``tokenizer.proj``, ``encoder.{cls_token,blocks,norm}``, ``decoder.{embed,mask_token,blocks,norm,pred}``) and
computes the fixed sin-cos position embeddings per grid, so mapping is a prefix table plus a check that the
published position embeddings are those sin-cos values.

Shapes:
    pos_embed ``[1, 1 + H*W, D]`` (the class row is zero in MAE); decoder_pos_embed ``[1, 1 + H*W, D_dec]``
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.hub.io import HubError, refuse_unknown

#: official MAE heads per width (ViT-Ti/S/B/L/H); other widths use 64-wide heads
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
              "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")
#: fine-tuning heads a published encoder may carry; left out of the MAE
IGNORED = re.compile(r"^(head\.|fc_norm\.|head_drop|pre_logits)")
#: a published position embedding may differ from the recomputed sin-cos table by float rounding only
SINCOS_TOL = 1e-4
ENCODER_EXPECTED = "cls_token, pos_embed, patch_embed.proj.weight [D, C, p, p], blocks.<i>.attn.qkv.weight, norm.weight"
DECODER_EXPECTED = "decoder_embed.weight, mask_token, decoder_blocks.<i>.*, decoder_norm.*, decoder_pred.weight"


@dataclass
class Pivot:
    """A state dict in the official MAE layout plus what the source says about the architecture."""

    state: dict[str, Tensor]
    path: Path
    num_heads: int | None = None
    decoder_heads: int | None = None
    norm_pix_loss: bool | None = None
    mask_ratio: float | None = None
    layer_norm_eps: float | None = None
    notes: list[str] = field(default_factory=list)


def block_count(state: dict[str, Tensor], prefix: str) -> int:
    ids = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))}
    if ids and ids != set(range(max(ids) + 1)):
        raise HubError(f"{prefix}<i> numbering has gaps ({sorted(ids)}); the checkpoint is incomplete")
    return len(ids)


def has_decoder(state: dict[str, Tensor]) -> bool:
    return "decoder_embed.weight" in state


def infer_spec(pv: Pivot) -> dict[str, Any]:
    """``{"name": "mae_vit", "kwargs": {...}}`` describing the ViT MAE the pivot's shapes and hints give."""
    s = pv.state
    _require(pv, ["patch_embed.proj.weight", "cls_token", "norm.weight", "blocks.0.attn.qkv.weight"], ENCODER_EXPECTED)
    w = s["patch_embed.proj.weight"]
    if w.dim() != 4:
        raise HubError(f"{pv.path}: patch_embed.proj.weight is {tuple(w.shape)}; an image ViT has [D, C, p, p] "
                       "(a 5-D weight is a video tubelet embedding: use the VideoMAE mapping)")
    dim, in_chans, ph, pw = (int(v) for v in w.shape)
    depth = block_count(s, "blocks.")
    mlp_ratio = s["blocks.0.mlp.fc1.weight"].shape[0] / dim
    heads = pv.num_heads or STANDARD_HEADS.get(dim, max(1, dim // 64))
    grid = _grid_of(pv, "pos_embed", dim) or (224 // ph, 224 // pw)
    kwargs: dict[str, Any] = {
        "img_size": [grid[0] * ph, grid[1] * pw] if grid[0] * ph != grid[1] * pw else grid[0] * ph,
        "patch_size": ph, "in_chans": in_chans, "embed_dim": dim, "depth": depth, "num_heads": heads,
        "mlp_ratio": mlp_ratio,
    }
    if ph != pw:
        raise HubError(f"{pv.path}: rectangular patches {ph}x{pw} are not supported by mae_vit; expected square patches")
    if has_decoder(s):
        _require(pv, ["mask_token", "decoder_norm.weight", "decoder_pred.weight", "decoder_blocks.0.attn.qkv.weight"],
                 DECODER_EXPECTED)
        ddim = int(s["decoder_embed.weight"].shape[0])
        if s["decoder_blocks.0.mlp.fc1.weight"].shape[0] != 4 * ddim:
            raise HubError(f"{pv.path}: the decoder's MLP ratio is not 4; maezoo's MAE decoder uses ratio 4")
        out = int(s["decoder_pred.weight"].shape[0])
        if out != ph * pw * in_chans:
            raise HubError(f"{pv.path}: decoder_pred predicts {out} values per patch; expected p*p*C = {ph * pw * in_chans}")
        kwargs.update(decoder_dim=ddim, decoder_depth=block_count(s, "decoder_blocks."),
                      decoder_heads=pv.decoder_heads or 16)
    if pv.norm_pix_loss is not None:
        kwargs["norm_pix_loss"] = bool(pv.norm_pix_loss)
    if pv.mask_ratio is not None:
        kwargs["mask_ratio"] = float(pv.mask_ratio)
    return {"name": "mae_vit", "kwargs": kwargs}


def preset_name(kwargs: dict[str, Any]) -> str:
    """The registered preset a spec matches (``mae_vit_base_patch16`` ...), else ``mae_vit``."""
    presets = {(16, 192, 12, 3): "tiny_patch16", (16, 384, 12, 6): "small_patch16", (16, 768, 12, 12): "base_patch16",
               (16, 1024, 24, 16): "large_patch16", (14, 1280, 32, 16): "huge_patch14"}
    key = (kwargs.get("patch_size"), kwargs.get("embed_dim"), kwargs.get("depth"), kwargs.get("num_heads"))
    return f"mae_vit_{presets[key]}" if key in presets else "mae_vit"


def _grid_of(pv: Pivot, key: str, dim: int) -> tuple[int, int] | None:
    pe = pv.state.get(key)
    if pe is None:
        return None
    n = pe.shape[-2] - 1
    side = math.isqrt(n)
    if pe.dim() != 3 or pe.shape[-1] != dim or side * side != n:
        raise HubError(f"{pv.path}: {key} is {tuple(pe.shape)}; expected [1, 1 + H*W, {dim}] on a square grid")
    return (side, side)


def _require(pv: Pivot, keys: list[str], expected: str) -> None:
    missing = [k for k in keys if k not in pv.state]
    if missing:
        raise HubError(f"{pv.path}: missing {', '.join(missing)}; an MAE ViT checkpoint holds {expected}")


def check_sincos(pv: Pivot, key: str, dim: int) -> None:
    """Refuse learned position embeddings: maezoo's MAE recomputes MAE's fixed 2-D sin-cos table per grid."""
    pe = pv.state.get(key)
    if pe is None:
        return
    grid = _grid_of(pv, key, dim)
    assert grid is not None
    diff = float((pe[0, 1:].float() - sincos_pos_embed(dim, grid)).abs().max())
    if diff > SINCOS_TOL:
        raise HubError(
            f"{pv.path}: {key} is not MAE's fixed 2-D sin-cos table (largest difference {diff:.3g}); this looks like "
            "a ViT with learned position embeddings (a supervised or fine-tuned checkpoint), which maezoo's MAE "
            "does not represent. Use an MAE pre-training checkpoint (e.g. mae_pretrain_vit_base.pth or timm's "
            "vit_base_patch16_224.mae)")


def pivot_to_maezoo(pv: Pivot) -> tuple[dict[str, Tensor], list[str]]:
    """maezoo state dict (decoder included when the pivot has one) and the source keys left out."""
    s = pv.state
    dim = int(s["patch_embed.proj.weight"].shape[0])
    check_sincos(pv, "pos_embed", dim)
    out: dict[str, Tensor] = {"tokenizer.proj.weight": s["patch_embed.proj.weight"],
                              "tokenizer.proj.bias": s["patch_embed.proj.bias"],
                              "encoder.norm.weight": s["norm.weight"], "encoder.norm.bias": s["norm.bias"]}
    cls = s["cls_token"]
    if "pos_embed" in s:  # the class row of the position table folds into the class token (zero in MAE)
        cls = cls + s["pos_embed"][:, :1].to(cls.dtype)
    out["encoder.cls_token"] = cls
    used = {"patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias", "cls_token", "pos_embed"}
    used |= _blocks(s, "blocks.", "encoder.blocks.", block_count(s, "blocks."), out)
    if has_decoder(s):
        check_sincos(pv, "decoder_pos_embed", int(s["decoder_embed.weight"].shape[0]))
        for src, dst in (("decoder_embed", "decoder.embed"), ("decoder_norm", "decoder.norm"), ("decoder_pred", "decoder.pred")):
            for t in ("weight", "bias"):
                out[f"{dst}.{t}"] = s[f"{src}.{t}"]
                used.add(f"{src}.{t}")
        out["decoder.mask_token"] = s["mask_token"]
        used |= {"mask_token", "decoder_pos_embed"}
        used |= _blocks(s, "decoder_blocks.", "decoder.blocks.", block_count(s, "decoder_blocks."), out)
    left = sorted(k for k in s if k not in used)
    unknown = [k for k in left if not IGNORED.match(k)]
    refuse_unknown(pv.path, "the MAE ViT layout", unknown, f"{ENCODER_EXPECTED} (+ {DECODER_EXPECTED})",
                   "Layer scale, register tokens or relative positions are other architectures")
    return out, left


def _blocks(s: dict[str, Tensor], src: str, dst: str, depth: int, out: dict[str, Tensor]) -> set[str]:
    used = set()
    for i in range(depth):
        for k in BLOCK_KEYS:
            key = f"{src}{i}.{k}"
            if key not in s:
                raise HubError(f"missing {key}; every transformer block holds {', '.join(BLOCK_KEYS)}")
            out[f"{dst}{i}.{k}"] = s[key]
            used.add(key)
    return used


def maezoo_to_pivot(state: dict[str, Tensor], grid: tuple[int, int], decoder: bool = True) -> dict[str, Tensor]:
    """The official MAE layout of a maezoo ViT MAE state dict, sin-cos tables written for ``grid``."""
    dim = int(state["tokenizer.proj.weight"].shape[0])
    cls = state["encoder.cls_token"]
    out = {"cls_token": cls,
           "pos_embed": _with_cls_row(sincos_pos_embed(dim, grid)).to(cls.dtype),
           "patch_embed.proj.weight": state["tokenizer.proj.weight"], "patch_embed.proj.bias": state["tokenizer.proj.bias"],
           "norm.weight": state["encoder.norm.weight"], "norm.bias": state["encoder.norm.bias"]}
    for k, v in state.items():
        if k.startswith("encoder.blocks."):
            out[k[len("encoder."):]] = v
        elif decoder and k.startswith("decoder.blocks."):
            out["decoder_" + k[len("decoder."):]] = v
    if decoder and "decoder.embed.weight" in state:
        ddim = int(state["decoder.embed.weight"].shape[0])
        out["mask_token"] = state["decoder.mask_token"]
        out["decoder_pos_embed"] = _with_cls_row(sincos_pos_embed(ddim, grid)).to(cls.dtype)
        for src, dst in (("decoder.embed", "decoder_embed"), ("decoder.norm", "decoder_norm"), ("decoder.pred", "decoder_pred")):
            for t in ("weight", "bias"):
                out[f"{dst}.{t}"] = state[f"{src}.{t}"]
    return {k: v.contiguous() for k, v in out.items()}


def _with_cls_row(pe: Tensor) -> Tensor:
    return torch.cat([torch.zeros(1, pe.shape[1]), pe], dim=0).unsqueeze(0)


__all__ = ["Pivot", "check_sincos", "has_decoder", "infer_spec", "maezoo_to_pivot", "pivot_to_maezoo", "preset_name"]
