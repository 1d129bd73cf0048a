"""Frozen-encoder feature extraction for k-NN and linear probing.

Shapes:
    pool ``"cls"`` / ``"mean"``: features ``[N, D]`` (one vector per sample).
    pool ``"none"``: per-token features ``[N, T, D]`` (prefix tokens removed) for dense tasks; with
        ``flatten=True`` they become ``[N * T, D]`` and the labels are flattened to match
        (e.g. node classification, where one graph is a batch of ``T`` nodes with ``[T]`` labels).
    labels: ``[N]`` (``long`` for integer class labels; floating targets such as multi-hot or
        regression values are kept as ``float32``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from maezoo.core.mae import Pool
from maezoo.data.robust import RobustDataset, collate_skip_bad
from maezoo.runtime import AmpDtype, autocast, model_device, resolve_amp_dtype, to_device  # noqa: F401  (re-exported)


def split_xy(batch: Any) -> tuple[Any, Any]:
    """``(input, label)`` of a loader batch: ``(x, y)`` tuples, PyG batches (label ``batch.y``), dicts with
    ``"label"``."""
    if isinstance(batch, list | tuple) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, dict) and "label" in batch:
        return {k: v for k, v in batch.items() if k != "label"}, batch["label"]
    y = getattr(batch, "y", None)
    if y is not None:
        return batch, y
    raise ValueError(f"cannot find labels in a batch of type {type(batch).__name__}: give samples as (x, y) tuples, "
                     "dicts with a 'label' key, or graphs with a `y` attribute")


def make_loader(dataset: Any, batch_size: int, shuffle: bool = False, seed: int = 0, num_workers: int = 0,
                drop_last: bool | None = None) -> Any:
    """A DataLoader using the dataset's own ``collate_fn`` when it has one (graphs).

    A sample that fails to load (a corrupt file) is skipped and counted, as in pre-training: the loader's
    ``skipped`` tells how many, over every worker; the first few are warned about by name.
    """
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(seed)
    counter = _shared_counter()
    collate = functools.partial(_collate_counting, collate=getattr(dataset, "collate_fn", None), counter=counter)
    loader = DataLoader(RobustDataset(dataset), batch_size=batch_size, shuffle=shuffle, generator=g,
                        num_workers=num_workers, drop_last=shuffle if drop_last is None else drop_last,
                        collate_fn=collate)
    loader.skipped_counter = counter  # type: ignore[attr-defined]
    return loader


def _shared_counter() -> Any:
    import multiprocessing as mp

    return mp.Value("i", 0)


def _collate_counting(batch: list[Any], collate: Any, counter: Any) -> Any:
    good, bad = collate_skip_bad(batch, collate)
    if bad:
        with counter.get_lock():
            counter.value += bad
    if good is None:
        raise ValueError(f"every sample of a batch of {len(batch)} failed to load; check the dataset files (the "
                         "warnings above name the first ones)")
    return good


def skipped_samples(loader: Any) -> int:
    """How many samples ``loader`` (from :func:`make_loader`) has skipped as unloadable so far."""
    counter = getattr(loader, "skipped_counter", None)
    return int(counter.value) if counter is not None else 0


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Iterable[tuple[Any, Any]],
    pool: Pool = "cls",
    device: torch.device | str = "cpu",
    amp_dtype: AmpDtype = None,
    *,
    flatten: bool = False,
    max_samples: int | None = None,
    to_cpu: bool = True,
) -> tuple[Tensor, Tensor]:
    """Encode every ``(x, y)`` batch of ``loader`` with ``model.encode(x, pool)`` (no masking).

    The model is put in eval mode for the pass and its previous mode is restored afterwards, so this
    is safe to call in the middle of pre-training. The model is expected to already live on
    ``device``; batches are moved there.

    Args:
        model: a :class:`~maezoo.core.MaskedAutoencoder` (anything with ``encode(x, pool)``).
        loader: yields ``(x, y)``.
        pool: ``"cls"``, ``"mean"`` or ``"none"`` (per-token features).
        amp_dtype: ``None``/``"fp32"`` for full precision, ``"bf16"``/``torch.bfloat16`` etc. for autocast.
        flatten: with ``pool="none"``, return ``[N * T, D]`` features and flattened labels.
        max_samples: stop after this many samples (features are truncated to exactly this many).
        to_cpu: gather the results on the CPU (default) rather than on ``device``.

    Returns:
        ``(features, labels)``: ``float32`` features ``[N, D]`` (``[N, T, D]`` for ``pool="none"``)
        and labels ``[N]`` (see the module docstring for dtypes).
    """
    was_training = model.training
    model.eval()
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    seen = 0
    try:
        for batch in loader:
            x, y = split_xy(batch)
            x = to_device(x, device)
            with autocast(device, amp_dtype):
                f = model.encode(x, pool)
            f = f.float()
            y = torch.as_tensor(y)
            if pool == "none" and flatten:
                f = f.reshape(-1, f.shape[-1])
                y = y.reshape(-1)
            if y.shape[0] != f.shape[0]:
                raise ValueError(
                    f"loader gave {y.shape[0]} labels for {f.shape[0]} feature rows; for per-token labels use "
                    "pool='none' with flatten=True"
                )
            out_dev = "cpu" if to_cpu else f.device
            feats.append(f.to(out_dev))
            labels.append(y.to(out_dev))
            seen += f.shape[0]
            if max_samples is not None and seen >= max_samples:
                break
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("extract_features: the loader yielded no batches")
    if skipped_samples(loader):
        print(f"features: skipped {skipped_samples(loader)} sample(s) that failed to load", flush=True)
    features, targets = torch.cat(feats), torch.cat(labels)
    if max_samples is not None:
        features, targets = features[:max_samples], targets[:max_samples]
    if targets.is_floating_point():
        targets = targets.float()
    else:
        targets = targets.long()
    return features, targets
