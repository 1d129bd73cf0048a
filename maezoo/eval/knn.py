"""Weighted k-nearest-neighbour classification on frozen features (DINO's protocol).

Features are L2-normalised, neighbours are found by cosine similarity, and each of the ``k``
neighbours votes for its class with weight ``exp(sim / T)``. The class scores rank the predictions
for top-1 / top-5. Multi-label data (multi-hot ``[N, C]`` labels): every neighbour votes for each of its
labels, the class scores are the vote-weighted share of neighbours carrying the label, and
:func:`knn_multilabel` reports their ``mAP``.

Shapes:
    train_feats ``[N_train, D]``, train_labels ``[N_train]``, test_feats ``[N_test, D]``,
    test_labels ``[N_test]``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maezoo.core.mae import Pool
from maezoo.eval.features import AmpDtype, extract_features, model_device
from maezoo.eval.metrics import topk_accuracy


@torch.no_grad()
def knn_scores(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> Tensor:
    """Temperature-weighted k-NN class scores.

    Multi-hot ``train_labels`` ``[N_train, C]`` give each class the weighted share of the ``k`` neighbours
    carrying it (``sum_j w_j y_jc / sum_j w_j``, in ``[0, 1]``).

    Shapes:
        returns ``[N_test, C]`` with ``C = num_classes`` (default ``max(train_labels) + 1``, or the label width).
    """
    if train_feats.dim() != 2 or test_feats.dim() != 2:
        raise ValueError(
            f"k-NN expects [N, D] features, got {tuple(train_feats.shape)} and {tuple(test_feats.shape)}"
        )
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"feature sizes differ: train {train_feats.shape[1]}, test {test_feats.shape[1]}")
    if train_labels.shape[0] != train_feats.shape[0]:
        raise ValueError(f"{train_labels.shape[0]} train labels for {train_feats.shape[0]} train features")
    if k < 1 or temperature <= 0 or chunk < 1:
        raise ValueError(f"need k >= 1, temperature > 0, chunk >= 1; got k={k}, T={temperature}, chunk={chunk}")
    dev = train_feats.device
    multi_hot = train_labels.dim() == 2
    train_labels = train_labels.to(dev).float() if multi_hot else train_labels.to(dev).long()
    if multi_hot and num_classes is not None and train_labels.shape[1] != num_classes:
        raise ValueError(f"multi-hot labels have {train_labels.shape[1]} columns, num_classes={num_classes}")
    c = int(num_classes) if num_classes is not None else (
        train_labels.shape[1] if multi_hot else int(train_labels.max()) + 1)
    k = min(k, train_feats.shape[0])
    train_n = F.normalize(train_feats.float(), dim=1).t().contiguous()  # [D, N_train]
    out = []
    for start in range(0, test_feats.shape[0], chunk):
        q = F.normalize(test_feats[start : start + chunk].to(dev).float(), dim=1)  # [b, D]
        sim, idx = (q @ train_n).topk(k, dim=1)  # [b, k]
        neigh = train_labels[idx]  # [b, k]
        weights = (sim / temperature).exp()
        if multi_hot:  # [b, k] x [b, k, C] -> weighted share of neighbours with each label
            out.append(torch.einsum("bk,bkc->bc", weights, train_labels[idx]) / weights.sum(1, keepdim=True))
            continue
        scores = torch.zeros(q.shape[0], c, device=dev, dtype=weights.dtype)
        out.append(scores.scatter_add_(1, neigh, weights))
    return torch.cat(out)


def knn_classify(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> dict[str, float]:
    """Weighted k-NN accuracy: ``{"top1": %, "top5": %}``.

    ``num_classes`` defaults to ``max(train_labels, test_labels) + 1``; ``k`` is capped at the
    number of training samples; ``chunk`` test rows are scored at a time to bound memory.
    """
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores = knn_scores(train_feats, train_labels, test_feats, k, temperature, num_classes, chunk)
    acc = topk_accuracy(scores, test_labels.to(scores.device), (1, 5))
    return {"top1": acc[1], "top5": acc[5]}


def knn_multilabel(
    train_feats: Tensor,
    train_targets: Tensor,
    test_feats: Tensor,
    test_targets: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> dict[str, float]:
    """Weighted k-NN for multi-label data: ``{"mAP": %}`` of the neighbour-vote class scores (see
    :func:`knn_scores`; classes without a positive test example are left out of the average).

    Shapes:
        train_targets ``[N_train, C]`` and test_targets ``[N_test, C]`` multi-hot.
    """
    from maezoo.eval.metrics import mean_average_precision

    if train_targets.dim() != 2 or test_targets.dim() != 2 or train_targets.shape[1] != test_targets.shape[1]:
        raise ValueError(f"multi-label k-NN needs multi-hot [N, C] targets of one width, got "
                         f"{tuple(train_targets.shape)} and {tuple(test_targets.shape)}")
    scores = knn_scores(train_feats, train_targets, test_feats, k, temperature, train_targets.shape[1], chunk)
    return {"mAP": mean_average_precision(scores.cpu(), test_targets.cpu())}


class KNNMonitor:
    """k-NN accuracy on a small held-out subset, every ``every`` steps of pre-training.

    Features are re-extracted on each call (the encoder changes between calls); nothing is cached.
    The model's train/eval mode is restored afterwards. Each result is also appended to ``history``.

    Example::

        monitor = KNNMonitor(train_subset_loader, test_subset_loader, every=500, k=20, pool="cls")
        for step, batch in enumerate(loader):
            ...
            if (r := monitor.maybe_run(model, step)) is not None:
                log({"knn_top1": r["top1"]})
    """

    def __init__(
        self,
        train_loader: Iterable[tuple[Any, Any]],
        test_loader: Iterable[tuple[Any, Any]],
        every: int = 1000,
        k: int = 20,
        pool: Pool = "cls",
        *,
        temperature: float = 0.07,
        num_classes: int | None = None,
        device: torch.device | str | None = None,
        amp_dtype: AmpDtype = None,
        at_step_zero: bool = False,
    ) -> None:
        if every < 1:
            raise ValueError(f"KNNMonitor every must be >= 1, got {every}")
        if pool == "none":
            raise ValueError("KNNMonitor needs pooled features; use pool='cls' or 'mean'")
        self.train_loader, self.test_loader = train_loader, test_loader
        self.every, self.k, self.pool = every, k, pool
        self.temperature, self.num_classes = temperature, num_classes
        self.device, self.amp_dtype = device, amp_dtype
        self.at_step_zero = at_step_zero
        self.history: list[dict[str, float]] = []

    def due(self, step: int) -> bool:
        return step % self.every == 0 and (step > 0 or self.at_step_zero)

    def run(self, model: nn.Module, step: int | None = None) -> dict[str, float]:
        """Extract features now and return ``{"top1", "top5", "time_s"}`` (plus ``"step"`` when given)."""
        t0 = time.perf_counter()
        device = self.device if self.device is not None else model_device(model)
        tr_f, tr_y = extract_features(model, self.train_loader, self.pool, device, self.amp_dtype, to_cpu=False)
        te_f, te_y = extract_features(model, self.test_loader, self.pool, device, self.amp_dtype, to_cpu=False)
        res: dict[str, float] = dict(
            knn_classify(tr_f, tr_y, te_f, te_y, k=self.k, temperature=self.temperature, num_classes=self.num_classes)
        )
        res["time_s"] = time.perf_counter() - t0
        if step is not None:
            res["step"] = float(step)
        self.history.append(res)
        return res

    def maybe_run(self, model: nn.Module, step: int) -> dict[str, float] | None:
        """Run when ``step`` is a positive multiple of ``every`` (or 0 with ``at_step_zero``), else ``None``."""
        return self.run(model, step) if self.due(step) else None
