"""Masks seeded by sample, not by rank: a 2-rank run draws the masks the 1-rank run draws at the same global batch.

Rank ``r`` of ``W`` holds rows ``[r*B, (r+1)*B)`` of the global batch (:class:`~maezoo.engine.trainer.
StepBatchSampler` cuts each global batch into contiguous slices). Every rank draws the mask of the whole global
batch from the generator of ``(seed, step, micro)`` (no rank in it) and keeps its own rows, so sample ``i`` of
global batch ``g`` gets the same mask whatever the number of ranks. Drawing ``W*B`` rows costs one
``[W*B, N]`` random draw and sort per step, small next to the step.

What stays per rank: draws inside the model's forward after the mask (replace-mode rules, drop path, dropout:
seeded from ``(seed, step, rank)``), and inputs that are not tensors (PyG batches, dicts of views) keep the
model's own per-rank mask draw.

Shapes: ``x`` ``[B, ...]`` -> a :class:`~maezoo.core.masking.Mask` with ``[B', N]`` rows (``B'`` the token batch).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from maezoo.core.masking import Mask


def mask_rows(mask: Mask, start: int, stop: int) -> Mask:
    """Rows ``[start, stop)`` of every per-sample tensor of ``mask``."""
    fields = {f.name: getattr(mask, f.name) for f in dataclasses.fields(mask)}
    return dataclasses.replace(mask, **{k: v[start:stop] if isinstance(v, torch.Tensor) else v
                                        for k, v in fields.items()})


def global_batch_mask(model: Any, x: Any, generator: torch.Generator, rank: int, world: int) -> Mask | None:
    """This rank's rows of the global batch's mask, or ``None`` when ``model``/``x`` do not allow it (the model
    then draws its own mask)."""
    sample_mask = getattr(model, "sample_mask", None)
    if world <= 1 or sample_mask is None or not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
        return None
    b = x.shape[0]
    ghost = x[:1].expand(world * b, *x.shape[1:])  # the global batch's shape, no copy: masks read shapes only
    full = sample_mask(ghost, generator=generator)
    rows = full.mask.shape[0] // world  # token batch rows per rank (B' = B * channels for folded series)
    return mask_rows(full, rank * rows, (rank + 1) * rows)
