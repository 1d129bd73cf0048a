"""Masked-only reconstruction losses.

Each loss scores every token, then averages over the tokens selected by ``weight`` (``[B, N]``,
1 on masked tokens by default, or any subset such as VideoMAE V2's decoder-side "running cell"
selection). An empty selection gives a loss of 0 with zero gradients, never NaN.

Shapes:
    pred: ``[B, N, P]`` (``[B, N, V]`` logits for ``ce``); a bool ``weight`` first selects its tokens
    (:func:`select_rows`)
    target: ``[B, N, P]`` (``[B, N]`` class indices for ``ce``)
    weight: ``[B, N]`` bool or float
    returns: scalar
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from maezoo.registry import register


def select_rows(pred: Tensor, target: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For a bool ``weight``, only the selected tokens: ``[K, P]``, ``[K, P]`` (or ``[K]``) and ``[K]`` ones.

    Scoring only the selected tokens is the same loss and the same gradients, and skips the work on the
    unselected ones (half of a GraphMAE graph's nodes, a quarter of an MAE image's tokens when the decoder
    predicts every token). It costs one host sync (boolean indexing must learn the count of selected
    tokens). Float weights are returned unchanged.
    """
    if weight.dtype != torch.bool:
        return pred, target, weight
    if weight.shape != pred.shape[: weight.dim()] or weight.shape != target.shape[: weight.dim()]:
        raise ValueError(f"weight {tuple(weight.shape)} must match the leading dims of pred {tuple(pred.shape)} "
                         f"and target {tuple(target.shape)}")
    # index_select rather than boolean indexing: the same rows, and a backward of index_add_ instead of the
    # much slower (on CPU) accumulate-index_put_
    idx = weight.reshape(-1).nonzero().squeeze(1)
    picked = pred.flatten(0, weight.dim() - 1).index_select(0, idx)
    return picked, target.flatten(0, weight.dim() - 1).index_select(0, idx), weight.new_ones(picked.shape[0])


def masked_mean(per_token: Tensor, weight: Tensor) -> Tensor:
    """Weighted mean of ``[B, N]`` per-token losses; 0 (with zero gradients) when the weights sum to 0.

    Unselected tokens never contribute to the value, even when their loss is NaN/inf. The denominator is
    the weight sum itself (not clamped to 1), so fractional weights give a true weighted mean.
    """
    w = weight.to(per_token.dtype)
    selected = w != 0
    total = torch.where(selected, per_token * w, torch.zeros_like(per_token)).sum()
    denom = w.sum()
    return total / torch.where(denom != 0, denom, torch.ones_like(denom))


@register("loss", "mse")
class MaskedMSE:
    """Mean squared error per token (mean over its values), averaged over selected tokens (MAE)."""

    def __call__(self, pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        pred, target, weight = select_rows(pred, target, weight)
        return masked_mean((pred.float() - target.float()).pow(2).mean(-1), weight)


@register("loss", "l1")
class MaskedL1:
    """Mean absolute error per token, averaged over selected tokens (TSFormer)."""

    def __call__(self, pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        pred, target, weight = select_rows(pred, target, weight)
        return masked_mean((pred.float() - target.float()).abs().mean(-1), weight)


@register("loss", "sce")
class ScaledCosineError:
    """GraphMAE's scaled cosine error ``(1 - cos(pred, target)) ** alpha`` per token (``alpha >= 1``)."""

    def __init__(self, alpha: float = 2.0) -> None:
        if alpha < 1:
            raise ValueError(f"scaled cosine error needs alpha >= 1, got {alpha}")
        self.alpha = float(alpha)

    def __call__(self, pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        pred, target, weight = select_rows(pred, target, weight)
        cos = F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)
        return masked_mean((1 - cos).pow(self.alpha), weight)


@register("loss", "ce")
class MaskedCrossEntropy:
    """Cross-entropy over a vocabulary for discrete targets (BERT, BEiT), optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = float(label_smoothing)

    def __call__(self, pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        pred, target, weight = select_rows(pred, target, weight)
        v = pred.shape[-1]
        per_token = F.cross_entropy(
            pred.float().reshape(-1, v), target.reshape(-1).long(), reduction="none",
            label_smoothing=self.label_smoothing,
        )
        return masked_mean(per_token.view(weight.shape), weight)


def build_loss(name: str, **kwargs) -> object:
    from maezoo.registry import build

    return build("loss", name, **kwargs)


__all__ = ["masked_mean", "MaskedMSE", "MaskedL1", "ScaledCosineError", "MaskedCrossEntropy", "build_loss"]
