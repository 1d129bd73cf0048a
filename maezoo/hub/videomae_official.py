"""Official VideoMAE (MCG-NJU/VideoMAE) and VideoMAE V2 (OpenGVLab/VideoMAEv2) pre-training checkpoints.

The files hold ``{"model": state_dict}`` (plus the training ``args`` where saved) of ``PretrainVisionTransformer``,
the pivot of :mod:`maezoo.hub.video` as it is; an encoder saved alone (``patch_embed``, ``blocks``, ``norm``
without the ``encoder.`` prefix) loads too, its decoder left at maezoo's initialisation. From the ``args``:
``normlize_target`` (sic, the official flag), ``mask_ratio``, ``num_frames``, ``input_size``, and V2's
``decoder_mask_type="run_cell"`` / ``decoder_mask_ratio`` (maezoo's ``running_cell`` decoder masking). Without
``args`` the releases' settings hold: 16 frames of 224 x 224, normalised targets, tube masking 0.9.
"""

from __future__ import annotations

from maezoo.hub import video
from maezoo.hub.io import Checkpoint
from maezoo.hub.video import VideoPivot

NAME = "videomae_official"
EXPECTED = f"{{'model': {{{video.EXPECTED}}}}} (MCG-NJU/VideoMAE, OpenGVLab/VideoMAEv2 .pth)"
PIVOT = video


def _is_5d(ckpt: Checkpoint, key: str) -> bool:
    return getattr(ckpt.state.get(key), "ndim", 0) == 5


def matches(ckpt: Checkpoint) -> bool:
    s = ckpt.state
    return (_is_5d(ckpt, "encoder.patch_embed.proj.weight") and "encoder.blocks.0.attn.qkv.weight" in s) or \
        (_is_5d(ckpt, "patch_embed.proj.weight") and "blocks.0.attn.qkv.weight" in s)


def to_pivot(ckpt: Checkpoint) -> VideoPivot:
    s = dict(ckpt.state)
    if "patch_embed.proj.weight" in s:  # an encoder saved on its own
        s = {f"encoder.{k}": v for k, v in s.items()}
    args = ckpt.extra.get("args", {})
    kwargs = {}
    if args.get("decoder_mask_type") == "run_cell" and float(args.get("decoder_mask_ratio", 0.0)) > 0:
        kwargs = {"decoder_masking": "running_cell", "decoder_mask_ratio": float(args["decoder_mask_ratio"])}
    notes = ["decoder included" if video.has_decoder(s) else "encoder only: the decoder keeps its initialisation"]
    if "num_frames" not in args or "input_size" not in args:
        notes.append("no clip size in the file: position tables for 16 frames of 224 x 224 (the releases); pass "
                     "num_frames= / img_size= for another training size")
    norm = args.get("normlize_target", args.get("normalize_target"))
    return VideoPivot(state=s, path=ckpt.path, norm_pix_loss=None if norm is None else bool(norm),
                      mask_ratio=args.get("mask_ratio"), num_frames=args.get("num_frames"),
                      img_size=args.get("input_size"), kwargs=kwargs, notes=notes)
