"""PatchTST as Hugging Face's ``PatchTSTForPretraining`` builds it with ``norm_type="layernorm"``, ``pre_norm=True``.

Those blocks are maezoo's pre-norm LayerNorm blocks, but the Hugging Face encoder has no norm after its last block;
``patchtst_hf`` is :func:`~maezoo.timeseries.models.patchtst` without that final norm, so weights published in that
configuration run as published (:mod:`maezoo.hub.hf_patchtst`).

Shapes:
    as ``patchtst``: x ``[B, C, L]`` -> pred/target ``[B * C, N, patch_len]``
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from maezoo.core.mae import MaskedAutoencoder
from maezoo.registry import register
from maezoo.timeseries.models import series_mae


@register("model", "patchtst_hf")
def patchtst_hf(**kwargs: Any) -> MaskedAutoencoder:
    """``patchtst`` (every :func:`series_mae` option) with no norm after the last encoder block (Hugging Face's
    PatchTST encoder)."""
    model = series_mae(**kwargs)
    model.encoder.norm = nn.Identity()
    return model


patchtst_hf.__signature__ = inspect.signature(series_mae)  # type: ignore[attr-defined]
