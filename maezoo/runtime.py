"""Where and how tensors run: device, precision, CPU threads, autocast and device transfer.

Shared by the engine and the protocols (neither imports the other), so that pre-training and evaluation
choose precision and threads by the same rules.

* ``precision="auto"``: bf16 only where the device runs it natively and faster — CUDA devices that support
  bf16, CPUs with AVX512-BF16 or AMX — fp32 otherwise. On an AVX2-only CPU bf16 is emulated (a bf16 matrix
  product ran at 0.9 GFLOP/s against 133 in fp32), so ``auto`` never picks it there.
* ``threads="auto"``: as many intra-op threads as cores are free to this process right now (its CPU
  affinity, less the load other processes put on it, sampled over 0.2 s), capped for small models: two
  OpenMP threads on a small model wait on each other when one core is taken (the demo ran 50x slower).
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

Precision = Literal["auto", "fp32", "bf16", "fp16"]
AmpDtype = torch.dtype | str | None

_AMP_NAMES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the local CUDA device when there is one (``LOCAL_RANK`` under torchrun), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX-BF16 instructions (bf16 matrix products faster than fp32)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return torch.backends.cpu.get_cpu_capability().upper().startswith("AMX")


def resolve_precision(precision: str, device: torch.device | str) -> Literal["fp32", "bf16", "fp16"]:
    """The precision a run uses: ``auto`` picks bf16 only where it is native (see the module docstring)."""
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device.type == "cpu":
            return "bf16" if cpu_has_native_bf16() else "fp32"
        return "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 is for GPUs; use bf16 (or fp32, or auto) on CPU")
    return precision  # type: ignore[return-value]


def resolve_amp_dtype(amp: AmpDtype) -> torch.dtype | None:
    """``None``/``"fp32"`` -> ``None``; ``"bf16"``/``"fp16"`` or a ``torch.dtype`` -> that dtype."""
    if amp is None or isinstance(amp, torch.dtype):
        return None if amp in (None, torch.float32) else amp
    if amp in ("fp32", "float32", "none", ""):
        return None
    if amp not in _AMP_NAMES:
        raise ValueError(f"unknown amp setting {amp!r}; use 'bf16', 'fp16', 'fp32' or a torch.dtype")
    return _AMP_NAMES[amp]


def autocast(device: torch.device | str, precision: AmpDtype) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``precision`` (``fp32``/``bf16``/``fp16`` or a dtype; ``auto`` resolved before, by
    :func:`resolve_precision`) on ``device``'s type, or a no-op for full precision. The one autocast helper of
    pre-training, the protocols and feature extraction."""
    if precision == "auto":
        raise ValueError("autocast needs a resolved precision; call maezoo.runtime.resolve_precision first")
    dtype = resolve_amp_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def to_device(x: Any, device: torch.device | str) -> Any:
    """Move a tensor, a dict/list/tuple of them (recursively), or anything with ``.to`` (a PyG batch)."""
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(to_device(v, device) for v in x)
    if hasattr(x, "to"):
        # PyG's Data.to moves the object in place; move a shallow copy so a dataset's cached graph stays put
        return copy.copy(x).to(device)
    return x


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# -- threads ------------------------------------------------------------------------------------------------
#: below this many parameters a model gets one thread: its per-op work is too small to split across cores
SMALL_MODEL_PARAMS = 2_000_000


def _cpu_times() -> tuple[float, float] | None:
    try:
        with open("/proc/stat") as f:
            vals = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
    return idle, sum(vals)


def _own_cpu_seconds() -> float | None:
    """CPU seconds this process has used (every thread, OpenMP's spinning workers included)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def free_cores(sample_s: float = 0.2) -> int:
    """Cores free to this process now: its affinity, less the cores *other* processes keep busy.

    The CPU time of this process itself during the sample (its OpenMP threads still spinning after the last
    parallel op, a logging thread) is not counted as load: counting it made ``auto`` flip between 1 and 2
    threads on a quiet 2-core machine.
    """
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:
        allowed = os.cpu_count() or 1
    total = os.cpu_count() or allowed
    a, own_a = _cpu_times(), _own_cpu_seconds()
    if a is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    else:
        time.sleep(sample_s)
        b, own_b = _cpu_times(), _own_cpu_seconds()
        if b is None or b[1] <= a[1]:
            return allowed
        busy = total * (1.0 - (b[0] - a[0]) / (b[1] - a[1]))
        if own_a is not None and own_b is not None:
            elapsed = (b[1] - a[1]) / total / os.sysconf("SC_CLK_TCK")  # wall seconds the sample covered
            busy -= (own_b - own_a) / max(elapsed, 1e-9)
    # a core counts as taken when another process keeps it more than half busy
    return max(1, min(allowed, int(allowed - max(busy, 0.0) + 0.5)))


def resolve_threads(threads: int | str, num_params: int | None = None, device: torch.device | str = "cpu",
                    probe: Callable[[], Any] | None = None) -> int:
    """Intra-op threads for a run: an explicit count, or ``auto``.

    ``auto`` on a CPU: the cores free to this process now (:func:`free_cores`); when that is more than one and
    ``probe`` (one training step on a copy of the model) is given, the step is timed with 1 thread and with all
    free cores, interleaved, and more threads are chosen only when they win clearly (:func:`more_threads_pay`): the work per step, not the
    parameter count, decides whether splitting it pays (a 1.5M-parameter GraphMAE on Cora is large work; a
    1M-parameter ViT on 16x16 digits is not). Without a probe, models under :data:`SMALL_MODEL_PARAMS` get 1.
    """
    if threads != "auto":
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer or 'auto', got {threads!r}")
        return threads
    if torch.device(device).type != "cpu":
        return max(1, min(4, free_cores(0.0)))  # the host only feeds the device
    free = free_cores()
    if free == 1:
        return 1
    if probe is None:
        return 1 if num_params is not None and num_params < SMALL_MODEL_PARAMS else free
    timings = time_threads(probe, (1, free))
    return free if more_threads_pay(timings[1], timings[free]) else 1


def more_threads_pay(one: list[float], many: list[float]) -> bool:
    """Whether the step timed with more threads (``many``) beats one thread (``one``), repeat by repeat.

    The risk is lopsided: on a busy core extra OpenMP threads wait on each other (a step ran 15x slower), while one
    thread on a quiet machine loses ~25%. So more threads must win at least 4 of every 5 interleaved pairs and save
    at least 10% at the median; a lucky repeat while another process pauses does not decide.
    """
    wins = sum(m < o for o, m in zip(one, many, strict=True))
    med = statistics.median
    return wins >= 0.8 * len(one) and med(many) < 0.9 * med(one)


def time_threads(step: Callable[[], Any], counts: tuple[int, ...], repeats: int = 5) -> dict[int, list[float]]:
    """Seconds of ``step()`` for each intra-op thread count, ``repeats`` times, interleaved after one warm-up each
    (so a load change hits every count alike)."""
    prev = torch.get_num_threads()
    times: dict[int, list[float]] = {n: [] for n in counts}
    try:
        for n in counts:
            set_threads(n)
            step()
        for _ in range(repeats):
            for n in counts:
                set_threads(n)
                t0 = time.perf_counter()
                step()
                times[n].append(time.perf_counter() - t0)
    finally:
        set_threads(prev)
    return times


def set_threads(n: int) -> int:
    """Set torch's intra-op threads to ``n``; returns the previous count."""
    prev = torch.get_num_threads()
    if n != prev:
        torch.set_num_threads(n)
    return prev


__all__ = [
    "AmpDtype", "Precision", "autocast", "cpu_has_native_bf16", "free_cores", "model_device", "resolve_amp_dtype",
    "resolve_device", "resolve_precision", "resolve_threads", "set_threads", "to_device",
]
