"""Masks seeded by sample, not by rank: a 2-rank run draws the masks the 1-rank run draws at the same global batch.

Rank ``r`` of ``W`` holds rows ``[r*B, (r+1)*B)`` of the global batch (:class:`~maezoo.engine.trainer.
StepBatchSampler` cuts each global batch into contiguous slices). Every rank draws the mask of the whole global
batch from the generator of ``(seed, step, micro)`` (no rank in it) and keeps its own rows, so sample ``i`` of
global batch ``g`` gets the same mask whatever the number of ranks. Drawing ``W*B`` rows costs one
``[W*B, N]`` random draw and sort per step, small next to the step.

The model draws it: ``sample_mask(x, generator, rank=, world=)`` (``MaskedAutoencoder``, and the several-modality
model for dict batches) draws the masks of ``world`` batches and keeps rows ``[rank*B, (rank+1)*B)``. A text
sample's mask depends on its own padding, so the other ranks' rows are stood in for by copies of this rank's
(read from the tokenizer's ``mask_context``, nothing embedded: it runs on an FSDP-sharded model too). A model whose
``sample_mask`` takes no rank gets a zero-copy batch of the global shape.

What stays per rank: draws inside the model's forward after the mask (replace-mode rules, drop path, dropout:
seeded from ``(seed, step, rank)``), and inputs that are neither tensors nor dicts (PyG batches) keep the model's
own per-rank mask draw.

Shapes: ``x`` ``[B, ...]`` -> a :class:`~maezoo.core.masking.Mask` with ``[B', N]`` rows (``B'`` the token batch).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from maezoo.core.masking import Mask


def global_batch_mask(model: Any, x: Any, generator: torch.Generator, rank: int, world: int
                      ) -> Mask | dict[str, Mask] | None:
    """This rank's rows of the global batch's mask (a dict of them for a several-modality model), or ``None`` when
    ``model``/``x`` do not allow it (the model then draws its own mask)."""
    sample_mask = getattr(model, "sample_mask", None)
    if world <= 1 or sample_mask is None:
        return None
    if isinstance(x, torch.Tensor) and (x.dim() < 1 or x.shape[0] < 1):
        return None
    if isinstance(x, torch.Tensor | Mapping) and "world" in inspect.signature(sample_mask).parameters:
        return sample_mask(x, generator=generator, rank=rank, world=world)
    if not isinstance(x, torch.Tensor):
        return None  # PyG batches and other inputs: the model's own per-rank draw
    b = x.shape[0]  # a model whose sample_mask takes no rank: masks of the global batch's shape (no copy)
    full = sample_mask(x[:1].expand(world * b, *x.shape[1:]), generator=generator)
    rows = full.mask.shape[0] // world  # token batch rows per rank (B' = B * channels for folded series)
    return full.rows(rank * rows, (rank + 1) * rows)
