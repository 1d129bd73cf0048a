"""maezoo: one masked-autoencoder core for images, video, audio, time series and graphs.

Public API::

    import maezoo
    maezoo.list_tokenizers()        # ['image', ...] plus installed plugins
    maezoo.list_maskings()          # ['block', 'coarse', 'grid', 'node', 'random', ...]
    model = maezoo.create_model("mae_vit_base_patch16", mask_ratio=0.75)
    tok = maezoo.create("tokenizer", "image", patch_size=4, img_size=32)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from maezoo import (
    audio,  # noqa: E402,F401  (registers the audio modality: Audio-MAE)
    core,  # noqa: E402  (registers core built-ins)
    graph,  # noqa: E402,F401  (registers the graph modality; imports torch_geometric lazily)
    image,  # noqa: E402,F401  (registers the image modality, MAE and ConvMAE)
    registry,
    systems,  # noqa: E402,F401  (registers the `mae` system)
    timeseries,  # noqa: E402,F401  (registers the time-series modality: TSFormer, PatchTST)
    video,  # noqa: E402,F401  (registers the video modality: VideoMAE)
)
from maezoo import eval as _eval  # noqa: E402,F401  (registers metrics, heads and protocols)
from maezoo.data import shards as _shards  # noqa: E402,F401  (registers the `shards` dataset: WebDataset streams)
from maezoo.registry import RegistryError, build, get, names, register


def create(kind: str, name: str, /, **kwargs: Any) -> Any:
    """Build a registered component (``kind`` in ``maezoo.registry.KINDS``) by name."""
    return build(kind, name, **kwargs)


def create_model(name: str, /, **kwargs: Any) -> Any:
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
