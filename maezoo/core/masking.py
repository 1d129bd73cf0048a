"""Masking strategies behind one interface.

A strategy maps ``(batch_size, grid)`` to a :class:`Mask` in which every sample hides the same
number of tokens, so gathers of the visible tokens stay dense tensors. Randomness comes only from
the ``torch.Generator`` passed in, so a fixed generator gives a fixed mask.

Shapes:
    grid: the token grid, e.g. ``(H, W)`` for image patches, ``(T, H, W)`` for video tubelets,
        ``(T, F)`` for spectrogram patches, ``(N,)`` for sequences or graph nodes.
    Mask.mask: ``[B, N]`` bool, ``True`` where a token is hidden, ``N = prod(grid)`` in row-major order.
    Mask.ids_keep: ``[B, N_vis]`` indices of visible tokens (ascending).
    Mask.ids_masked: ``[B, N - N_vis]`` indices of hidden tokens (ascending).
    Mask.ids_restore: ``[B, N]`` position of each token in ``cat(ids_keep, ids_masked)``, i.e. the
        permutation that puts ``cat(visible, masked)`` back into grid order.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from maezoo.registry import register

Grid = tuple[int, ...]


@dataclass
class Mask:
    """Which tokens are hidden, with the index tensors the encoder and decoder need."""

    mask: Tensor
    ids_keep: Tensor
    ids_masked: Tensor
    ids_restore: Tensor

    @property
    def num_visible(self) -> int:
        return self.ids_keep.shape[1]

    @classmethod
    def from_bool(cls, mask: Tensor) -> Mask:
        """Build from a ``[B, N]`` boolean mask with the same masked count in every row."""
        if mask.dim() != 2:
            raise ValueError(f"mask must be [B, N], got shape {tuple(mask.shape)}")
        mask = mask.bool()
        counts = mask.sum(1)
        if mask.shape[0] and not bool((counts == counts[0]).all()):
            raise ValueError(f"every sample must hide the same number of tokens, got counts {counts.tolist()}")
        # Stable sort puts visible tokens (0) first, each group in ascending grid order.
        order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices
        n_keep = mask.shape[1] - (int(counts[0]) if mask.shape[0] else 0)
        ids_restore = torch.argsort(order, dim=1)
        return cls(mask=mask, ids_keep=order[:, :n_keep], ids_masked=order[:, n_keep:], ids_restore=ids_restore)

    @classmethod
    def none(cls, batch_size: int, num_tokens: int, device: torch.device | str = "cpu") -> Mask:
        """A mask that hides nothing (for downstream feature extraction)."""
        return cls.from_bool(torch.zeros(batch_size, num_tokens, dtype=torch.bool, device=device))


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or math.isnan(ratio) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio!r}; e.g. 0.75 for MAE, 0.9 for VideoMAE")
    return float(ratio)


def _share(n: int, ratio: float) -> int:
    """``floor(n * ratio)`` robust to float error (``int(100 * 0.29)`` is 28, not 29)."""
    return min(int(math.floor(n * ratio + 1e-9)), n)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str) -> Tensor:
    # Draw on the generator's device, then move: keeps CPU generators usable for GPU batches.
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def random_bool_mask(
    batch_size: int, num_tokens: int, num_masked: int, generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """``[B, N]`` bool with exactly ``num_masked`` uniformly random ``True`` per row."""
    noise = _rand((batch_size, num_tokens), generator, device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < num_masked


class MaskingStrategy:
    """Base of all strategies: subclasses implement :meth:`bool_mask` and set ``grid_ndims``."""

    #: token-grid ranks the strategy accepts (``None``: any)
    grid_ndims: ClassVar[tuple[int, ...] | None] = None
    ratio: float = 0.0

    def check_grid(self, grid: Grid) -> None:
        grid = tuple(grid)
        if not grid or any(int(g) < 1 for g in grid):
            raise ValueError(f"{type(self).__name__}: token grid must have positive sizes, got {grid}")
        if self.grid_ndims is not None and len(grid) not in self.grid_ndims:
            raise ValueError(
                f"{type(self).__name__} accepts token grids of rank {self.grid_ndims}, got grid {grid} "
                f"(rank {len(grid)}); pick a strategy made for this tokenizer (see `maezoo list`)"
            )

    def num_masked(self, num_tokens: int) -> int:
        return _share(num_tokens, self.ratio)

    def bool_mask(
        self, batch_size: int, grid: Grid, generator: torch.Generator | None, device: torch.device | str
    ) -> Tensor:
        raise NotImplementedError

    def __call__(
        self,
        batch_size: int,
        grid: Grid,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Mask:
        grid = tuple(int(g) for g in grid)
        self.check_grid(grid)
        return Mask.from_bool(self.bool_mask(batch_size, grid, generator, device))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


@register("masking", "random")
class RandomMasking(MaskingStrategy):
    """MAE: hide ``int(N * ratio)`` tokens uniformly at random, independently per sample."""

    def __init__(self, ratio: float = 0.75) -> None:
        self.ratio = _check_ratio(ratio)

    def bool_mask(self, batch_size, grid, generator, device):
        n = math.prod(grid)
        return random_bool_mask(batch_size, n, self.num_masked(n), generator, device)


@register("masking", "node")
class NodeMasking(RandomMasking):
    """GraphMAE: a uniformly random subset of an unordered token set (graph nodes), grid ``(N,)``."""

    grid_ndims = (1,)


@register("masking", "block")
class BlockMasking(MaskingStrategy):
    """BEiT block-wise masking: random rectangles (area 16+, aspect 0.3-1/0.3) until the budget.

    Rectangles are added until ``int(N * ratio)`` tokens are hidden; the last rectangle may overshoot,
    in which case random tokens of it are revealed again so that the count is exact.
    """

    grid_ndims = (2,)

    def __init__(self, ratio: float = 0.4, min_block: int = 16, min_aspect: float = 0.3) -> None:
        self.ratio = _check_ratio(ratio)
        self.min_block = int(min_block)
        self.min_aspect = float(min_aspect)

    def bool_mask(self, batch_size, grid, generator, device):
        h, w = grid
        target = self.num_masked(h * w)
        log_aspect = (math.log(self.min_aspect), math.log(1 / self.min_aspect))
        g = generator if generator is not None and generator.device.type == "cpu" else None
        masks = torch.zeros(batch_size, h, w, dtype=torch.bool)
        for b in range(batch_size):
            m = masks[b]
            count, tries = 0, 0
            while count < target and tries < 100 * (h * w):
                tries += 1
                u = torch.rand(4, generator=g).tolist()
                area = self.min_block + u[0] * max(target - count - self.min_block, 0)
                aspect = math.exp(log_aspect[0] + u[1] * (log_aspect[1] - log_aspect[0]))
                bh = min(max(int(round(math.sqrt(area * aspect))), 1), h)
                bw = min(max(int(round(math.sqrt(area / aspect))), 1), w)
                top, left = int(u[2] * (h - bh + 1)), int(u[3] * (w - bw + 1))
                m[top : top + bh, left : left + bw] = True
                count = int(m.sum())
            flat = m.view(-1)
            if count > target:  # reveal random tokens of the overshoot
                hidden = flat.nonzero().squeeze(1)
                drop = hidden[torch.randperm(hidden.numel(), generator=g)[: count - target]]
                flat[drop] = False
            elif count < target:  # budget smaller than one block: fill randomly
                free = (~flat).nonzero().squeeze(1)
                flat[free[torch.randperm(free.numel(), generator=g)[: target - count]]] = True
        return masks.view(batch_size, -1).to(device)


@register("masking", "grid")
class GridMasking(MaskingStrategy):
    """Regular grid masking: keep one token per ``cell x cell`` window at a random offset per sample.

    The ratio is ``1 - 1/cell**d`` (0.75 for ``cell=2`` on a 2-D grid); grid sides must divide by ``cell``.
    """

    grid_ndims = (1, 2, 3)

    def __init__(self, cell: int = 2) -> None:
        if int(cell) < 2:
            raise ValueError(f"grid masking needs cell >= 2, got {cell}")
        self.cell = int(cell)

    def check_grid(self, grid):
        super().check_grid(grid)
        if any(g % self.cell for g in grid):
            raise ValueError(f"grid masking with cell={self.cell} needs grid sides divisible by {self.cell}, got {grid}")

    def bool_mask(self, batch_size, grid, generator, device):
        c, d = self.cell, len(grid)
        self.ratio = 1 - 1 / c**d
        offsets = (_rand((batch_size, d), generator, "cpu") * c).long().clamp_max(c - 1).to(device)
        keep = torch.ones(batch_size, *grid, dtype=torch.bool, device=device)
        coords = torch.meshgrid(*[torch.arange(s, device=device) for s in grid], indexing="ij")
        for i, co in enumerate(coords):
            keep &= (co % c).unsqueeze(0) == offsets[:, i].view(-1, *([1] * d))
        return (~keep).view(batch_size, -1)


@register("masking", "coarse")
class CoarseMasking(MaskingStrategy):
    """SimMIM/ConvMAE: a random mask on a grid ``scale`` times coarser, upsampled to the token grid.

    ConvMAE draws it on the 1/16 grid and upsamples it x2 and x4 for the earlier convolutional stages;
    :meth:`upsample` does that for any extra factor.
    """

    grid_ndims = (1, 2, 3)

    def __init__(self, ratio: float = 0.75, scale: int = 2) -> None:
        self.ratio = _check_ratio(ratio)
        if int(scale) < 1:
            raise ValueError(f"coarse masking needs scale >= 1, got {scale}")
        self.scale = int(scale)

    def check_grid(self, grid):
        super().check_grid(grid)
        if any(g % self.scale for g in grid):
            raise ValueError(f"coarse masking with scale={self.scale} needs grid sides divisible by it, got {grid}")

    def bool_mask(self, batch_size, grid, generator, device):
        coarse = tuple(g // self.scale for g in grid)
        m = random_bool_mask(batch_size, math.prod(coarse), self.num_masked(math.prod(coarse)), generator, device)
        return self.upsample(m.view(batch_size, *coarse), self.scale).reshape(batch_size, -1)

    @staticmethod
    def upsample(mask: Tensor, factor: int) -> Tensor:
        """Nearest upsampling of a ``[B, *grid]`` mask by an integer factor on every axis."""
        for dim in range(1, mask.dim()):
            mask = mask.repeat_interleave(factor, dim=dim)
        return mask


@register("masking", "tube")
class TubeMasking(MaskingStrategy):
    """VideoMAE: one random spatial mask over ``(H, W)`` repeated along time, grid ``(T, H, W)``."""

    grid_ndims = (3,)

    def __init__(self, ratio: float = 0.9) -> None:
        self.ratio = _check_ratio(ratio)

    def bool_mask(self, batch_size, grid, generator, device):
        t, h, w = grid
        spatial = random_bool_mask(batch_size, h * w, self.num_masked(h * w), generator, device)
        return spatial.view(batch_size, 1, h * w).expand(batch_size, t, h * w).reshape(batch_size, -1)


@register("masking", "time_frequency")
class TimeFrequencyMasking(MaskingStrategy):
    """Audio-MAE/SpecAugment-style: hide whole time columns and whole frequency rows of a ``(T, F)`` grid.

    ``int(T * time_ratio)`` time steps and ``int(F * freq_ratio)`` bands are hidden, so every sample hides
    the same count ``t*F + f*T - t*f``; :attr:`ratio` reports that share for the grid last used.
    """

    grid_ndims = (2,)

    def __init__(self, time_ratio: float = 0.6, freq_ratio: float = 0.2) -> None:
        self.time_ratio = _check_ratio(time_ratio)
        self.freq_ratio = _check_ratio(freq_ratio)

    def bool_mask(self, batch_size, grid, generator, device):
        t, f = grid
        nt, nf = _share(t, self.time_ratio), _share(f, self.freq_ratio)
        self.ratio = (nt * f + nf * t - nt * nf) / (t * f)
        tm = random_bool_mask(batch_size, t, nt, generator, device)
        fm = random_bool_mask(batch_size, f, nf, generator, device)
        return (tm[:, :, None] | fm[:, None, :]).reshape(batch_size, -1)


def apply_drop(tokens: Tensor, mask: Mask) -> Tensor:
    """MAE mode: keep only visible tokens. ``[B, N, D] -> [B, N_vis, D]``."""
    return torch.gather(tokens, 1, mask.ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def apply_replace(tokens: Tensor, mask: Mask, mask_token: Tensor) -> Tensor:
    """SimMIM/GraphMAE/BERT mode: hidden tokens become ``mask_token``. Keeps ``[B, N, D]``.

    ``mask_token`` is ``[D]`` or anything broadcastable to ``tokens`` (e.g. ``[N, D]``: the mask token plus
    each position's embedding, as SimMIM and BERT do).
    """
    return torch.where(mask.mask.unsqueeze(-1), mask_token.to(tokens.dtype).expand_as(tokens), tokens)


def unshuffle(visible: Tensor, mask: Mask, fill: Tensor) -> Tensor:
    """Inverse of :func:`apply_drop`: put visible tokens back in grid order, ``fill`` (``[D]``) elsewhere.

    ``[B, N_vis, D] -> [B, N, D]``.
    """
    b, n = mask.mask.shape
    filler = fill.to(visible.dtype).expand(b, n - visible.shape[1], visible.shape[-1])
    full = torch.cat([visible, filler], dim=1)
    return torch.gather(full, 1, mask.ids_restore.unsqueeze(-1).expand(-1, -1, visible.shape[-1]))


__all__ = [
    "Mask",
    "MaskingStrategy",
    "RandomMasking",
    "NodeMasking",
    "BlockMasking",
    "GridMasking",
    "CoarseMasking",
    "TubeMasking",
    "TimeFrequencyMasking",
    "apply_drop",
    "apply_replace",
    "unshuffle",
    "random_bool_mask",
]
