"""facebookresearch/mae releases: ``mae_pretrain_vit_{base,large,huge}.pth`` (encoder only),
``mae_pretrain_vit_*_full.pth`` and ``mae_visualize_vit_*.pth`` (encoder + decoder), ViT-B/16, L/16, H/14.

The files hold ``{"model": state_dict}`` (the ``_full`` ones add the optimiser and the training ``args``) in
the official layout, which is the pivot of :mod:`maezoo.hub.vit` as it is. The ``mae_visualize`` models were
trained on raw pixels (``norm_pix_loss=False``); the others on normalised pixels, as the paper's default.
"""

from __future__ import annotations

from maezoo.hub.io import Checkpoint
from maezoo.hub.vit import DECODER_EXPECTED, ENCODER_EXPECTED, Pivot, has_decoder

NAME = "mae_official"
EXPECTED = f"{{'model': {{{ENCODER_EXPECTED}[, {DECODER_EXPECTED}]}}}} (facebookresearch/mae .pth)"


def matches(ckpt: Checkpoint) -> bool:
    s = ckpt.state
    vit = "blocks.0.attn.qkv.weight" in s and getattr(s.get("patch_embed.proj.weight"), "ndim", 0) == 4
    return vit and (ckpt.wrapper == "model" or has_decoder(s))


def to_pivot(ckpt: Checkpoint) -> Pivot:
    args = ckpt.extra.get("args", {})
    norm_pix = args.get("norm_pix_loss", "visualize" not in ckpt.name)
    notes = ["decoder included" if has_decoder(ckpt.state) else "encoder only: the decoder keeps its initialisation"]
    return Pivot(state=dict(ckpt.state), path=ckpt.path, norm_pix_loss=bool(norm_pix),
                 mask_ratio=args.get("mask_ratio"), notes=notes)
