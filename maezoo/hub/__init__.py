"""Published checkpoints in and out: one mapping module per family, all through one pivot layout.

    from maezoo.hub import load_pretrained, export
    model, spec = load_pretrained("mae_pretrain_vit_base.pth")      # official MAE, timm, Hugging Face ViTMAE
    export(model, "vit_b_timm", to="timm")                          # timm.create_model("local-dir:vit_b_timm")
    export(model, "vit_b_hf", to="hf")                              # ViTMAEForPreTraining.from_pretrained(...)

``maezoo.create_model(name, pretrained=path)`` loads into a named model (shapes checked);
``maezoo convert SRC DST --to maezoo|timm|hf`` and ``maezoo zoo`` are the command-line side
(:mod:`maezoo.hub.cli`). Families: :mod:`~maezoo.hub.mae_official`, :mod:`~maezoo.hub.timm_vit`,
:mod:`~maezoo.hub.hf_vitmae` (ViT pivot :mod:`~maezoo.hub.vit`); :mod:`~maezoo.hub.videomae_official`,
:mod:`~maezoo.hub.hf_videomae` (video pivot :mod:`~maezoo.hub.video`); :mod:`~maezoo.hub.timm_audiomae`;
:mod:`~maezoo.hub.hf_patchtst` (export too); :mod:`~maezoo.hub.hf_bert` (in and out); :mod:`~maezoo.hub.convmae_official`;
:mod:`~maezoo.hub.graphmae_official`.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the submodule defining it; loaded on first use, so the CLI's parser does not import torch
_EXPORTS = {
    **dict.fromkeys(("FAMILIES", "Imported", "create_pretrained", "detect", "import_checkpoint", "load_into",
                     "load_pretrained", "save_published"), "convert"),
    **dict.fromkeys(("TARGETS", "arch_of", "export"), "exporters"),
    **dict.fromkeys(("Checkpoint", "HubError", "is_maezoo_checkpoint", "is_published", "read_checkpoint"), "io"),
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"maezoo.hub.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'maezoo.hub' has no attribute {name!r}")


__all__ = [
    "FAMILIES", "TARGETS", "Checkpoint", "HubError", "Imported", "arch_of", "create_pretrained", "detect", "export",
    "import_checkpoint", "is_maezoo_checkpoint", "is_published", "load_into", "load_pretrained", "read_checkpoint",
    "save_published",
]
