"""One training engine for every modality's pre-training.

What it guarantees:
    * MAE optimisation: AdamW (0.9, 0.95), wd 0.05 off norms/biases/embeddings/tokens, linear scaling rule
      ``lr = base_lr * batch * accum * world / 256``, warm-up + cosine, accumulation, clipping.
    * bf16/fp16 autocast (CPU too) and optional ``torch.compile``; a non-finite loss stops the run (or skips
      the step) naming the step.
    * DDP/FSDP under ``torchrun`` (NCCL or gloo), identical weights on every rank.
    * Exact resume: every random choice of step ``s`` (masks, drop path, augmentation of each sample) is
      seeded from ``(seed, s, rank)`` and the sample index, so a run resumed from any checkpoint ends with
      bit-identical weights to one that never stopped. SIGTERM writes a checkpoint, then exits.
    * Corrupt samples are skipped and counted; the run stops only past ``max_bad_fraction``.

Shapes: the model takes whatever ``input_fn(batch)`` returns and returns an object with a ``loss``
tensor and optionally ``losses`` (dict of named terms, each logged).
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from maezoo.data.robust import RobustDataset, collate_skip_bad
from maezoo.engine import checkpoint as ckpt
from maezoo.engine.distributed import DistInfo, all_reduce_mean, barrier, init_distributed, wrap_model
from maezoo.engine.logging import MetricsLogger, Progress
from maezoo.engine.optim import build_optimizer, clip_grad, cosine_lr, scaled_lr, set_lr

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    #: per-process micro-batch size
    batch_size: int = 64
    accum_steps: int = 1
    #: learning rate per 256 samples (linear scaling rule); ``lr`` overrides it when set
    base_lr: float = 1.5e-4
    lr: float | None = None
    min_lr: float = 0.0
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    clip_grad: float | None = None
    precision: Precision = "bf16"
    compile: bool = False
    #: ``auto``: cuda if available, else cpu
    device: str = "auto"
    distributed: Literal["ddp", "fsdp"] = "ddp"
    ckpt_every: int = 500
    keep_last: int = 2
    log_every: int = 20
    num_workers: int = 2
    #: what to do on a NaN/inf loss: stop with the step number, or skip the update and count it
    nonfinite: Literal["stop", "skip"] = "stop"
    max_bad_fraction: float = 0.01
    progress: bool = True
    #: stop after this many steps of *this process* (tests use it to simulate interruption); 0 = off
    stop_after: int = 0
    #: every rank also writes its final weights to ``rank<r>.safetensors`` (to check DDP replicas agree)
    save_all_ranks: bool = False


@dataclass
class TrainSummary:
    steps: int
    wall_time_s: float
    samples_per_s: float
    data_wait_share: float
    final_loss: float
    lr: float
    effective_batch: int
    bad_samples: int
    seen_samples: int
    skipped_steps: int
    resumed_from: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NonFiniteLossError(RuntimeError):
    pass


class BadDataError(RuntimeError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: Precision):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def step_seed(seed: int, step: int, rank: int, micro: int = 0) -> int:
    return (seed * 1_000_003 + step * 1_009 + micro * 101 + rank) % (2**63 - 1)


class StepBatchSampler:
    """Infinite batch sampler: rank ``r`` of ``W`` gets a disjoint shard of a per-epoch permutation.

    Yields lists of ``(index, sample_seed)``; starting at micro-batch ``start`` reproduces exactly the
    batches an uninterrupted run would have drawn from there on.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.per_rank = n // world
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"dataset of {n} samples is too small for batch_size {batch_size} x {world} process(es); "
                "lower trainer.batch_size"
            )
        self.n, self.bs, self.seed, self.rank, self.world, self.start = n, batch_size, seed, rank, world, start

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)[self.rank :: self.world][: self.per_rank]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b, epoch, order = self.start, -1, None
        while True:
            e, i = divmod(b, self.batches_per_epoch)
            if e != epoch:
                epoch, order = e, self._epoch_order(e)
            idx = order[i * self.bs : (i + 1) * self.bs].tolist()
            yield [(j, (self.seed * 7_919 + epoch) * 1_000_003 + j) for j in idx]
            b += 1


def default_input(batch: Any) -> Any:
    """Images with labels arrive as ``(x, y)``; pre-training uses ``x`` only."""
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(("MT19937", st["numpy"].numpy().astype(np.uint32), st["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(st["python"]), None))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


class Trainer:
    def __init__(self, cfg: TrainerConfig, seed: int = 0) -> None:
        self.cfg, self.seed = cfg, seed
        self._sigterm = False

    # -- setup -----------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, info: DistInfo, start: int) -> DataLoader:
        sampler = StepBatchSampler(len(dataset), self.cfg.batch_size, self.seed, info.rank, info.world_size, start)  # type: ignore[arg-type]
        nw = self.cfg.num_workers
        return DataLoader(
            RobustDataset(dataset), batch_sampler=sampler, num_workers=nw, collate_fn=collate_skip_bad,
            pin_memory=self.device.type == "cuda", persistent_workers=nw > 0, prefetch_factor=4 if nw > 0 else None,
        )

    def _on_sigterm(self, signum, frame) -> None:  # noqa: ARG002
        self._sigterm = True

    # -- the loop --------------------------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        dataset: Dataset,
        run_dir: str | Path,
        build_spec: dict[str, Any],
        *,
        resume: bool = False,
        input_fn: Callable[[Any], Any] = default_input,
        callbacks: list[Callable[[int, nn.Module], dict[str, float] | None]] | None = None,
    ) -> TrainSummary:
        cfg, run_dir = self.cfg, Path(run_dir)
        self.device = device = resolve_device(cfg.device)
        info = init_distributed(device)
        if cfg.precision == "fp16" and device.type == "cpu":
            raise ValueError("trainer.precision=fp16 is for GPUs; use bf16 (or fp32) on CPU")
        model = model.to(device)
        eff_batch = cfg.batch_size * cfg.accum_steps * info.world_size
        peak_lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.base_lr, eff_batch)
        opt = build_optimizer(model, peak_lr, cfg.weight_decay, tuple(cfg.betas))  # type: ignore[arg-type]
        scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

        start_step, resumed_from = 0, None
        latest = ckpt.latest_checkpoint(run_dir) if resume else None
        if resume and latest is None:
            raise FileNotFoundError(f"nothing to resume: no complete checkpoint under {run_dir / ckpt.CKPT_DIR}")
        if latest is not None:
            state = ckpt.load_state(latest)
            ckpt.load_weights_into(model, latest)
            opt.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"]) else state["rng"][0])
            start_step = resumed_from = int(state["step"])
            counters = state["counters"]
        else:
            counters = {"bad": 0, "seen": 0, "skipped": 0}

        train_model = torch.compile(model) if cfg.compile else model
        train_model = wrap_model(train_model, info, device, cfg.distributed)
        logger = MetricsLogger(run_dir, enabled=info.is_main)
        progress = Progress(cfg.max_steps, start_step, cfg.progress and info.is_main, cfg.log_every)
        old_handler = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None

        def save(step: int) -> None:
            rngs = [_rng_state()]
            if info.enabled:  # every rank's RNG, gathered to rank 0
                gathered: list[Any] = [None] * info.world_size
                torch.distributed.all_gather_object(gathered, rngs[0])
                rngs = gathered
            if info.is_main:
                state = {"step": step, "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                         "counters": dict(counters), "world_size": info.world_size, "effective_batch": eff_batch}
                ckpt.save_checkpoint(run_dir, step, model, build_spec, state, cfg.keep_last)
            barrier(info)

        loader = self._loader(dataset, info, start_step * cfg.accum_steps)
        it = iter(loader)
        t_start = time.perf_counter()
        wait_total, loss_val, lr, step, done_here = 0.0, float("nan"), peak_lr, start_step, 0
        win_t, win_samples = time.perf_counter(), 0
        try:
            while step < cfg.max_steps:
                lr = cosine_lr(step, cfg.max_steps, peak_lr, cfg.warmup_steps, cfg.min_lr)
                set_lr(opt, lr)
                opt.zero_grad(set_to_none=True)
                step_losses: dict[str, float] = {}
                step_total = 0.0
                finite = True
                for micro in range(cfg.accum_steps):
                    t0 = time.perf_counter()
                    batch, n_bad = next(it)
                    wait_total += time.perf_counter() - t0
                    counters["bad"] += n_bad
                    counters["seen"] += cfg.batch_size
                    if batch is None:
                        finite = False
                        continue
                    s = step_seed(self.seed, step, info.rank, micro)
                    torch.manual_seed(s)
                    gen = torch.Generator(device=device).manual_seed(s)
                    x = _to_device(input_fn(batch), device)
                    sync = micro == cfg.accum_steps - 1 or not info.enabled
                    with (train_model.no_sync() if not sync and hasattr(train_model, "no_sync") else nullcontext()):
                        with autocast(device, cfg.precision):
                            out = train_model(x, generator=gen)
                        loss = out.loss / cfg.accum_steps
                        loss_now = float(loss.detach())  # one host sync per micro-step, shared by guard and log
                        if not math.isfinite(loss_now):
                            finite = False
                        step_total += loss_now
                        scaler.scale(loss).backward()
                    for k, v in getattr(out, "losses", {"loss": out.loss}).items():
                        step_losses[k] = step_losses.get(k, 0.0) + float(v.detach()) / cfg.accum_steps
                    win_samples += len(x) if isinstance(x, torch.Tensor) else 1
                self._check_bad(counters)
                ok = torch.tensor(1.0 if finite else 0.0, device=device)
                finite = bool(all_reduce_mean(ok, info).item() == 1.0)
                if not finite:
                    if cfg.nonfinite == "stop":
                        raise NonFiniteLossError(
                            f"non-finite loss at step {step} (losses {step_losses}); lower the learning rate, set "
                            "trainer.clip_grad, use trainer.precision=fp32, or trainer.nonfinite=skip to skip such steps"
                        )
                    counters["skipped"] += 1
                    opt.zero_grad(set_to_none=True)
                else:
                    scaler.unscale_(opt)
                    clip_grad(model.parameters(), cfg.clip_grad)
                    scaler.step(opt)
                    scaler.update()
                    loss_val = step_total  # the optimised total, whatever terms it sums
                step += 1
                done_here += 1
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    now = time.perf_counter()
                    sps = win_samples * info.world_size / max(now - win_t, 1e-9)
                    metrics = {"loss": loss_val, "lr": lr, "samples_per_s": sps,
                               "data_wait_share": wait_total / max(now - t_start, 1e-9)}
                    metrics.update({f"loss_{k}": v for k, v in step_losses.items() if len(step_losses) > 1})
                    logger.log(step, metrics, prefix="train/")
                    win_t, win_samples = now, 0
                progress.update(step, {"loss": loss_val, "lr": lr})
                for cb in callbacks or []:
                    extra = cb(step, ckpt.unwrap(train_model))
                    if extra:
                        logger.log(step, extra)
                if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
                    save(step)
                if self._sigterm:
                    if step % cfg.ckpt_every:
                        save(step)
                    print(f"SIGTERM: checkpoint written at step {step}; continue with `maezoo resume {run_dir}`", flush=True)
                    raise SystemExit(143)
                if cfg.stop_after and done_here >= cfg.stop_after:
                    break
        finally:
            progress.close()
            logger.close()
            if old_handler is not None:
                signal.signal(signal.SIGTERM, old_handler)
        wall = time.perf_counter() - t_start
        if step == cfg.max_steps and info.is_main:
            ckpt.save_model(model, run_dir, build_spec)
        if cfg.save_all_ranks:
            from safetensors.torch import save_file

            save_file(ckpt.model_state(model), str(run_dir / f"rank{info.rank}.safetensors"))
        self._check_bad(counters, final=True)
        return TrainSummary(
            steps=step, wall_time_s=wall, samples_per_s=done_here * eff_batch / max(wall, 1e-9),
            data_wait_share=wait_total / max(wall, 1e-9), final_loss=loss_val, lr=peak_lr, effective_batch=eff_batch,
            bad_samples=counters["bad"], seen_samples=counters["seen"], skipped_steps=counters["skipped"],
            resumed_from=resumed_from,
        )

    def _check_bad(self, counters: dict[str, int], final: bool = False) -> None:
        bad, seen = counters["bad"], counters["seen"]
        if bad and (final or seen >= 20 * self.cfg.batch_size) and bad > self.cfg.max_bad_fraction * seen:
            raise BadDataError(
                f"{bad} of {seen} samples ({bad / seen:.1%}) failed to load, above trainer.max_bad_fraction="
                f"{self.cfg.max_bad_fraction}; check the dataset files (the warnings above name the first ones)"
            )


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if hasattr(x, "to"):
        return x.to(device)
    return x


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


__all__ = ["Trainer", "TrainerConfig", "TrainSummary", "NonFiniteLossError", "BadDataError", "StepBatchSampler"]
