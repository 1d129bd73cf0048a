"""Masking across modalities: which tokens of each modality a sample shows the encoder (M3AE, MultiMAE).

A cross-modal strategy takes the grids of a batch's modalities and returns one
:class:`~maezoo.core.masking.Mask` per modality. Two are registered (kind ``masking``):

    ``per_modality`` (M3AE): each modality draws its own mask with its own ratio and strategy
        (``ratios={"image": 0.75, "text": 0.75}``); a modality with padding (text) hides a per-sample count of
        its real tokens (a ragged mask, as in :mod:`maezoo.core.masking`).
    ``dirichlet_budget`` (MultiMAE, 2204.01678): every sample shows exactly ``num_visible`` tokens in all,
        split across modalities by a Dirichlet(``alpha``) draw per sample (optionally over a random non-empty
        subset of the modalities). A split larger than a modality's real tokens is moved to the others, so the
        total stays ``num_visible`` while the batch has that many real tokens.

Padding (``ModalGrid.padding``) is never shown, never hidden and never scored; tokens in ``ModalGrid.fixed``
(``[SEP]``) are always shown and never hidden or scored, outside any budget. Everything is drawn from the
``generator`` on the device, without host synchronisation.

Shapes:
    ModalGrid.padding / fixed / groups: ``[B, N_m]`` with ``N_m = prod(grid)``
    returns ``{name: Mask}`` with ``mask.mask`` ``[B, N_m]`` (``True``: hidden, scored)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from maezoo.core.masking import Mask, MaskingStrategy, _rand, build_masking
from maezoo.registry import register


@dataclass
class ModalGrid:
    """One modality of a batch, as a cross-modal strategy sees it (module docstring)."""

    grid: tuple[int, ...]
    #: ``[B, N]`` bool, ``True`` on padding (never shown, hidden or scored)
    padding: Tensor | None = None
    #: ``[B, N]`` bool, ``True`` on tokens always shown and never hidden (``[SEP]``)
    fixed: Tensor | None = None
    #: ``[B, N]`` long word ids (whole-word strategies)
    groups: Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def exclude(self) -> Tensor | None:
        """``[B, N]`` bool: tokens a mask must never hide (padding or fixed); ``None`` if neither."""
        if self.padding is None:
            return self.fixed
        return self.padding if self.fixed is None else self.padding | self.fixed


class CrossModalMasking:
    """Base of the cross-modal strategies: ``__call__(batch_size, grids, generator=, device=) -> {name: Mask}``."""

    #: the model checks this to tell a cross-modal strategy from a single-grid one
    cross_modal = True

    def __call__(self, batch_size: int, grids: Mapping[str, ModalGrid], *,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> dict[str, Mask]:
        raise NotImplementedError

    def max_shown(self, grids: Mapping[str, ModalGrid]) -> int:
        """A bound, known without looking at the batch, on the tokens any sample shows (all modalities)."""
        return sum(g.num_tokens for g in grids.values())


@register("masking", "per_modality")
class PerModalityMasking(CrossModalMasking):
    """M3AE: each modality masked by its own strategy and ratio (module docstring).

    Args:
        ratio: the ratio of modalities ``ratios`` does not name.
        ratios: ``{modality: ratio}`` (M3AE: ``{"image": 0.75, "text": 0.75}``).
        strategies: ``{modality: name or {"name": ..., "args": {...}}}`` (default ``random``; e.g. ``whole_word``
            for text).
        hide_all: ``{modality: p}``: in a share ``p`` of the samples that modality is hidden whole (every real token
            hidden and scored, none shown), so it must be predicted from the others alone (MultiMAE's subsets of
            modalities, with the other modalities' ratios unchanged). At most one modality may be named.
    """

    def __init__(self, ratio: float = 0.75, ratios: Mapping[str, float] | None = None,
                 strategies: Mapping[str, Any] | None = None, hide_all: Mapping[str, float] | None = None) -> None:
        self.ratio, self.ratios, self.strategies = ratio, dict(ratios or {}), dict(strategies or {})
        self.hide_all = dict(hide_all or {})
        if len(self.hide_all) > 1 or any(not 0 <= float(p) <= 1 for p in self.hide_all.values()):
            raise ValueError(f"hide_all names at most one modality with a share in [0, 1] (a sample must show "
                             f"something), got {hide_all!r}")
        self._built: dict[str, MaskingStrategy] = {}
        for name in set(self.ratios) | set(self.strategies):
            self.strategy(name)  # a bad ratio or strategy fails when the model is built

    def strategy(self, name: str) -> MaskingStrategy:
        if name not in self._built:
            self._built[name] = build_masking(self.strategies.get(name, "random"),
                                              ratio=self.ratios.get(name, self.ratio))
        return self._built[name]

    def __call__(self, batch_size, grids, *, generator=None, device="cpu"):
        out = {}
        for name, g in grids.items():
            strat, exclude = self.strategy(name), g.exclude
            if exclude is None:
                out[name] = strat(batch_size, g.grid, generator=generator, device=device)
            else:
                out[name] = strat(batch_size, g.grid, generator=generator, device=device, exclude=exclude,
                                  groups=g.groups)
            if name in self.hide_all:
                out[name] = self._hide_whole(out[name], exclude, self.hide_all[name], generator, device)
        return out

    @staticmethod
    def _hide_whole(mask: Mask, exclude: Tensor | None, share: float, generator: torch.Generator | None,
                    device: torch.device | str) -> Mask:
        """``mask`` with every maskable token hidden in a random ``share`` of the rows (a ragged mask).

        Shapes: mask.mask ``[B, N]`` -> ``[B, N]``; ids_masked / masked_valid ``[B, N]``
        """
        b, n = mask.mask.shape
        whole = _rand((b, 1), generator, device) < share
        hidden = mask.mask | whole
        if exclude is not None:
            hidden &= ~exclude.to(hidden.device)
        return Mask.from_bool_ragged(hidden, n)

    def max_shown(self, grids):
        total = 0
        for name, g in grids.items():
            exact = self.strategy(name).exact_count(g.grid)
            total += g.num_tokens - exact if exact is not None and g.exclude is None else g.num_tokens
        return total


@register("masking", "dirichlet_budget")
class DirichletBudgetMasking(CrossModalMasking):
    """MultiMAE: ``num_visible`` shown tokens per sample, split by a Dirichlet draw (module docstring).

    Args:
        num_visible: shown tokens per sample over all modalities (MultiMAE: 98 of 588 for three 224² maps).
        alpha: the Dirichlet concentration, one value for every modality or ``{modality: alpha}`` (1.0:
            uniform over splits; large: near-equal shares; small: mostly one modality).
        sample_subsets: draw the split over a random non-empty subset of the modalities (each kept with
            probability 1/2, one always kept); the others show nothing.
    """

    def __init__(self, num_visible: int = 98, alpha: float | Mapping[str, float] = 1.0,
                 sample_subsets: bool = False) -> None:
        if isinstance(num_visible, bool) or not isinstance(num_visible, int) or num_visible < 1:
            raise ValueError(f"num_visible must be a positive integer (shown tokens per sample), got {num_visible!r}")
        values = alpha.values() if isinstance(alpha, Mapping) else [alpha]
        if any(isinstance(a, bool) or not isinstance(a, int | float) or not a > 0 for a in values):
            raise ValueError(f"alpha must be positive (one value or {{modality: value}}), got {alpha!r}")
        self.num_visible, self.alpha, self.sample_subsets = num_visible, alpha, bool(sample_subsets)

    def alphas(self, names: list[str]) -> Tensor:
        """``[M]`` concentration per modality, in the order of ``names``."""
        if not isinstance(self.alpha, Mapping):
            return torch.full((len(names),), float(self.alpha))
        missing = [n for n in names if n not in self.alpha]
        if missing:
            raise ValueError(f"alpha names {sorted(self.alpha)} but the batch also has {missing}; give every "
                             "modality a value or one value for all")
        return torch.tensor([float(self.alpha[n]) for n in names])

    def split(self, batch_size: int, names: list[str], generator: torch.Generator | None,
              device: torch.device | str) -> Tensor:
        """``[B, M]`` shares of the budget per sample (rows sum to 1), a Dirichlet draw (over a subset)."""
        gen_device = generator.device if generator is not None else torch.device(device)
        alpha = self.alphas(names).to(gen_device).expand(batch_size, -1).contiguous()
        share = torch._standard_gamma(alpha, generator=generator)
        if self.sample_subsets:
            u = torch.rand(share.shape, generator=generator, device=gen_device)
            keep = (u < 0.5) | (u == u.max(dim=1, keepdim=True).values)  # each kept w.p. 1/2, one always
            share = share * keep
        share = share.clamp_min(1e-12) * (share > 0)
        return (share / share.sum(1, keepdim=True)).to(device)

    def counts(self, share: Tensor, capacity: Tensor) -> Tensor:
        """``[B, M]`` shown tokens per modality: the budget split by ``share``, capped by ``capacity`` (real
        maskable tokens), the remainder moved to modalities with room (first those with a share)."""
        t = self.num_visible
        raw = share * t
        base = raw.floor().long()
        left = t - base.sum(1, keepdim=True)  # < M: to the largest fractional parts
        order = (raw - base).argsort(dim=1, descending=True)
        bump = torch.zeros_like(base).scatter_(1, order, (torch.arange(base.shape[1], device=base.device) < left).long())
        count = torch.minimum(base + bump, capacity)
        for preferred in (share > 0, torch.ones_like(share, dtype=torch.bool)):
            for m in range(count.shape[1]):
                deficit = t - count.sum(1)
                room = (capacity[:, m] - count[:, m]) * preferred[:, m]
                count[:, m] += torch.minimum(deficit.clamp_min(0), room)
        return count

    def __call__(self, batch_size, grids, *, generator=None, device="cpu"):
        names = list(grids)
        exclude = {n: g.exclude for n, g in grids.items()}
        capacity = torch.stack([
            torch.full((batch_size,), g.num_tokens, device=device, dtype=torch.long) if exclude[n] is None
            else (~exclude[n].to(device)).sum(1) for n, g in grids.items()], dim=1)
        count = self.counts(self.split(batch_size, names, generator, device), capacity)
        out = {}
        for m, (name, g) in enumerate(grids.items()):
            n = g.num_tokens
            ex = exclude[name]
            noise = _rand((batch_size, n), generator, device)
            if ex is not None:
                noise = noise.masked_fill(ex.to(device), 2.0)  # excluded tokens rank last
            rank = torch.empty_like(noise, dtype=torch.long).scatter_(
                1, noise.argsort(dim=1), torch.arange(n, device=noise.device).expand(batch_size, n))
            hidden = rank >= count[:, m:m + 1]
            if ex is not None:
                hidden &= ~ex.to(device)
            out[name] = Mask.from_bool_ragged(hidden, n)
        return out

    def max_shown(self, grids):
        fixed = sum(g.num_tokens for g in grids.values() if g.fixed is not None)
        return min(self.num_visible + fixed, super().max_shown(grids))


__all__ = ["CrossModalMasking", "DirichletBudgetMasking", "ModalGrid", "PerModalityMasking"]
