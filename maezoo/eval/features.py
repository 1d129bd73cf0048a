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

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from maezoo.core.mae import Pool

AmpDtype = torch.dtype | str | None

_AMP_NAMES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def resolve_amp_dtype(amp: AmpDtype) -> torch.dtype | None:
    """``None``/``"fp32"`` -> ``None``; ``"bf16"``/``"fp16"`` or a ``torch.dtype`` -> that dtype."""
    if amp is None or isinstance(amp, torch.dtype):
        return None if amp in (None, torch.float32) else amp
    if amp in ("fp32", "float32", "none", ""):
        return None
    if amp not in _AMP_NAMES:
        raise ValueError(f"unknown amp setting {amp!r}; use 'bf16', 'fp16', 'fp32' or a torch.dtype")
    return _AMP_NAMES[amp]


def autocast(device: torch.device | str, amp: AmpDtype) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` on ``device``'s type, or a no-op for full precision."""
    dtype = resolve_amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def to_device(x: Any, device: torch.device | str) -> Any:
    """Move a tensor, a container of tensors, or anything with ``.to`` (e.g. a PyG batch) to ``device``."""
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True)
    if hasattr(x, "to"):
        return x.to(device)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(to_device(v, device) for v in x)
    return x


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


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
        for x, y in loader:
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
    features, targets = torch.cat(feats), torch.cat(labels)
    if max_samples is not None:
        features, targets = features[:max_samples], targets[:max_samples]
    if targets.is_floating_point():
        targets = targets.float()
    else:
        targets = targets.long()
    return features, targets
