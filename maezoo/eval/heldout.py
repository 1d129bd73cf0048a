"""The pre-training objective on held-out data, at fixed masks, during pre-training (a Trainer callback).

Every ``every`` steps the model scores a fixed held-out subset with masks drawn from a fixed seed per batch, in
eval mode (replace mode's hidden tokens are all the mask token). It reports the held-out ``loss``; for discrete
targets (token ids, e.g. BERT) also the masked-token accuracy ``masked_acc`` (percent of hidden tokens whose top
prediction is the true one) and the ``perplexity`` (``exp`` of the mean cross-entropy).

Shapes:
    model(x) -> MAEOutput with pred ``[B, K, V]`` logits and target ``[B, K]`` ids (``K``: hidden rows, or all
    rows with ``target_mask``)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from maezoo.eval.features import split_xy
from maezoo.runtime import model_device, to_device


def _scored(out: Any) -> Tensor:
    """``[B, K]`` bool: the rows of ``out.pred`` the loss scored."""
    mask = out.mask
    if tuple(out.pred.shape[:2]) == tuple(mask.ids_masked.shape):
        return mask.masked_valid if mask.masked_valid is not None else torch.ones_like(mask.ids_masked, dtype=torch.bool)
    if out.target_mask is not None and tuple(out.pred.shape[:2]) == tuple(out.target_mask.shape):
        return out.target_mask
    return torch.ones(out.pred.shape[:2], dtype=torch.bool, device=out.pred.device)


@torch.no_grad()
def heldout_metrics(model: nn.Module, batches: Iterable[Any], seed: int = 0) -> dict[str, float]:
    """Mean loss over the scored tokens of every batch, plus ``masked_acc``/``perplexity`` for id targets."""
    was = model.training
    model.eval()
    device = model_device(model)
    loss_sum, count, hits, discrete = 0.0, 0, 0, True
    try:
        for i, batch in enumerate(batches):
            x = to_device(split_xy(batch)[0] if isinstance(batch, list | tuple) else batch, device)
            out = model(x, generator=torch.Generator(device=device).manual_seed(seed * 1_000_003 + i))
            scored = _scored(out)
            n = int(scored.sum())
            loss_sum += float(out.loss) * n
            count += n
            if out.target.is_floating_point() or out.pred.dim() != out.target.dim() + 1:
                discrete = False
                continue
            hits += int(((out.pred.argmax(-1) == out.target) & scored).sum())
    finally:
        model.train(was)
    loss = loss_sum / max(count, 1)
    res = {"loss": loss, "tokens": float(count)}
    if discrete:
        res.update(masked_acc=100.0 * hits / max(count, 1), perplexity=math.exp(min(loss, 50.0)))
    return res


class HeldoutMonitor:
    """Runs :func:`heldout_metrics` on ``loader`` every ``every`` steps (and keeps the history)."""

    def __init__(self, loader: Iterable[Any], every: int, seed: int = 0) -> None:
        self.loader, self.every, self.seed = loader, int(every), seed
        self.history: list[dict[str, float]] = []

    def maybe_run(self, model: nn.Module, step: int) -> dict[str, float] | None:
        if step <= 0 or step % self.every:
            return None
        t0 = time.perf_counter()
        res = heldout_metrics(model, self.loader, self.seed)
        res.update(step=float(step), time_s=time.perf_counter() - t0)
        self.history.append(res)
        shown = "  ".join(f"{k} {res[k]:.3f}" for k in ("loss", "masked_acc", "perplexity") if k in res)
        print(f"held-out @ step {step}: {shown}", flush=True)
        return res


__all__ = ["HeldoutMonitor", "heldout_metrics"]
