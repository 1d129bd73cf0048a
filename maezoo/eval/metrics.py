"""Downstream metrics, registered as kind ``"metric"``.

Each metric is a plain function ``(pred, target) -> float`` that accepts tensors or NumPy arrays and
carries a ``higher_is_better`` attribute (also available through :func:`higher_is_better`), which
``results.json`` records next to the value::

    from maezoo.registry import get
    top1 = get("metric", "top1")
    top1(logits, labels), top1.higher_is_better   # 87.5, True

Conventions: classification metrics (``top1``, ``top5``, ``accuracy``, ``mAP``) are percentages in
``[0, 100]``; regression metrics (``mse``, ``mae``) are in the target's units.

Shapes:
    top1 / top5: logits or scores ``[N, C]``; target class indices ``[N]`` (or one-hot/soft ``[N, C]``,
        reduced with ``argmax``).
    accuracy: logits ``[N, C]`` or predicted labels ``[N]``; target ``[N]``; entries with target ``< 0``
        (e.g. ``-100``, unlabelled nodes) are ignored.
    mAP: scores ``[N, C]``; multi-hot target ``[N, C]``.
    mse / mae: any shape, ``pred.shape == target.shape``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from maezoo.registry import get, register

MetricFn = Callable[[Any, Any], float]


def metric(name: str, higher_is_better: bool = True) -> Callable[[MetricFn], MetricFn]:
    """Decorator: register ``fn`` as metric ``name`` and tag it with ``higher_is_better``."""

    def deco(fn: MetricFn) -> MetricFn:
        fn.higher_is_better = higher_is_better  # type: ignore[attr-defined]
        fn.metric_name = name  # type: ignore[attr-defined]
        return register("metric", name, fn)

    return deco


def higher_is_better(name: str) -> bool:
    """Whether a larger value of the registered metric ``name`` is better."""
    return bool(getattr(get("metric", name), "higher_is_better", True))


def _tensor(a: Any) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach()
    return torch.as_tensor(np.asarray(a))


def _class_targets(target: Tensor) -> Tensor:
    return target.argmax(dim=-1) if target.dim() == 2 else target.reshape(-1)


def topk_accuracy(logits: Any, target: Any, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracies (percent) for every ``k`` in ``ks`` with a single ``topk`` call.

    ``k`` larger than the number of classes counts every sample as correct.

    Shapes:
        logits ``[N, C]``; target ``[N]`` class indices or ``[N, C]`` one-hot/soft labels.
    """
    logits, target = _tensor(logits), _tensor(target)
    if logits.dim() != 2:
        raise ValueError(f"top-k accuracy expects [N, C] logits, got shape {tuple(logits.shape)}")
    target = _class_targets(target).to(logits.device)
    n = target.shape[0]
    if n == 0:
        raise ValueError("top-k accuracy of an empty set is undefined")
    if logits.shape[0] != n:
        raise ValueError(f"logits have {logits.shape[0]} rows but target has {n}")
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices  # [N, kmax]
    hit = pred.eq(target.view(-1, 1))  # [N, kmax]
    return {k: 100.0 * hit[:, : min(k, kmax)].any(dim=1).float().mean().item() for k in ks}


@metric("top1")
def top1(logits: Any, target: Any) -> float:
    """Top-1 accuracy in percent."""
    return topk_accuracy(logits, target, (1,))[1]


@metric("top5")
def top5(logits: Any, target: Any) -> float:
    """Top-5 accuracy in percent (100 when there are at most 5 classes)."""
    return topk_accuracy(logits, target, (5,))[5]


@metric("accuracy")
def accuracy(pred: Any, target: Any) -> float:
    """Accuracy in percent for node/sample classification; targets ``< 0`` are ignored."""
    pred, target = _tensor(pred), _tensor(target)
    labels = pred.argmax(dim=-1) if pred.is_floating_point() and pred.dim() >= 2 else pred
    labels, target = labels.reshape(-1), target.reshape(-1).to(labels.device)
    keep = target >= 0
    if not bool(keep.any()):
        raise ValueError("accuracy: no labelled entries (every target is negative)")
    return 100.0 * labels[keep].eq(target[keep]).float().mean().item()


@metric("mAP")
def mean_average_precision(scores: Any, target: Any) -> float:
    """Macro mean average precision (percent) for multi-label data, as sklearn's
    ``average_precision_score(average="macro")``; classes without any positive are skipped."""
    from sklearn.metrics import average_precision_score

    s = _tensor(scores).float().cpu().numpy()
    t = _tensor(target).cpu().numpy()
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"mAP expects scores and multi-hot targets of the same [N, C] shape, got {s.shape}, {t.shape}")
    t = (t > 0.5).astype(np.int64)
    present = t.sum(axis=0) > 0
    if not present.any():
        raise ValueError("mAP: no class has a positive example")
    return 100.0 * float(average_precision_score(t[:, present], s[:, present], average="macro"))


@metric("mse", higher_is_better=False)
def mse(pred: Any, target: Any) -> float:
    """Mean squared error (forecasting, regression)."""
    pred, target = _tensor(pred).double(), _tensor(target).double()
    if pred.shape != target.shape:
        raise ValueError(f"mse: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
    return (pred - target.to(pred.device)).pow(2).mean().item()


@metric("mae", higher_is_better=False)
def mae(pred: Any, target: Any) -> float:
    """Mean absolute error (forecasting, regression)."""
    pred, target = _tensor(pred).double(), _tensor(target).double()
    if pred.shape != target.shape:
        raise ValueError(f"mae: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
    return (pred - target.to(pred.device)).abs().mean().item()
