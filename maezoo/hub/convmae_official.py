"""Alpha-VL/ConvMAE's official pre-training layout (``models_convmae.MaskedAutoencoderConvViT``) into maezoo's
``convmae``.

The official module and maezoo's correspond one to one, so the mapping is a name table:

    patch_embed1.{proj,norm}      -> tokenizer.{proj,norm}           (conv p1, LayerNorm over channels, GELU)
    blocks1.<i>.* / blocks2.<i>.* -> encoder.stages.{0,1}.blocks.<i>.* (CBlock: norm1, conv1, attn 5x5, conv2, norm2,
                                                                       mlp.fc1/fc2 1x1)
    patch_embed{2,3}.{proj,norm}  -> encoder.stages.{1,2}.downsample.{proj,norm}
    patch_embed4                  -> encoder.stages.2.proj           (linear on the stage-3 tokens)
    blocks3.<i>.*                 -> encoder.stages.2.blocks.<i>.*    (ViT blocks)
    stage{1,2}_output_decode      -> encoder.fuse.{0,1}              (multi-scale fusion of the pre-training forward)
    norm                          -> encoder.norm
    decoder_{embed,blocks,norm,pred}, mask_token -> decoder.{embed,blocks,norm,pred,mask_token}

``pos_embed`` and ``decoder_pos_embed`` (no class row) must be MAE's fixed 2-D sin-cos table of the stage-3 grid
(checked to 1e-4; maezoo computes it per grid), which gives the training size. A fine-tuned ``ConvViT`` (learned
``pos_embed``, ``head``, ``fc_norm``) is refused by that check; ConvMAE-v2 / MR-MCMAE files are other architectures.
Encoder-only files leave the decoder at maezoo's initialisation.

Shapes:
    patch_embed1.proj.weight ``[D1, C, p1, p1]``; pos_embed ``[1, (H/s)(W/s), D3]``, ``s = p1 p2 p3``
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.hub.io import Checkpoint, HubError, refuse_unknown
from maezoo.hub.vit import IGNORED, SINCOS_TOL, Pivot, block_count

NAME = "convmae_official"
EXPECTED = ("patch_embed{1,2,3}.{proj,norm}.*, patch_embed4.*, blocks{1,2,3}.<i>.*, stage{1,2}_output_decode.*, "
            "norm.*, pos_embed[, decoder_embed.*, mask_token, decoder_blocks.<i>.*, decoder_norm.*, decoder_pred.*] "
            "(Alpha-VL/ConvMAE models_convmae)")
#: official prefix -> maezoo prefix
RENAMES = (("patch_embed1.", "tokenizer."), ("blocks1.", "encoder.stages.0.blocks."),
           ("blocks2.", "encoder.stages.1.blocks."), ("blocks3.", "encoder.stages.2.blocks."),
           ("patch_embed2.", "encoder.stages.1.downsample."), ("patch_embed3.", "encoder.stages.2.downsample."),
           ("patch_embed4.", "encoder.stages.2.proj."), ("stage1_output_decode.", "encoder.fuse.0."),
           ("stage2_output_decode.", "encoder.fuse.1."), ("norm.", "encoder.norm."),
           ("decoder_embed.", "decoder.embed."), ("decoder_blocks.", "decoder.blocks."),
           ("decoder_norm.", "decoder.norm."), ("decoder_pred.", "decoder.pred."), ("mask_token", "decoder.mask_token"))
#: ConvMAE-Base's heads (12 for 768) and decoder heads (16 for 512); other widths use 64-wide heads
HEADS = {384: 6, 768: 12}
DECODER_HEADS = {512: 16}


@dataclass
class ConvMAEPivot(Pivot):
    """The official state dict as it is (the family is its own pivot)."""


def matches(ckpt: Checkpoint) -> bool:
    return "patch_embed1.proj.weight" in ckpt.state and any(k.startswith("blocks3.") for k in ckpt.state)


def to_pivot(ckpt: Checkpoint) -> ConvMAEPivot:
    args = ckpt.extra.get("args", {})
    notes = [] if "decoder_embed.weight" in ckpt.state else ["encoder only: the decoder keeps maezoo's initialisation"]
    return ConvMAEPivot(state=dict(ckpt.state), path=ckpt.path, norm_pix_loss=args.get("norm_pix_loss"),
                        mask_ratio=args.get("mask_ratio"), notes=notes)


def _shape(pv: ConvMAEPivot, key: str) -> tuple[int, ...]:
    if key not in pv.state:
        raise HubError(f"{pv.path}: missing {key}; an official ConvMAE checkpoint holds {EXPECTED}")
    return tuple(int(v) for v in pv.state[key].shape)


def _grid(pv: ConvMAEPivot) -> int:
    rows = _shape(pv, "pos_embed")[-2]
    g = math.isqrt(rows)
    if g * g != rows:
        raise HubError(f"{pv.path}: pos_embed has {rows} rows, not a square stage-3 grid (ConvMAE has no class row)")
    return g


def infer_spec(pv: ConvMAEPivot) -> dict[str, Any]:
    s = pv.state
    dims, patches = [], []
    for i in (1, 2, 3):
        out, _, p, q = _shape(pv, f"patch_embed{i}.proj.weight")
        if p != q:
            raise HubError(f"{pv.path}: patch_embed{i} has {p}x{q} patches; maezoo's ConvMAE uses square ones")
        dims.append(out)
        patches.append(p)
    in_chans = _shape(pv, "patch_embed1.proj.weight")[1]
    depths = [block_count(s, f"blocks{i}.") for i in (1, 2, 3)]
    ratios = {round(_shape(pv, f"blocks{i}.0.mlp.fc1.weight")[0] / d, 6) for i, d in zip((1, 2, 3), dims, strict=True)}
    if len(ratios) != 1:
        raise HubError(f"{pv.path}: the stages have MLP ratios {sorted(ratios)}; maezoo's ConvMAE uses one mlp_ratio")
    fuse = (_shape(pv, "stage1_output_decode.weight")[-1], _shape(pv, "stage2_output_decode.weight")[-1])
    if fuse != (patches[1] * patches[2], patches[2]):
        raise HubError(f"{pv.path}: fusion convolutions of stride {fuse}; ConvMAE's are p2*p3 and p3 "
                       f"({patches[1] * patches[2]}, {patches[2]})")
    grid = _grid(pv)
    kwargs: dict[str, Any] = {
        "img_size": grid * patches[0] * patches[1] * patches[2], "in_chans": in_chans, "patch_sizes": patches,
        "embed_dims": dims, "depths": depths, "num_heads": pv.num_heads or HEADS.get(dims[2], max(1, dims[2] // 64)),
        "mlp_ratio": ratios.pop(), "kernel_size": _shape(pv, "blocks1.0.attn.weight")[-1] if depths[0] else 5,
        "norm_pix_loss": True if pv.norm_pix_loss is None else bool(pv.norm_pix_loss),
    }
    if "decoder_embed.weight" in s:
        dd = _shape(pv, "decoder_embed.weight")[0]
        kwargs.update(decoder_dim=dd, decoder_depth=block_count(s, "decoder_blocks."),
                      decoder_heads=pv.decoder_heads or DECODER_HEADS.get(dd, max(1, dd // 64)))
    if pv.mask_ratio is not None:
        kwargs["mask_ratio"] = float(pv.mask_ratio)
    return {"name": "convmae", "kwargs": kwargs}


def preset_name(kwargs: dict[str, Any]) -> str:
    return "convmae"


def _check_sincos(pv: ConvMAEPivot, key: str, grid: int) -> None:
    table = pv.state[key]
    diff = float((table.reshape(-1, table.shape[-1]).float() - sincos_pos_embed(table.shape[-1], (grid, grid))).abs().max())
    if diff > SINCOS_TOL:
        raise HubError(f"{pv.path}: {key} is not MAE's fixed 2-D sin-cos table of the {grid}x{grid} grid (largest "
                       f"difference {diff:.3g}); a fine-tuned ConvViT (learned positions) is not a ConvMAE pre-training "
                       "checkpoint. Fix: pass the pre-training checkpoint")


def pivot_to_maezoo(pv: ConvMAEPivot) -> tuple[dict[str, Tensor], list[str]]:
    grid = _grid(pv)
    out, ignored, unknown = {}, [], []
    for key, value in pv.state.items():
        if key in ("pos_embed", "decoder_pos_embed"):
            _check_sincos(pv, key, grid)
            continue
        if IGNORED.match(key):
            ignored.append(key)
            continue
        for src, dst in RENAMES:
            if key.startswith(src):
                out[dst + key[len(src):]] = value
                break
        else:
            unknown.append(key)
    refuse_unknown(pv.path, "ConvMAE's layout", unknown, EXPECTED)
    return out, ignored


__all__ = ["infer_spec", "matches", "pivot_to_maezoo", "to_pivot"]
