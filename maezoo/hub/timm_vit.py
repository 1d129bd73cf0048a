"""timm ViT state dicts (the ``vit_{base,large,huge}_patch{16,14}_224.mae`` tags) in and out.

timm names a ViT exactly as the official MAE encoder (the pivot of :mod:`maezoo.hub.vit`); a timm folder
(``config.json`` with ``architecture`` and ``model_args`` beside ``model.safetensors``) gives the head count.
Export writes such a folder, loadable with ``timm.create_model("local-dir:FOLDER", pretrained=True)`` or
``timm.create_model("vit_base_patch16_224.mae", pretrained=True, pretrained_cfg_overlay=dict(file=FOLDER +
"/model.safetensors"))``; the position table is written for the size asked (``img_size``), from the same
sin-cos function maezoo evaluates per grid, so no resampling error enters. Loading an export at another size
in timm resamples it with timm's own ``resample_abs_pos_embed``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from maezoo.hub.io import Checkpoint
from maezoo.hub.vit import ENCODER_EXPECTED, Pivot, has_decoder

NAME = "timm_vit"
EXPECTED = f"{{{ENCODER_EXPECTED}}} (timm vit_*_patch16_224.mae state dict or local-dir folder)"
ENCODER_ARGS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def matches(ckpt: Checkpoint) -> bool:
    s = ckpt.state
    vit = "blocks.0.attn.qkv.weight" in s and getattr(s.get("patch_embed.proj.weight"), "ndim", 0) == 4
    return vit and not has_decoder(s)


def to_pivot(ckpt: Checkpoint) -> Pivot:
    args = (ckpt.config or {}).get("model_args", {})
    return Pivot(state=dict(ckpt.state), path=ckpt.path, num_heads=args.get("num_heads"),
                 notes=["encoder only: the decoder keeps its initialisation"])


def timm_config(arch: dict[str, Any]) -> dict[str, Any]:
    """timm's ``config.json`` for a ViT encoder (``arch``: img_size, patch_size, in_chans, embed_dim, depth,
    num_heads, mlp_ratio)."""
    size = arch["img_size"]
    enc = {k: arch[k] for k in ENCODER_ARGS}
    model_args = {**enc, "num_classes": 0, "global_pool": "token", "class_token": True, "qkv_bias": True}
    return {
        "architecture": "vit_base_patch16_224",
        "num_classes": 0,
        "num_features": arch["embed_dim"],
        "global_pool": "token",
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "maezoo", "custom_load": False, "input_size": [arch["in_chans"], size, size],
            "fixed_input_size": True, "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "num_classes": 0, "pool_size": None,
            "first_conv": "patch_embed.proj", "classifier": "head", "license": "see the source checkpoint",
        },
    }


def write_folder(pivot: dict[str, Tensor], arch: dict[str, Any], dst: Path) -> Path:
    from safetensors.torch import save_file

    dst.mkdir(parents=True, exist_ok=True)
    enc = {k: v for k, v in pivot.items() if not (k.startswith("decoder_") or k == "mask_token")}
    save_file(enc, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(timm_config(arch), indent=2))
    return dst
