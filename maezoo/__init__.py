"""maezoo: one masked-autoencoder core for images, video, audio, time series and graphs.

Public API::

    import maezoo
    maezoo.list_tokenizers()        # ['image', ...] plus installed plugins
    maezoo.list_maskings()          # ['block', 'coarse', 'grid', 'node', 'random', ...]
    model = maezoo.create_model("mae_vit_base_patch16", mask_ratio=0.75)
    tok = maezoo.create("tokenizer", "image", patch_size=4, img_size=32)
"""

from __future__ import annotations

import importlib
from typing import Any

from maezoo import registry  # torch-free: built-ins register on the registry's first lookup
from maezoo.registry import RegistryError, build, get, names, register

__version__ = "0.1.0"

#: the packages whose import registers maezoo's built-in components; imported on first use (by the registry's
#: first lookup or an attribute access), so ``import maezoo`` and ``maezoo --help`` do not load torch
BUILTIN_MODULES = ("core", "image", "video", "audio", "timeseries", "graph", "text", "multimodal", "eval", "systems",
                   "data.shards")


def __getattr__(name: str) -> Any:
    if name in BUILTIN_MODULES or name in ("registry", "config", "results", "runtime", "engine", "data", "bench"):
        return importlib.import_module(f"maezoo.{name}")
    raise AttributeError(f"module 'maezoo' has no attribute {name!r}")


def create(kind: str, name: str, /, **kwargs: Any) -> Any:
    """Build a registered component (``kind`` in ``maezoo.registry.KINDS``) by name."""
    return build(kind, name, **kwargs)


def create_model(name: str, /, pretrained: str | None = None, **kwargs: Any) -> Any:
    """Build a registered model; ``pretrained`` loads a published checkpoint (official MAE ``.pth``, timm,
    Hugging Face folder) or a maezoo run folder into it, shapes checked (see :mod:`maezoo.hub`)."""
    if pretrained is not None:
        from maezoo.hub import create_pretrained

        return create_pretrained(name, pretrained, **kwargs)
    return build("model", name, **kwargs)


def list_tokenizers() -> list[str]:
    return names("tokenizer")


def list_maskings() -> list[str]:
    return names("masking")


def list_models() -> list[str]:
    return names("model")


def list_components() -> dict[str, list[str]]:
    """Every registered component, by kind."""
    return {k: names(k) for k in registry.KINDS}


__all__ = [
    "RegistryError", "build", "core", "create", "create_model", "get", "list_components", "list_maskings",
    "list_models", "list_tokenizers", "names", "register", "registry",
]
