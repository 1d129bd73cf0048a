"""Samples for figures: drawn across classes, so a reconstruction figure is not eight images of one class.

Shapes:
    ``spread_over_classes(dataset, num)`` -> a view of ``num`` samples of ``dataset`` (``(x, label)`` items),
    taking classes in turn (a seeded random sample from each); datasets without ``targets`` give their first
    ``num`` samples.
"""

from __future__ import annotations

import random
from typing import Any

from torch.utils.data import Dataset


def class_spread_indices(labels: list[Any], num: int, seed: int = 0) -> list[int]:
    """``num`` indices taking each class in turn (classes in sorted order, a seeded shuffle within each)."""
    by_class: dict[Any, list[int]] = {}
    for i, y in enumerate(labels):
        key = y if isinstance(y, int | str) else str(y)
        by_class.setdefault(key, []).append(i)
    rng = random.Random(seed)
    pools = [rng.sample(idx, len(idx)) for _, idx in sorted(by_class.items(), key=lambda kv: str(kv[0]))]
    out: list[int] = []
    depth = 0
    while len(out) < num and any(depth < len(p) for p in pools):
        out += [p[depth] for p in pools if depth < len(p)][: num - len(out)]
        depth += 1
    return out


class SpreadSample(Dataset):
    """A read-only view of ``num`` samples of ``dataset`` spread over its classes; other attributes (``mean``,
    ``std``, ``collate_fn`` ...) are the dataset's."""

    def __init__(self, dataset: Dataset, num: int, seed: int = 0) -> None:
        self.dataset = dataset
        labels = _labels(dataset)
        n = len(dataset)  # type: ignore[arg-type]
        self.indices = class_spread_indices(labels, num, seed) if labels else list(range(min(num, n)))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "indices") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _labels(dataset: Dataset) -> list[Any] | None:
    try:
        labels = list(dataset.targets)  # type: ignore[attr-defined]
    except (AttributeError, TypeError, NotImplementedError):
        return None
    return labels if labels and len(labels) == len(dataset) else None  # type: ignore[arg-type]


def spread_over_classes(dataset: Dataset, num: int, seed: int = 0) -> SpreadSample:
    return SpreadSample(dataset, num, seed)
