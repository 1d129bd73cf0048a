"""The one optimiser step (:class:`maezoo.step.OptimStep`) every training loop calls."""

from __future__ import annotations

import pytest
import torch

from maezoo.step import NonFiniteLossError, OptimStep


def _setup(**kw) -> tuple[torch.nn.Parameter, OptimStep]:
    w = torch.nn.Parameter(torch.ones(3))
    return w, OptimStep(torch.optim.SGD([w], lr=1.0), **kw)


def test_one_update_clips_the_gradient_norm():
    w, step = _setup(clip_grad=0.5)
    assert step.opt_step((w * torch.tensor([3.0, 4.0, 0.0])).sum(), step=0)
    torch.testing.assert_close(w.detach(), torch.tensor([1 - 0.3, 1 - 0.4, 1.0]))  # gradient (3, 4, 0) -> norm 0.5


def test_accumulated_micro_batches_add_up():
    w, step = _setup()
    step.zero_grad()
    for k in (1.0, 2.0):
        step.backprop(k * w.sum())
    assert step.update(step=0, loss=3.0)
    torch.testing.assert_close(w.detach(), torch.full((3,), -2.0))


def test_nonfinite_loss_stops_naming_the_loop_and_step_or_is_skipped_and_counted():
    w, step = _setup(name="fine-tuning", hint="lower the lr")
    with pytest.raises(NonFiniteLossError, match=r"fine-tuning: non-finite loss at step 7 \(loss nan\); lower the lr"):
        step.opt_step(w.sum() * float("nan"), step=7)
    assert isinstance(NonFiniteLossError("x"), FloatingPointError)
    w, step = _setup(nonfinite="skip")
    assert not step.opt_step(w.sum() * float("inf"), step=0)
    assert step.skipped == 1 and w.grad is None and torch.equal(w.detach(), torch.ones(3))


def test_precision_must_be_resolved_and_fp16_scales_the_loss():
    with pytest.raises(ValueError, match="resolve_precision"):
        _setup(precision="auto")
    _, step = _setup(precision="fp16", device="cpu")
    assert step.scaler.is_enabled()
    _, step = _setup(precision="bf16")
    assert not step.scaler.is_enabled()
    with step.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
