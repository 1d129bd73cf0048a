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
    Mask.ids_target: ``None`` (the decoder reconstructs every hidden token) or ``[B, K]`` ascending grid
        indices of the hidden tokens the decoder reconstructs (VideoMAE V2's decoder masking, see
        :func:`select_decoder_targets`); ``Mask.target_mask`` is the matching ``[B, N]`` bool.

Hidden tokens in replace mode follow a :class:`ReplaceRule` (shares of mask token / random substitute /
unchanged), applied by :func:`apply_replace_rule`.

Variable-length batches (text): a strategy that supports it (``supports_exclude``: ``random``, ``whole_word``)
takes ``exclude`` (``[B, N]`` bool, ``True`` on padding and tokens never to hide, e.g. ``[SEP]``) and hides a
per-sample count from each row's own length, ``max(1, floor(ratio * n_b + 0.5))`` of its ``n_b`` maskable
tokens (none if ``n_b = 0``), never an excluded token. Such a *ragged* mask (:meth:`Mask.from_bool_ragged`) keeps
dense shapes with ``M``, the largest count any row of the grid can have (known without a host sync):
``ids_masked`` ``[B, M]`` lists a row's hidden tokens first (ascending), then ``M - m_b`` visible fillers, and
``Mask.masked_valid`` ``[B, M]`` tells them apart. Ragged masks serve replace mode (the encoder sees every
token); the loss weighs the fillers 0 and the replace rule leaves them unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from maezoo.registry import register

Grid = tuple[int, ...]


def tile_rows(t: Tensor, times: int) -> Tensor:
    """``times`` copies of the batch ``t`` stacked (``[B, ...]`` -> ``[times * B, ...]``): per-sample context of a
    global batch whose other ranks' rows are stood in for by this rank's (``sample_mask(..., world=)``)."""
    return t.repeat(times, *([1] * (t.dim() - 1)))


@dataclass
class Mask:
    """Which tokens are hidden, with the index tensors the encoder and decoder need."""

    mask: Tensor
    ids_keep: Tensor
    ids_masked: Tensor
    ids_restore: Tensor
    #: ``[B, K]`` hidden tokens the decoder reconstructs (ascending); ``None``: all of ``ids_masked``
    ids_target: Tensor | None = None
    #: ``[B, M]`` bool for a ragged mask (per-sample hidden counts): ``True`` where ``ids_masked`` names a hidden
    #: token, ``False`` on the visible fillers after them; ``None``: every row hides the same count
    masked_valid: Tensor | None = None

    @property
    def num_visible(self) -> int:
        return self.ids_keep.shape[1]

    @property
    def target_mask(self) -> Tensor:
        """``[B, N]`` bool, ``True`` on the tokens the loss scores (``mask`` unless ``ids_target`` is set)."""
        if self.ids_target is None:
            return self.mask
        out = torch.zeros_like(self.mask)
        return out.scatter(1, self.ids_target, True)

    def with_targets(self, ids_target: Tensor | None) -> Mask:
        """A copy whose decoder reconstructs only ``ids_target`` (``[B, K]``, hidden tokens only).

        Shapes:
            ids_target: ``[B, K]`` long, ``K <= N - N_vis``
        """
        if ids_target is not None:
            b, m = self.ids_masked.shape
            if ids_target.dim() != 2 or ids_target.shape[0] != b or ids_target.shape[1] > m:
                raise ValueError(
                    f"ids_target must be [B={b}, K<={m}] indices of hidden tokens, got {tuple(ids_target.shape)}"
                )
            if ids_target.numel() and not bool(torch.gather(self.mask, 1, ids_target.long()).all()):
                raise ValueError("ids_target names visible tokens; the decoder may only reconstruct hidden ones")
            ids_target = ids_target.long()
        return dataclasses.replace(self, ids_target=ids_target)

    @classmethod
    def from_bool(cls, mask: Tensor, num_masked: int | None = None) -> Mask:
        """Build from a ``[B, N]`` boolean mask with the same masked count in every row.

        ``num_masked``: that count, when the caller knows it (every built-in strategy does); the mask is then
        built without a host synchronisation and without sorting. Without it the count is read from the
        mask (one host sync) and checked to be the same in every row.

        Shapes:
            mask: ``[B, N]`` bool -> ids_keep ``[B, N - M]``, ids_masked ``[B, M]``, ids_restore ``[B, N]``
        """
        if mask.dim() != 2:
            raise ValueError(f"mask must be [B, N], got shape {tuple(mask.shape)}")
        mask = mask.bool()
        b, n = mask.shape
        if num_masked is None:
            counts = mask.sum(1)
            if b and not bool((counts == counts[0]).all()):
                raise ValueError(f"every sample must hide the same number of tokens, got counts {counts.tolist()}")
            num_masked = int(counts[0]) if b else 0
        n_keep = n - int(num_masked)
        # Position of every token in cat(visible, hidden), each group in ascending grid order: the running
        # counts of visible and of hidden tokens; ids_restore is that position, its inverse the order.
        ids_restore = torch.where(mask, mask.cumsum(1) + (n_keep - 1), (~mask).cumsum(1) - 1)
        order = torch.empty_like(ids_restore).scatter_(
            1, ids_restore, torch.arange(n, device=mask.device).expand(b, n)
        )
        return cls(mask=mask, ids_keep=order[:, :n_keep], ids_masked=order[:, n_keep:], ids_restore=ids_restore)

    @classmethod
    def from_bool_ragged(cls, mask: Tensor, max_masked: int) -> Mask:
        """Build from a ``[B, N]`` boolean mask whose rows hide different counts, at most ``max_masked`` each.

        No host synchronisation: ``max_masked`` is the caller's bound (a strategy knows it from ``N`` and its
        ratio). Row ``b`` lists its ``m_b`` hidden tokens first in ``ids_masked`` (ascending), then ``M - m_b``
        visible fillers (the lowest visible positions); ``masked_valid`` marks the hidden ones. ``ids_keep``
        holds the other ``N - M`` visible tokens; ``ids_restore`` inverts ``cat(ids_keep, ids_masked)``.

        Shapes:
            mask: ``[B, N]`` bool -> ids_masked, masked_valid ``[B, M]``, ids_keep ``[B, N - M]``, ids_restore ``[B, N]``
        """
        if mask.dim() != 2:
            raise ValueError(f"mask must be [B, N], got shape {tuple(mask.shape)}")
        mask = mask.bool()
        b, n = mask.shape
        m = int(max_masked)
        if not 0 <= m <= n:
            raise ValueError(f"max_masked must be in [0, N={n}], got {max_masked}")
        order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices  # hidden first, each group ascending
        counts = mask.sum(1, keepdim=True)  # [B, 1], stays on the device
        valid = torch.arange(m, device=mask.device).unsqueeze(0) < counts
        ids_masked, ids_keep = order[:, :m], order[:, m:]
        perm = torch.cat([ids_keep, ids_masked], dim=1)
        ids_restore = torch.empty_like(perm).scatter_(1, perm, torch.arange(n, device=mask.device).expand(b, n))
        return cls(mask=mask, ids_keep=ids_keep, ids_masked=ids_masked, ids_restore=ids_restore, masked_valid=valid)

    def rows(self, start: int, stop: int) -> Mask:
        """Rows ``[start, stop)`` of every per-sample tensor (a rank's share of a global batch's mask)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), Tensor)})

    @property
    def ragged(self) -> bool:
        """Whether rows hide different counts (``masked_valid`` set)."""
        return self.masked_valid is not None

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


def ragged_count(n: Tensor | int, ratio: float) -> Tensor | int:
    """Hidden tokens of a row with ``n`` maskable tokens: ``max(1, floor(ratio * n + 0.5))``, 0 when ``n = 0``.

    ``n`` a ``[B]`` tensor gives a ``[B]`` tensor (no host sync); an int gives the bound for a whole grid.
    """
    if isinstance(n, Tensor):
        count = torch.floor(n.to(torch.float64) * ratio + 0.5).long().clamp_min(1)
        return torch.where(n > 0, count, torch.zeros_like(count))
    return 0 if n <= 0 else max(1, math.floor(n * ratio + 0.5))


def random_bool_mask(
    batch_size: int, num_tokens: int, num_masked: int, generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """``[B, N]`` bool with exactly ``num_masked`` uniformly random ``True`` per row (the ``num_masked`` lowest
    of ``N`` uniform draws, MAE's noise argsort: one sort)."""
    noise = _rand((batch_size, num_tokens), generator, device)
    hidden = noise.argsort(dim=1)[:, :num_masked]
    return torch.zeros(batch_size, num_tokens, dtype=torch.bool, device=device).scatter_(1, hidden, True)


class MaskingStrategy:
    """Base of all strategies: subclasses implement :meth:`bool_mask` and set ``grid_ndims``."""

    #: token-grid ranks the strategy accepts (``None``: any)
    grid_ndims: ClassVar[tuple[int, ...] | None] = None
    #: whether :meth:`__call__` takes ``exclude`` (padding, special tokens) and draws per-sample counts
    supports_exclude: ClassVar[bool] = False
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

    def exact_count(self, grid: Grid) -> int | None:
        """Tokens every mask on ``grid`` hides, when the strategy fixes it (``None``: read from the mask).

        Knowing it builds the :class:`Mask` without a host synchronisation (:meth:`Mask.from_bool`).
        """
        return None

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
        exclude: Tensor | None = None,
        groups: Tensor | None = None,
    ) -> Mask:
        """The mask of a batch; with ``exclude`` (``[B, N]`` bool, ``True``: never hide) a ragged mask with
        per-sample counts (module docstring); ``groups`` (``[B, N]`` long word ids) for whole-word strategies."""
        grid = tuple(int(g) for g in grid)
        self.check_grid(grid)
        if exclude is not None:
            return self._ragged(batch_size, grid, generator, device, exclude, groups)
        return Mask.from_bool(self.bool_mask(batch_size, grid, generator, device), self.exact_count(grid))

    def _ragged(self, batch_size: int, grid: Grid, generator: torch.Generator | None, device: torch.device | str,
                exclude: Tensor, groups: Tensor | None) -> Mask:
        if not self.supports_exclude:
            raise ValueError(
                f"{type(self).__name__} cannot leave out padding or special tokens (the batch reports "
                "context['padding_mask']); use masking 'random' or 'whole_word' for variable-length batches")
        n = math.prod(grid)
        if tuple(exclude.shape) != (batch_size, n):
            raise ValueError(f"exclude must be [B={batch_size}, N={n}] bool, got {tuple(exclude.shape)}")
        exclude = exclude.to(device=device, dtype=torch.bool)
        budget = ragged_count((~exclude).sum(1), self.ratio)  # [B]
        hidden = self.ragged_bool_mask(exclude, budget, groups, generator, device)
        return Mask.from_bool_ragged(hidden, ragged_count(n, self.ratio))

    def ragged_bool_mask(self, exclude: Tensor, budget: Tensor, groups: Tensor | None,
                         generator: torch.Generator | None, device: torch.device | str) -> Tensor:
        """``[B, N]`` bool hiding at most ``budget[b]`` tokens of row ``b``, none where ``exclude`` is set."""
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


@register("masking", "random")
class RandomMasking(MaskingStrategy):
    """MAE: hide ``int(N * ratio)`` tokens uniformly at random, independently per sample (with ``exclude``: a
    per-sample count of the maskable tokens, see the module docstring)."""

    supports_exclude = True

    def __init__(self, ratio: float = 0.75) -> None:
        self.ratio = _check_ratio(ratio)

    def exact_count(self, grid):
        return self.num_masked(math.prod(grid))

    def bool_mask(self, batch_size, grid, generator, device):
        n = math.prod(grid)
        return random_bool_mask(batch_size, n, self.num_masked(n), generator, device)

    def ragged_bool_mask(self, exclude, budget, groups, generator, device):
        b, n = exclude.shape
        noise = _rand((b, n), generator, device).masked_fill(exclude, 2.0)  # excluded tokens sort last
        rank = torch.empty_like(noise, dtype=torch.long).scatter_(
            1, noise.argsort(dim=1), torch.arange(n, device=noise.device).expand(b, n))
        return (rank < budget.unsqueeze(1)) & ~exclude


@register("masking", "whole_word")
class WholeWordMasking(RandomMasking):
    """BERT's whole-word masking: words (``groups``: a word id per token, the pieces of a word share it) are
    drawn in random order and hidden with all their pieces while the row's budget lasts, never exceeding it.

    Only for variable-length batches (``exclude`` given); a row's budget is the random strategy's count.
    """

    grid_ndims = (1,)

    def bool_mask(self, batch_size, grid, generator, device):
        raise ValueError("whole_word masking needs word ids: use it with a text tokenizer that reports "
                         "context['padding_mask'] and context['word_ids']")

    def ragged_bool_mask(self, exclude, budget, groups, generator, device):
        if groups is None:
            raise ValueError("whole_word masking needs context['word_ids'] from the tokenizer (a word id per token)")
        b, n = exclude.shape
        # excluded tokens (padding, specials) form a word of their own, id N, which is never hidden
        gid = torch.where(exclude, n, groups.to(exclude.device).long().clamp(0, n - 1))
        word_u = _rand((b, n + 1), generator, device)  # one draw per possible word id
        score = torch.gather(word_u, 1, gid).masked_fill(exclude, 2.0)
        # a word's pieces are adjacent in this order (equal scores; ties broken by position, kept stable)
        order = torch.sort(score, dim=1, stable=True).indices
        taken = torch.gather((~exclude).long(), 1, order).cumsum(1)  # maskable tokens up to and including each
        word_end = torch.zeros(b, n + 1, dtype=torch.long, device=exclude.device).scatter_reduce(
            1, torch.gather(gid, 1, order), taken, "amax", include_self=False)
        fits = torch.gather(word_end, 1, gid) <= budget.unsqueeze(1)
        return fits & ~exclude


@register("masking", "shared_random")
class SharedRandomMasking(RandomMasking):
    """TSFormer: one random mask shared by groups of rows (``group=None``: the whole batch shares one mask).

    ``group=k`` shares a mask among each ``k`` consecutive token-batch rows, e.g. ``k = C`` with a
    channel-independent series tokenizer (row ``b * C + c``) gives one mask per sample for all its channels.
    """

    supports_exclude = False

    def __init__(self, ratio: float = 0.75, group: int | None = None) -> None:
        super().__init__(ratio)
        if group is not None and int(group) < 1:
            raise ValueError(f"shared_random masking needs group >= 1 (or None for the whole batch), got {group}")
        self.group = None if group is None else int(group)

    def bool_mask(self, batch_size, grid, generator, device):
        n = math.prod(grid)
        k = batch_size if self.group is None else self.group
        if batch_size % max(k, 1):
            raise ValueError(f"shared_random masking with group={k} needs a token batch divisible by {k}, "
                             f"got {batch_size} rows; set group to the channel count")
        rows = random_bool_mask(batch_size // k if k else 0, n, self.num_masked(n), generator, device)
        return rows.repeat_interleave(k, dim=0)


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

    def exact_count(self, grid):
        return self.num_masked(math.prod(grid))

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

    def exact_count(self, grid):
        n = math.prod(grid)
        return n - n // self.cell ** len(grid)

    def bool_mask(self, batch_size, grid, generator, device):
        c, d = self.cell, len(grid)
        self.ratio = 1 - 1 / c**d
        offsets = (_rand((batch_size, d), generator, device) * c).long().clamp_max(c - 1)
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

    def exact_count(self, grid):
        coarse = math.prod(g // self.scale for g in grid)
        return self.num_masked(coarse) * self.scale ** len(grid)

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

    def exact_count(self, grid):
        t, h, w = grid
        return t * self.num_masked(h * w)

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

    def exact_count(self, grid):
        t, f = grid
        nt, nf = _share(t, self.time_ratio), _share(f, self.freq_ratio)
        return nt * f + nf * t - nt * nf

    def bool_mask(self, batch_size, grid, generator, device):
        t, f = grid
        nt, nf = _share(t, self.time_ratio), _share(f, self.freq_ratio)
        self.ratio = (nt * f + nf * t - nt * nf) / (t * f)
        tm = random_bool_mask(batch_size, t, nt, generator, device)
        fm = random_bool_mask(batch_size, f, nf, generator, device)
        return (tm[:, :, None] | fm[:, None, :]).reshape(batch_size, -1)


@register("masking", "running_cell")
class RunningCellMasking(MaskingStrategy):
    """VideoMAE V2's decoder mask: in every ``2 x 2`` spatial cell, ``int(4 * ratio)`` tokens are hidden
    in a pattern that shifts by one cell position per frame, from a random start per sample.

    As a ``decoder_masking`` of :class:`~maezoo.core.mae.MaskedAutoencoder` its hidden tokens are the
    ones the decoder does *not* reconstruct. Grid ``(T, H, W)`` with even ``H`` and ``W``.
    """

    grid_ndims = (3,)

    def __init__(self, ratio: float = 0.5) -> None:
        self.ratio = _check_ratio(ratio)
        if not 1 <= int(4 * self.ratio) <= 3:
            raise ValueError(f"running-cell masking hides int(4 * ratio) of 4 cell tokens; ratio must be in [0.25, 1), "
                             f"got {ratio}")

    def check_grid(self, grid):
        super().check_grid(grid)
        if grid[1] % 2 or grid[2] % 2:
            raise ValueError(f"running-cell masking needs even H and W in grid (T, H, W), got {grid}")

    def exact_count(self, grid):
        t, h, w = grid
        return t * (h * w // 4) * int(4 * self.ratio)

    def bool_mask(self, batch_size, grid, generator, device):
        t, h, w = grid
        hidden_per_cell = int(4 * self.ratio)
        queue = torch.arange(4, device=device) < hidden_per_cell  # [1]*hidden + [0]*visible
        ptr = (_rand((batch_size,), generator, device) * 4).long().clamp_max(3)  # [B]
        cell = (torch.arange(h, device=device) % 2).view(h, 1) * 2 + (torch.arange(w, device=device) % 2).view(1, w)
        step = torch.arange(t, device=device).view(1, t, 1, 1) + 1 + ptr.view(-1, 1, 1, 1)
        return queue[(cell.view(1, 1, h, w) + step) % 4].reshape(batch_size, -1)


def select_decoder_targets(
    mask: Mask,
    strategy: MaskingStrategy,
    grid: Grid,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Among the hidden tokens of ``mask``, the ``K`` the decoder reconstructs (VideoMAE V2's decoder masking).

    ``strategy`` is drawn on the full grid (so structured patterns such as ``running_cell`` keep their
    shape); its *visible* tokens are the ones it selects. Every sample gets the same
    ``K = (M * kept) // N`` targets (``M`` hidden tokens, ``kept`` tokens the strategy leaves visible):
    hidden tokens the strategy selects come first, ties and shortfalls are settled by a random order from
    ``generator``, so ``K`` stays fixed and the gathers stay dense.

    Shapes:
        mask.mask: ``[B, N]``; returns ``[B, K]`` ascending grid indices, a subset of ``mask.ids_masked``
    """
    b, n = mask.mask.shape
    dropped = strategy(b, grid, generator=generator, device=device).mask  # True: not reconstructed
    m = mask.ids_masked.shape[1]
    kept = n - int(dropped[0].sum()) if b else n
    k = (m * kept) // n
    noise = _rand((b, m), generator, device)  # [0, 1): selected (0 + u) sort before dropped (1 + u)
    order = torch.argsort(torch.gather(dropped, 1, mask.ids_masked).to(noise.dtype) + noise, dim=1)
    return torch.gather(mask.ids_masked, 1, order[:, :k]).sort(dim=1).values


def gather_tokens(values: Tensor, ids: Tensor) -> Tensor:
    """Rows ``ids`` of every sample: ``[B, N, *rest] -> [B, K, *rest]`` (``rest`` may be empty, e.g. class ids)."""
    idx = ids.view(*ids.shape, *([1] * (values.dim() - 2))).expand(*ids.shape, *values.shape[2:])
    return torch.gather(values, 1, idx)


@dataclass(frozen=True)
class ReplaceRule:
    """What replace mode does with each hidden token: shares of mask token / random substitute / unchanged.

    ``ReplaceRule(mask=0.8, random=0.1, keep=0.1)`` is BERT's 80/10/10; GraphMAE's ``replace_rate=r`` is
    ``ReplaceRule(mask=1 - r, random=r)`` (it keeps none). A random substitute is another token's content
    drawn from the whole batch, keeping its own position; a kept token is the input token unchanged. The
    random and keep shares apply in training only; in eval every hidden token becomes the mask token.
    """

    mask: float = 1.0
    random: float = 0.0
    keep: float = 0.0

    def __post_init__(self) -> None:
        shares = {"mask": self.mask, "random": self.random, "keep": self.keep}
        bad = {k: v for k, v in shares.items() if not (isinstance(v, numbers.Real) and 0.0 <= float(v) <= 1.0)}
        if bad:
            raise ValueError(f"ReplaceRule shares must be in [0, 1], got {bad}")
        if abs(sum(float(v) for v in shares.values()) - 1.0) > 1e-6:
            raise ValueError(
                f"ReplaceRule shares must sum to 1, got mask={self.mask}, random={self.random}, keep={self.keep}; "
                "e.g. ReplaceRule(mask=0.8, random=0.1, keep=0.1) for BERT"
            )
        if self.random >= 1.0:
            raise ValueError("ReplaceRule(random=1) leaves no hidden token masked; use random < 1")

    @classmethod
    def from_replace_rate(cls, rate: float) -> ReplaceRule:
        """GraphMAE's ``replace_rate``: ``rate`` random substitutes, the rest mask tokens, none kept."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"replace_rate must be in [0, 1), got {rate}")
        return cls(mask=1.0 - rate, random=float(rate), keep=0.0)

    @classmethod
    def coerce(cls, spec: ReplaceRule | Mapping[str, float] | None) -> ReplaceRule:
        """``None`` (all mask token), a mapping such as ``{"mask": 0.8, "random": 0.1, "keep": 0.1}``, or a rule."""
        if spec is None:
            return cls()
        if isinstance(spec, ReplaceRule):
            return spec
        if isinstance(spec, Mapping):
            return cls(**{k: float(v) for k, v in spec.items()})
        raise ValueError(f"replace rule must be a ReplaceRule or a mapping of shares, got {type(spec).__name__}")

    @property
    def draws(self) -> bool:
        """Whether the rule needs random draws (any random or keep share)."""
        return self.random > 0 or self.keep > 0


#: codes of :func:`apply_replace_rule`'s ``kind`` output
REPLACE_MASK, REPLACE_RANDOM, REPLACE_KEEP = 0, 1, 2


def draw_replace_rule(
    mask: Mask, rule: ReplaceRule, total: int, generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The random draws of :func:`apply_replace_rule`, without touching any token.

    In this order, only when the rule needs them: ``u = rand([B, M])`` (random substitute if ``u < random``,
    kept if ``random <= u < random + keep``, else the mask token), then the substitutes' source rows
    ``randint(total, [B, M])`` when ``random > 0`` (``total = B * N``: a flat row of the batch). An encoder that
    builds its replaced input itself (input mode ``consumes_replace``, see :class:`~maezoo.core.mae.MaskedAutoencoder`)
    gets exactly these draws. A ragged mask's fillers (``mask.masked_valid`` false) are always ``kept``, so the
    rule leaves them as they are. ``total`` may instead be the rows of a substitute table (BERT: the vocabulary,
    see :func:`apply_replace_rule`).

    Shapes:
        returns ``kind`` ``[B, M]`` (int8 per ``mask.ids_masked``: 0 mask token, 1 random, 2 kept) and
        ``source`` ``[B, M]`` (flat row ``b * N + n`` of each substitute, read where ``kind == 1``) or ``None``
    """
    hidden = mask.ids_masked  # [B, M]
    device = hidden.device if device is None else torch.device(device)
    kind = torch.zeros(hidden.shape, dtype=torch.int8, device=device)
    if not rule.draws:
        return _keep_fillers(kind, mask), None
    gen_dev = generator.device if generator is not None else device
    u = torch.rand(hidden.shape, generator=generator, device=gen_dev).to(device)
    if rule.keep > 0:
        kind = kind.masked_fill((u >= rule.random) & (u < rule.random + rule.keep), REPLACE_KEEP)
    source = None
    if rule.random > 0:
        source = torch.randint(0, total, hidden.shape, generator=generator, device=gen_dev).to(device)
        kind = kind.masked_fill(u < rule.random, REPLACE_RANDOM)
    return _keep_fillers(kind, mask), source


def _keep_fillers(kind: Tensor, mask: Mask) -> Tensor:
    """A ragged mask's fillers are visible tokens: the rule keeps them (``kind`` 2)."""
    if mask.masked_valid is None:
        return kind
    return kind.masked_fill(~mask.masked_valid.to(kind.device), REPLACE_KEEP)


def apply_replace_rule(
    tokens: Tensor,
    mask: Mask,
    mask_token: Tensor,
    rule: ReplaceRule,
    generator: torch.Generator | None = None,
    pos: Tensor | None = None,
    table: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Replace mode with a :class:`ReplaceRule`: hidden tokens become the mask token, a random other token
    or stay unchanged.

    ``tokens`` already carry the position embedding ``pos`` (when given): the mask token and a random
    substitute get the hidden token's own position, a kept token is returned as is. The draws are
    :func:`draw_replace_rule`'s; with ``keep = 0`` this is GraphMAE's ``replace_rate`` draw for draw.
    A random substitute is another token's content from the batch, or, with ``table`` (``[S, D]``, e.g. a word
    embedding matrix: BERT's random vocabulary token), a uniformly drawn row of it.

    Shapes:
        tokens: ``[B, N, D]``; mask_token: ``[D]``; pos: ``[N, D]`` or ``[B, N, D]``; table: ``[S, D]``
        returns: ``[B, N, D]`` and ``kind`` ``[B, M]`` (int8, per ``mask.ids_masked``: 0 mask token,
        1 random, 2 kept)
    """
    b, n, d = tokens.shape
    pos_full = pos.to(tokens.device, tokens.dtype).expand(b, n, d) if pos is not None else None
    token = mask_token if pos_full is None else mask_token.to(tokens.dtype) + pos_full
    out = apply_replace(tokens, mask, token)
    total = b * n if table is None else int(table.shape[0])
    kind, src = draw_replace_rule(mask, rule, total, generator, tokens.device)
    if not rule.draws:
        return out, kind
    hidden = mask.ids_masked  # [B, M]
    idx = hidden.unsqueeze(-1).expand(-1, -1, d)
    new = torch.gather(out, 1, idx)
    if rule.keep > 0:
        new = torch.where((kind == REPLACE_KEEP).unsqueeze(-1), torch.gather(tokens, 1, idx), new)
    if src is not None:
        if table is not None:
            content = table.to(tokens.dtype)
        else:
            content = (tokens if pos_full is None else tokens - pos_full).reshape(b * n, d)
        noise = content.index_select(0, src.reshape(-1)).view(*src.shape, d)  # [B, M, D]
        if pos_full is not None:
            noise = noise + torch.gather(pos_full, 1, idx)
        new = torch.where((kind == REPLACE_RANDOM).unsqueeze(-1), noise, new)
    return out.scatter(1, idx, new), kind


def build_masking(
    spec: MaskingStrategy | str | Mapping[str, Any], ratio: float | None = None, args: Mapping[str, Any] | None = None
) -> MaskingStrategy:
    """The one way to build a strategy: from an instance, a registered name with ``args``, or
    ``{"name": ..., "args": {...}}``.

    ``ratio`` (a model builder's ``mask_ratio``) is passed as the strategy's ``ratio`` argument unless ``args``
    set one; ``None`` leaves it out, for strategies without a single ratio (``grid``, ``time_frequency``).
    """
    from maezoo.registry import build, check_kwargs, get

    if isinstance(spec, MaskingStrategy) or (callable(spec) and not isinstance(spec, str | Mapping)):
        return spec  # a strategy, or any callable with the strategy's signature
    if isinstance(spec, str):
        spec = {"name": spec, "args": args}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ValueError(
            f"a masking spec is a MaskingStrategy, a registered name or {{'name': ..., 'args': {{...}}}}, got {spec!r}"
        )
    name, args = spec["name"], spec.get("args")
    if args is not None and not isinstance(args, Mapping):
        raise TypeError(f"masking_args must be a dict of keyword arguments, got {type(args).__name__}")
    kwargs = dict(args or {})
    if ratio is not None and "ratio" not in kwargs:
        try:
            check_kwargs(get("masking", name), {"ratio": ratio}, f"masking {name!r}")
        except TypeError:
            raise ValueError(f"masking {name!r} takes no single ratio; build with mask_ratio=None and set its "
                             "options in masking_args") from None
        kwargs["ratio"] = ratio
    return build("masking", name, **kwargs)


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
    "SharedRandomMasking",
    "WholeWordMasking",
    "ragged_count",
    "NodeMasking",
    "BlockMasking",
    "draw_replace_rule",
    "GridMasking",
    "CoarseMasking",
    "TubeMasking",
    "TimeFrequencyMasking",
    "RunningCellMasking",
    "ReplaceRule",
    "apply_drop",
    "apply_replace",
    "apply_replace_rule",
    "build_masking",
    "gather_tokens",
    "select_decoder_targets",
    "unshuffle",
    "random_bool_mask",
    "tile_rows",
]
