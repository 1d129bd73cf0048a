"""Reconstruction targets computed from a tokenizer's patchified input.

Shapes:
    patches: ``[B, N, P]`` (``P`` values per token) -> target ``[B, N, P]``
"""

from __future__ import annotations

from torch import Tensor

from maezoo.registry import register


@register("target", "raw")
def raw_target(patches: Tensor) -> Tensor:
    """The token's own values (MAE without ``norm_pix_loss``; GraphMAE's node features)."""
    return patches


@register("target", "norm")
def norm_target(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """MAE's ``norm_pix_loss``: each token standardised by its own mean and variance."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=True)
    return (patches - mean) / (var + eps) ** 0.5
