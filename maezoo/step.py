"""One optimiser step for every training loop in maezoo: pre-training (the engine) and every protocol.

This module sits below both ``maezoo.engine`` and ``maezoo.eval`` (neither imports the other) and is the one
place that back-propagates. An :class:`OptimStep` wraps an optimiser with what every update needs:

* ``autocast()``: the run's precision (``fp32``, ``bf16`` or ``fp16``; ``auto`` is resolved before, once, by
  :func:`maezoo.runtime.resolve_precision`);
* ``backprop(loss)``: back-propagation, through the loss scaler under ``fp16`` (a pass-through otherwise);
* ``update(step, loss)``: the non-finite guard (stop naming the step, or skip the update and count it), then
  unscale, gradient-norm clipping, the optimiser step and the scaler update;
* ``opt_step(loss, step)``: all of it for a loop with one micro-batch per update.

With gradient accumulation a loop calls ``zero_grad()``, ``backprop`` once per micro-batch and ``update`` once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Literal

import torch
from torch import Tensor

from maezoo.optim import clip_grad
from maezoo.runtime import autocast

NonFinite = Literal["stop", "skip"]


class NonFiniteLossError(FloatingPointError):
    """A NaN or infinite loss; the message names the loop, the step and the settings that help."""


class OptimStep:
    """Backward, clipping, optimiser and loss-scaler step, and the non-finite guard of one training loop.

    Args:
        optimizer: the loop's optimiser (its learning rate is the loop's to set).
        precision: ``fp32``, ``bf16`` or ``fp16`` (``fp16`` scales the loss with a ``GradScaler``).
        device: where the model runs (autocast's device type).
        clip_grad: clip the gradient norm of ``params`` to this (None or 0: off).
        params: the parameters whose gradient norm is clipped, in a fixed order (default: the optimiser's).
        nonfinite: ``stop`` raises :class:`NonFiniteLossError`; ``skip`` drops the update and counts it.
        name: the loop, for messages (``pre-training``, ``fine-tuning`` ...).
        hint: what to change when the loss is not finite.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, precision: str = "fp32", device: torch.device | str = "cpu",
                 *, clip_grad: float | None = None, params: Iterable[Tensor] | None = None,
                 nonfinite: NonFinite = "stop", name: str = "training", hint: str = "lower the learning rate") -> None:
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16' (resolve 'auto' with "
                             f"maezoo.runtime.resolve_precision first), got {precision!r}")
        if nonfinite not in ("stop", "skip"):
            raise ValueError(f"nonfinite must be 'stop' or 'skip', got {nonfinite!r}")
        self.optimizer, self.precision, self.device = optimizer, precision, torch.device(device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.clip_grad = clip_grad
        self.params = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        self.nonfinite, self.name, self.hint = nonfinite, name, hint
        #: updates dropped for a non-finite loss (``nonfinite="skip"``)
        self.skipped = 0

    def autocast(self) -> AbstractContextManager:
        """The forward pass's autocast context for this loop's precision."""
        return autocast(self.device, self.precision)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backprop(self, loss: Tensor) -> None:
        """Back-propagate ``loss`` (scaled under fp16), adding to the gradients already there."""
        self.scaler.scale(loss).backward()

    def update(self, step: int, loss: float | None = None, *, finite: bool | None = None, detail: str = "") -> bool:
        """Apply the gradients; returns whether an update was made.

        ``finite`` (default: whether ``loss`` is finite; ``None`` loss: not checked) False stops the run with
        :class:`NonFiniteLossError` naming ``step`` (``nonfinite="stop"``) or drops these gradients
        (``"skip"``, counted in :attr:`skipped`).
        """
        if finite is None:
            finite = loss is None or math.isfinite(loss)
        if not finite:
            if self.nonfinite == "stop":
                where = f"{self.name}: " if self.name else ""
                raise NonFiniteLossError(f"{where}non-finite loss at step {step} (loss {loss}{detail}); {self.hint}")
            self.skipped += 1
            self.zero_grad()
            return False
        self.scaler.unscale_(self.optimizer)
        clip_grad(self.params, self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return True

    def opt_step(self, loss: Tensor, step: int, *, check: bool = True) -> bool:
        """One whole update from one loss: clear the gradients, back-propagate, guard, step.

        ``check`` reads the loss on the host (one synchronisation) to stop on a non-finite value; loops that keep
        the device busy without syncing (the probes on cached features) pass False and check at the end.
        """
        self.zero_grad()
        value = float(loss.detach()) if check else None
        self.backprop(loss)
        return self.update(step, value)


__all__ = ["NonFiniteLossError", "OptimStep"]
