"""A view of a paired dataset that keeps some of its modalities (an image-only probe of an image + text encoder).

Samples of a paired dataset are ``({modality: value}, label)``; the view's batches keep the named keys: its
``collate_fn`` is the dataset's (which pads each modality as it must) followed by the selection, and every other attribute
(``targets``, ``num_classes``, ``model_kwargs`` ...) is the dataset's.

Shapes: ``({"image": x, "text": t}, y)`` -> ``({"image": x}, y)`` per sample and per batch
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch.utils.data import Dataset, default_collate


class ModalityView(Dataset):
    """The modalities ``keep`` of ``dataset`` (module docstring)."""

    def __init__(self, dataset: Dataset, keep: Sequence[str]) -> None:
        if not keep:
            raise ValueError("a modality view keeps at least one modality")
        self.dataset, self.keep = dataset, tuple(keep)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _select(self, x: Any) -> Any:
        if not isinstance(x, Mapping):
            raise ValueError(f"stage @{'+'.join(self.keep)} keeps modalities of paired samples ({{modality: value}}), "
                             f"but this dataset gives {type(x).__name__}; drop the @ suffix for one-modality data")
        missing = [k for k in self.keep if k not in x]
        if missing:
            raise ValueError(f"the dataset's samples hold modalities {sorted(x)}, not {missing}; fix the stage's "
                             "@modality suffix")
        return {k: x[k] for k in self.keep}

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i]  # whole: the dataset's own collate_fn may expect every modality

    def collate_fn(self, batch: list[Any]) -> Any:
        inner = getattr(self.dataset, "collate_fn", None)
        x, *rest = inner(batch) if inner is not None else default_collate(batch)
        return (self._select(x), *rest)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "keep"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
