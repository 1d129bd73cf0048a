"""A module entry point: importing it runs ``@register``, so one entry point can add several components."""

from __future__ import annotations

import torch
from torch import Tensor

from maezoo.core import MaskingStrategy
from maezoo.registry import register


@register("masking", "wave_span")
class SpanMasking(MaskingStrategy):
    """Hide one contiguous span of ``int(N * ratio)`` tokens (wrapping around), at a random start per sample.

    Shapes:
        grid ``(N,)`` -> bool mask ``[B, N]``
    """

    grid_ndims = (1,)

    def __init__(self, ratio: float = 0.5) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"wave_span ratio must be in [0, 1), got {ratio}")
        self.ratio = float(ratio)

    def bool_mask(self, batch_size: int, grid: tuple[int, ...], generator: torch.Generator | None,
                  device: torch.device | str) -> Tensor:
        n = grid[0]
        gen_device = generator.device if generator is not None else device
        start = torch.randint(0, n, (batch_size, 1), generator=generator, device=gen_device).to(device)
        hidden = (start + torch.arange(self.num_masked(n), device=device)) % n  # [B, M]
        mask = torch.zeros(batch_size, n, dtype=torch.bool, device=device)
        return mask.scatter(1, hidden, True)
