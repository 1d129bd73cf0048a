"""Fixed sin-cos position embeddings for 1-D, 2-D and 3-D token grids, and grid resizing.

The embedding dimension is split between the grid axes, each axis using the transformer's 1-D sin-cos.
Axes are laid out last-first, which is exactly MAE's 2-D layout (``get_2d_sincos_pos_embed``) for an
``(H, W)`` grid: the first half encodes the column (x), the second half the row (y); for ``(T, H, W)``
the parts are ``(x, y, t)``. The split is even when ``dim`` divides by ``2 * ndim``; otherwise (e.g. a
512-wide decoder on a 3-D grid) the first axes get 2 more channels each.

Shapes:
    sincos_pos_embed(dim, grid): ``[prod(grid), dim]``
    interpolate_pos_embed(pe, old, new): ``[prod(old), D] -> [prod(new), D]``
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """``[L] -> [L, dim]`` with ``dim`` even: ``[sin(p*w_0..), cos(p*w_0..)]``, ``w_i = 1/10000^(2i/dim)``."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension per axis, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = positions.double().reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([out.sin(), out.cos()], dim=1).float()


@functools.lru_cache(maxsize=64)
def _sincos_cached(dim: int, grid: tuple[int, ...]) -> Tensor:
    nd = len(grid)
    if nd not in (1, 2, 3):
        raise ValueError(f"sin-cos position embeddings support 1-D, 2-D and 3-D grids, got {grid}")
    if dim % 2 or dim < 2 * nd:
        raise ValueError(f"embedding dim {dim} must be even and >= {2 * nd} for a {nd}-D grid {grid}")
    coords = torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij")
    base = (dim // (2 * nd)) * 2
    extra = (dim - base * nd) // 2  # the first ``extra`` parts get 2 more channels
    sizes = [base + 2 * (i < extra) for i in range(nd)]
    parts = [sincos_1d(d, c.reshape(-1)) for d, c in zip(sizes, reversed(coords))]
    return torch.cat(parts, dim=1)


@functools.lru_cache(maxsize=64)
def _sincos_on(dim: int, grid: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():  # a plain constant, usable under autograd
        return _sincos_cached(dim, grid).to(device=device, dtype=dtype)


def sincos_pos_embed(
    dim: int, grid: tuple[int, ...], device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Fixed position embedding for a token grid, ``[prod(grid), dim]`` (cached; treat as read-only).

    With ``device``/``dtype`` the copy on that device in that dtype is cached too, so a training step
    copies nothing from the host (``sincos_pos_embed(d, grid).to(device, dtype)`` copies every call).

    Shapes: returns ``[prod(grid), dim]``
    """
    key = (int(dim), tuple(int(g) for g in grid))
    if device is None and dtype is None:
        return _sincos_cached(*key)
    return _sincos_on(*key, torch.device(device) if device is not None else torch.device("cpu"), dtype or torch.float32)


def interpolate_pos_embed(pe: Tensor, old_grid: tuple[int, ...], new_grid: tuple[int, ...]) -> Tensor:
    """Resize a (learned or fixed) position embedding from ``old_grid`` to ``new_grid``.

    Linear for 1-D, bicubic for 2-D and trilinear for 3-D grids, as timm and the MAE fine-tuning code do
    when the input resolution changes. ``pe`` may carry a leading batch dimension of 1.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if len(old_grid) != len(new_grid):
        raise ValueError(f"cannot resize a {len(old_grid)}-D grid {old_grid} to {len(new_grid)}-D {new_grid}")
    squeeze = pe.dim() == 3
    x = pe[0] if squeeze else pe
    if x.shape[0] != math.prod(old_grid):
        raise ValueError(f"position embedding has {x.shape[0]} rows but grid {old_grid} has {math.prod(old_grid)}")
    if old_grid == new_grid:
        return pe
    mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[len(old_grid)]
    x = x.t().reshape(1, -1, *old_grid).float()
    x = F.interpolate(x, size=new_grid, mode=mode, align_corners=False)
    x = x.reshape(-1, math.prod(new_grid)).t().to(pe.dtype)
    return x.unsqueeze(0) if squeeze else x
