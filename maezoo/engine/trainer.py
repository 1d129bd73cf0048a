"""One training engine for every modality's pre-training.

Every system pre-trains through :meth:`Trainer.fit`; a modality brings a model, a dataset (with its own
``collate_fn`` attribute when samples are not tensors, e.g. PyG graphs) and a recipe's ``trainer:`` section.

What it guarantees:
    * Optimisation: ``adamw`` or ``adam``; weight decay off norms/biases/embeddings/tokens (``decay: mae``) or on
      everything (``decay: all``, GraphMAE); the learning rate absolute (``lr``) or per 256 samples (``base_lr``,
      linear scaling rule ``lr = base_lr * batch * accum * world / 256``); schedules ``cosine`` (per step, after a
      linear warm-up), ``constant`` and ``epoch_cosine`` (GraphMAE's per-epoch factor); accumulation, clipping.
    * A run's length in steps (``max_steps``) or epochs (``epochs``; the last partial batch of an epoch is kept
      with ``drop_last: false``).
    * ``precision: auto`` (bf16 only where native) and ``threads: auto`` (free cores; see :mod:`maezoo.runtime`),
      both reported in the run header and ``env.json``; optional ``torch.compile``; a non-finite loss stops the
      run (or skips the step) naming the step.
    * DDP under ``torchrun`` (NCCL or gloo), identical weights on every rank.
    * Exact resume: every random choice of step ``s`` (masks, drop path, augmentation of each sample) is
      seeded from ``(seed, s, rank)`` and the sample index, so a run resumed from any checkpoint ends with
      bit-identical weights to one that never stopped. SIGTERM or SIGINT (to the main process or the whole
      process group, DataLoader workers included: they ignore both) ends the current step, writes a checkpoint,
      prints one line and raises :class:`Interrupted` (exit code 143 or 130). A damaged
      newest checkpoint is reported and the previous complete one used; ``metrics.jsonl`` is cut back to the
      checkpoint's step, so no step is logged twice.
    * Corrupt samples are skipped and counted; the run stops only past ``max_bad_fraction``.

Shapes: the model takes whatever ``input_fn(batch)`` returns (a tensor, a dict of views or modalities, a
PyG batch ...; moved to the device recursively) and returns an object with a ``loss`` tensor and optionally
``losses`` (dict of named terms, each logged). A model with an ``after_optimizer_step(step)`` method has it
called after every update (EMA teachers).
"""

from __future__ import annotations

import copy
import functools
import math
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from maezoo.config import ConfigError, option
from maezoo.data.robust import RobustDataset, collate_skip_bad
from maezoo.engine import checkpoint as ckpt
from maezoo.engine import fsdp
from maezoo.engine.distributed import DistInfo, all_reduce_mean, barrier, init_distributed, wrap_model
from maezoo.engine.logging import MetricsLogger, Progress, update_env
from maezoo.engine.sample_seeding import global_batch_mask
from maezoo.optim import Schedule, build_optimizer, clip_grad, scaled_lr, schedule_lr, set_lr
from maezoo.runtime import resolve_device, resolve_precision, resolve_threads, set_threads, to_device


@dataclass
class TrainerConfig:
    """The ``trainer:`` section of every recipe (the same keys for every modality)."""

    #: length of the run in optimizer steps; when set it wins over ``epochs``
    max_steps: int | None = option(1000, ge=1)
    #: length in epochs (passes over the pre-training set) when ``max_steps`` is null
    epochs: int | None = option(None, ge=1)
    #: per-process micro-batch size
    batch_size: int = option(64, ge=1)
    accum_steps: int = option(1, ge=1)
    #: learning rate per 256 samples (linear scaling rule); ``lr`` overrides it when set
    base_lr: float = option(1.5e-4, gt=0)
    lr: float | None = option(None, gt=0)
    min_lr: float = option(0.0, ge=0)
    schedule: Schedule = "cosine"
    warmup_steps: int = option(100, ge=0)
    #: warm-up in epochs (wins over ``warmup_steps`` when set)
    warmup_epochs: float | None = option(None, ge=0)
    optimizer: Literal["adamw", "adam"] = "adamw"
    weight_decay: float = option(0.05, ge=0)
    #: ``mae``: no decay on norms, biases, position embeddings and tokens; ``all``: decay every parameter
    decay: Literal["mae", "all"] = "mae"
    betas: list[float] = option(default_factory=lambda: [0.9, 0.95])
    clip_grad: float | None = option(None, gt=0)
    #: ``auto``: bf16 where the device runs it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: CPU intra-op threads; ``auto``: the cores free to this process, 1 for small models
    threads: int | Literal["auto"] = "auto"
    compile: bool = False
    #: ``auto``: cuda if available, else cpu
    device: str = "auto"
    #: multi-process strategy under torchrun: ``ddp`` (replicas) or ``fsdp`` (FSDP2: blocks sharded, DCP checkpoints;
    #: see :mod:`maezoo.engine.fsdp`)
    distributed: Literal["ddp", "fsdp"] = "ddp"
    #: with ``fsdp``: recompute each block's activations in the backward pass (less memory, ~1/3 more compute)
    activation_checkpointing: bool = False
    #: reshuffle the pre-training set every epoch (else keep its order)
    shuffle: bool = True
    #: drop the last incomplete batch of each epoch
    drop_last: bool = True
    ckpt_every: int = option(500, ge=1)
    keep_last: int = option(2, ge=1)
    log_every: int = option(20, ge=1)
    num_workers: int = option(2, ge=0)
    #: what to do on a NaN/inf loss: stop with the step number, or skip the update and count it
    nonfinite: Literal["stop", "skip"] = "stop"
    max_bad_fraction: float = option(0.01, ge=0, le=1)
    progress: bool = True
    #: stop after this many steps of *this process* (tests use it to simulate interruption); 0 = off
    stop_after: int = option(0, ge=0)
    #: every rank also writes its final weights to ``rank<r>.safetensors`` (to check DDP replicas agree)
    save_all_ranks: bool = False

    def __post_init__(self) -> None:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set trainer.max_steps or trainer.epochs (the length of the run)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"trainer.betas must be two numbers in [0, 1), got {self.betas}")


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
    #: steps run by this process (``steps - resumed_from`` after a resume)
    steps_this_process: int = 0
    #: pre-training wall time over every process of the run (this one plus those before a resume)
    total_wall_time_s: float = 0.0
    precision: str = "fp32"
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NonFiniteLossError(RuntimeError):
    pass


class BadDataError(RuntimeError):
    pass


class Interrupted(SystemExit):
    """Pre-training stopped by SIGTERM or SIGINT after writing a checkpoint at ``step``.

    A ``SystemExit`` whose code is the shell's ``128 + signal`` (143 for SIGTERM, 130 for SIGINT): left uncaught it
    ends the process with that code and no traceback.
    """

    def __init__(self, signum: int, step: int, run_dir: Path) -> None:
        super().__init__(128 + signum)
        self.signum, self.step, self.run_dir = signum, step, run_dir

    @property
    def message(self) -> str:
        return (f"interrupted by {signal.Signals(self.signum).name} at step {self.step}: checkpoint written; "
                f"continue with `maezoo resume {self.run_dir}`")


#: the signals that stop pre-training with a checkpoint
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def ignore_stop_signals(worker_id: int = 0) -> None:  # noqa: ARG001
    """DataLoader ``worker_init_fn``: a worker ignores SIGTERM/SIGINT sent to the whole process group, so the main
    process can finish its step and write the checkpoint with the workers still serving it."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def step_seed(seed: int, step: int, rank: int, micro: int = 0) -> int:
    return (seed * 1_000_003 + step * 1_009 + micro * 101 + rank) % (2**63 - 1)


class StepBatchSampler:
    """Infinite batch sampler: each global batch of ``W * batch_size`` samples of a per-epoch permutation is cut
    into ``W`` contiguous slices, rank ``r`` taking the ``r``-th (so ``W`` ranks see, together and in order, the
    batches one process with ``W`` times the batch size sees; a short last batch is cut into equal slices).

    Yields lists of ``(index, sample_seed)``; starting at micro-batch ``start`` reproduces exactly the
    batches an uninterrupted run would have drawn from there on.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        self.per_rank = n // world
        self.batches_per_epoch = self.per_rank // batch_size if drop_last else -(-self.per_rank // batch_size)
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"dataset of {n} samples is too small for batch_size {batch_size} x {world} process(es); "
                "lower trainer.batch_size (or set trainer.drop_last=false)"
            )
        self.n, self.bs, self.seed, self.rank, self.world, self.start = n, batch_size, seed, rank, world, start
        self.shuffle = shuffle

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)[: self.per_rank * self.world]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)[: self.per_rank * self.world]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b, epoch, order = self.start, -1, None
        while True:
            e, i = divmod(b, self.batches_per_epoch)
            if e != epoch:
                epoch, order = e, self._epoch_order(e)
            glob = order[i * self.bs * self.world : (i + 1) * self.bs * self.world]
            share = glob.numel() // self.world  # bs, or an equal share of the short last batch
            idx = glob[self.rank * share : (self.rank + 1) * share].tolist()
            yield [(j, (self.seed * 7_919 + epoch) * 1_000_003 + j) for j in idx]
            b += 1


def default_input(batch: Any) -> Any:
    """Samples with labels arrive as ``(x, y)``; pre-training uses ``x`` only. Anything else (a dict of views,
    a PyG batch) is the input as it is."""
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def num_samples(x: Any) -> int:
    """Samples in a model input: a tensor's first dimension, a PyG batch's graphs, a container's first entry."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.dim() else 1
    n = getattr(x, "num_graphs", None)
    if isinstance(n, int):
        return n
    if isinstance(x, dict) and x:
        return num_samples(next(iter(x.values())))
    if isinstance(x, list | tuple) and x:
        return num_samples(x[0])
    return 1


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
        self._signal: int | None = None
        self.precision, self.threads = "fp32", torch.get_num_threads()

    # -- setup -----------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, info: DistInfo, start: int) -> DataLoader:
        cfg = self.cfg
        if hasattr(dataset, "make_loader"):  # a stream (maezoo.data.shards): it builds its own ordered loader
            return dataset.make_loader(info.rank, info.world_size, cfg.batch_size, start, cfg.num_workers,
                                       pin_memory=self.device.type == "cuda", collate=getattr(dataset, "collate_fn", None))
        sampler = StepBatchSampler(len(dataset), cfg.batch_size, self.seed, info.rank, info.world_size, start,  # type: ignore[arg-type]
                                   shuffle=cfg.shuffle, drop_last=cfg.drop_last)
        nw = cfg.num_workers
        collate = functools.partial(collate_skip_bad, collate=getattr(dataset, "collate_fn", None))
        return DataLoader(
            RobustDataset(dataset), batch_sampler=sampler, num_workers=nw, collate_fn=collate,
            pin_memory=self.device.type == "cuda", persistent_workers=nw > 0, prefetch_factor=4 if nw > 0 else None,
            worker_init_fn=ignore_stop_signals if nw > 0 else None,
        )

    def _on_signal(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self._signal = signum

    def plan(self, dataset_len: int, world_size: int = 1, batches_per_epoch: int | None = None) -> tuple[int, int, int]:
        """``(total steps, steps per epoch, warm-up steps)`` of a run over ``dataset_len`` samples (a stream gives
        its ``batches_per_epoch`` per rank)."""
        cfg = self.cfg
        per_rank = dataset_len // world_size
        per_epoch = per_rank // cfg.batch_size if cfg.drop_last else -(-per_rank // cfg.batch_size)
        per_epoch = batches_per_epoch if batches_per_epoch is not None else per_epoch
        steps_per_epoch = max(1, -(-per_epoch // cfg.accum_steps))  # an epoch rounds up to whole optimizer steps
        total = cfg.max_steps if cfg.max_steps is not None else int(cfg.epochs or 1) * steps_per_epoch
        warmup = cfg.warmup_steps if cfg.warmup_epochs is None else int(round(cfg.warmup_epochs * steps_per_epoch))
        return total, steps_per_epoch, warmup

    def configure(self, model: nn.Module, dataset: Dataset | None = None,
                  input_fn: Callable[[Any], Any] = default_input) -> torch.device:
        """Resolve device, precision and threads (``auto``) for ``model``, and set the threads.

        With ``threads: auto`` on a CPU with more than one free core, one training step on a copy of the model
        and the first batch of ``dataset`` is timed with 1 thread and with every free core
        (:func:`maezoo.runtime.resolve_threads`); every random state is restored afterwards, so the run itself is
        unchanged.
        """
        cfg = self.cfg
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        n_params = sum(p.numel() for p in model.parameters())
        probe = self._probe(model, dataset, input_fn) if dataset is not None else None
        state = _rng_state()
        try:
            self.threads = resolve_threads(cfg.threads, n_params, self.device, probe)
        finally:
            _set_rng_state(state)
        set_threads(self.threads)
        return self.device

    def _probe(self, model: nn.Module, dataset: Dataset, input_fn: Callable[[Any], Any]) -> Callable[[], None] | None:
        if self.cfg.threads != "auto" or self.device.type != "cpu":
            return None
        n = min(self.cfg.batch_size, len(dataset))  # type: ignore[arg-type]
        collate = getattr(dataset, "collate_fn", None)
        from torch.utils.data import default_collate

        state = _rng_state()
        try:
            batch = (collate or default_collate)([dataset[i] for i in range(n)])
        except Exception:  # a probe must never stop a run; the fallback rule applies
            return None
        finally:
            _set_rng_state(state)
        x = to_device(input_fn(batch), self.device)
        twins: list[nn.Module] = []

        def step() -> None:
            if not twins:  # copied only when the probe runs (two or more free cores)
                twins.append(copy.deepcopy(model).to(self.device).train())
            twin = twins[0]
            with autocast(self.device, self.precision):
                out = twin(x, generator=torch.Generator().manual_seed(0))
            out.loss.backward()
            twin.zero_grad(set_to_none=True)

        return step

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
        device = self.configure(model, dataset, input_fn)
        info = init_distributed(device)
        if info.is_main:
            ckpt.remove_temporaries(run_dir)
        model = model.to(device)
        sharded = cfg.distributed == "fsdp" and info.enabled
        if sharded:  # before the optimizer, which must hold the sharded parameters
            model = fsdp.shard_model(model, self.precision, cfg.activation_checkpointing)
        eff_batch = cfg.batch_size * cfg.accum_steps * info.world_size
        stream = getattr(dataset, "batches_per_epoch", None)
        total, steps_per_epoch, warmup = self.plan(  # type: ignore[arg-type]
            len(dataset), info.world_size,  # type: ignore[arg-type]
            stream(info.world_size, max(1, cfg.num_workers), cfg.batch_size) if stream is not None else None)
        peak_lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.base_lr, eff_batch)
        opt = build_optimizer(model, peak_lr, cfg.weight_decay, tuple(cfg.betas), name=cfg.optimizer,  # type: ignore[arg-type]
                              decay=cfg.decay)
        scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")

        start_step, resumed_from, prior_wall = 0, None, 0.0
        counters = {"bad": 0, "seen": 0, "skipped": 0}
        if resume:
            if sharded:
                latest = ckpt.latest_checkpoint(run_dir)
                if latest is None:
                    raise FileNotFoundError(f"nothing to resume: no complete checkpoint under {run_dir / ckpt.CKPT_DIR}")
                state = ckpt.load_state(latest)
                fsdp.load_dcp(run_dir, state["dcp"], model, opt)
            else:
                latest, state = ckpt.load_latest_valid(run_dir, model)
            saved = (int(state.get("world_size", info.world_size)), int(state.get("effective_batch", eff_batch)))
            if saved != (info.world_size, eff_batch):
                raise ConfigError(
                    f"{latest} was written by {saved[0]} process(es) with an effective batch of {saved[1]}; this "
                    f"resume has {info.world_size} and {eff_batch}. Resume with the same number of processes and "
                    "trainer.batch_size/accum_steps, or start a new run"
                )
            slots = max(1, cfg.num_workers)
            if stream is not None and int(state.get("data_slots", slots)) != slots:
                raise ConfigError(f"{latest} streamed its shards through {state['data_slots']} loader slot(s) "
                                  f"(trainer.num_workers); resume with trainer.num_workers={state['data_slots']}, "
                                  "which fixes the order of the samples")
            if cfg.threads == "auto" and state.get("threads"):
                # the same thread count as before the interruption: float reductions, and so the weights,
                # then match an uninterrupted run bit for bit
                self.threads = int(state["threads"])
                set_threads(self.threads)
            if not sharded:
                opt.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"]) else state["rng"][0])
            start_step = resumed_from = int(state["step"])
            counters = dict(state["counters"])
            prior_wall = float(counters.pop("wall_s", 0.0))
            if info.is_main:
                print(f"resuming from {latest} (step {start_step}/{total})", flush=True)

        # DDP first, compile around it: the compiler then splits the graph at DDP's bucket boundaries, so the
        # gradient all-reduce overlaps the backward pass (compiling inside DDP loses that overlap)
        train_model = model if sharded else wrap_model(model, info, device, cfg.distributed)
        train_model = torch.compile(train_model) if cfg.compile else train_model
        logger = MetricsLogger(run_dir, enabled=info.is_main, resume_step=start_step if resume else None)
        runtime = {"device": str(device), "precision": self.precision, "precision_setting": cfg.precision,
                   "threads": self.threads, "threads_setting": cfg.threads, "total_steps": total,
                   "steps_per_epoch": steps_per_epoch, "peak_lr": peak_lr, "effective_batch": eff_batch}
        if info.is_main:
            update_env(run_dir, {"runtime": runtime})
            length = f"{total} steps" + (f" ({cfg.epochs} epochs x {steps_per_epoch})" if cfg.max_steps is None else "")
            print(f"pre-training: {length}, batch {eff_batch}, lr {peak_lr:.3g}, device {device}, precision "
                  f"{self.precision} ({cfg.precision}), threads {self.threads} ({cfg.threads})", flush=True)
        progress = Progress(total, start_step, cfg.progress and info.is_main, cfg.log_every)
        self._signal = None
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS} if _main_thread() else {}
        t_start = time.perf_counter()

        def save(step: int) -> None:
            rngs = [_rng_state()]
            if info.enabled:  # every rank's RNG, gathered to rank 0
                gathered: list[Any] = [None] * info.world_size
                torch.distributed.all_gather_object(gathered, rngs[0])
                rngs = gathered
            weights: Any = model
            extra: dict[str, Any] = {}
            if sharded:  # every rank writes its shards (DCP); rank 0 also keeps the full weights
                kept = {int(p.name.split("_")[1]) for p in ckpt.complete_checkpoints(run_dir)[: max(0, cfg.keep_last - 1)]}
                extra["dcp"] = fsdp.save_dcp(run_dir, step, model, opt, kept)
                weights = fsdp.FullWeights(fsdp.full_state(model))
            if info.is_main:
                wall = prior_wall + time.perf_counter() - t_start
                state = {"step": step, "optimizer": {} if sharded else opt.state_dict(), **extra,
                         "scaler": scaler.state_dict(), "rng": rngs,
                         "counters": {**counters, "wall_s": wall}, "world_size": info.world_size,
                         "effective_batch": eff_batch, "threads": self.threads,
                         "data_slots": max(1, cfg.num_workers)}
                ckpt.save_checkpoint(run_dir, step, weights, build_spec, state, cfg.keep_last)
            barrier(info)

        loader = self._loader(dataset, info, start_step * cfg.accum_steps)
        it = iter(loader)
        after_step = getattr(model, "after_optimizer_step", None)
        core = ckpt.unwrap(model)
        wait_total, loss_val, lr, step, done_here = 0.0, float("nan"), peak_lr, start_step, 0
        win_t, win_samples = time.perf_counter(), 0
        interrupted: Interrupted | None = None
        try:
            while step < total:
                lr = schedule_lr(cfg.schedule, step, total, peak_lr, warmup, cfg.min_lr, steps_per_epoch)
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
                    x = to_device(input_fn(batch), device)
                    # masks per sample: the global batch's, drawn alike on every rank (sample_seeding.py)
                    mask_gen = torch.Generator(device=device).manual_seed(step_seed(self.seed, step, 0, micro))
                    mask = global_batch_mask(core, x, mask_gen, info.rank, info.world_size)
                    kw = {"generator": gen} if mask is None else {"generator": gen, "mask": mask}
                    sync = micro == cfg.accum_steps - 1 or not info.enabled
                    with (train_model.no_sync() if not sync and hasattr(train_model, "no_sync") else nullcontext()):
                        with autocast(device, self.precision):
                            out = train_model(x, **kw)
                        loss = out.loss / cfg.accum_steps
                        loss_now = float(loss.detach())  # one host sync per micro-step, shared by guard and log
                        if not math.isfinite(loss_now):
                            finite = False
                        step_total += loss_now
                        scaler.scale(loss).backward()
                    terms = getattr(out, "losses", None) or {}
                    if len(terms) > 1:
                        for k, v in terms.items():
                            step_losses[k] = step_losses.get(k, 0.0) + float(v.detach()) / cfg.accum_steps
                    win_samples += num_samples(x)
                self._check_bad(counters)
                if info.enabled:
                    ok = torch.tensor(1.0 if finite else 0.0, device=device)
                    finite = bool(all_reduce_mean(ok, info).item() == 1.0)
                if not finite:
                    if cfg.nonfinite == "stop":
                        raise NonFiniteLossError(
                            f"non-finite loss at step {step} (loss {step_total}, terms {step_losses}); lower the "
                            "learning rate, set trainer.clip_grad, use trainer.precision=fp32, or "
                            "trainer.nonfinite=skip to skip such steps"
                        )
                    counters["skipped"] += 1
                    opt.zero_grad(set_to_none=True)
                else:
                    scaler.unscale_(opt)
                    clip_grad(model.parameters(), cfg.clip_grad)
                    scaler.step(opt)
                    scaler.update()
                    if after_step is not None:
                        after_step(step)
                    loss_val = step_total  # the optimised total, whatever terms it sums
                step += 1
                done_here += 1
                if step % cfg.log_every == 0 or step == total:
                    if info.enabled:  # the logged loss is the mean over ranks, not rank 0's own
                        loss_val = float(all_reduce_mean(torch.tensor([loss_val], device=device), info).item())
                    now = time.perf_counter()
                    sps = win_samples * info.world_size / max(now - win_t, 1e-9)
                    metrics = {"loss": loss_val, "lr": lr, "samples_per_s": sps,
                               "data_wait_share": wait_total / max(now - t_start, 1e-9)}
                    metrics.update({f"loss_{k}": v for k, v in step_losses.items()})
                    logger.log(step, metrics, prefix="train/")
                    win_t, win_samples = now, 0
                progress.update(step, {"loss": loss_val, "lr": lr})
                for cb in callbacks or []:
                    extra = cb(step, ckpt.unwrap(train_model))
                    if extra:
                        logger.log(step, extra)
                if step % cfg.ckpt_every == 0 or step == total:
                    save(step)
                if self._signal is not None:
                    if step % cfg.ckpt_every and step != total:
                        save(step)
                    interrupted = Interrupted(self._signal, step, run_dir)
                    break
                if cfg.stop_after and done_here >= cfg.stop_after:
                    break
        finally:
            _shut_down(it)
            progress.close()
            logger.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        if interrupted is not None:
            if info.is_main:
                print(interrupted.message, file=sys.stderr, flush=True)
            raise interrupted
        wall = time.perf_counter() - t_start
        final: Any = fsdp.FullWeights(fsdp.full_state(model)) if sharded else model  # a collective under FSDP
        if step == total and info.is_main:
            ckpt.save_model(final, run_dir, build_spec)
        if cfg.save_all_ranks and not sharded:
            from safetensors.torch import save_file

            save_file(ckpt.model_state(model), str(run_dir / f"rank{info.rank}.safetensors"))
        self._check_bad(counters, final=True)
        return TrainSummary(
            steps=step, wall_time_s=wall, samples_per_s=done_here * eff_batch / max(wall, 1e-9),
            data_wait_share=wait_total / max(wall, 1e-9), final_loss=loss_val, lr=peak_lr, effective_batch=eff_batch,
            bad_samples=counters["bad"], seen_samples=counters["seen"], skipped_steps=counters["skipped"],
            resumed_from=resumed_from, steps_this_process=done_here, total_wall_time_s=prior_wall + wall,
            precision=self.precision, threads=self.threads,
        )

    def _check_bad(self, counters: dict[str, int], final: bool = False) -> None:
        bad, seen = counters["bad"], counters["seen"]
        if bad and (final or seen >= 20 * self.cfg.batch_size) and bad > self.cfg.max_bad_fraction * seen:
            raise BadDataError(
                f"{bad} of {seen} samples ({bad / seen:.1%}) failed to load, above trainer.max_bad_fraction="
                f"{self.cfg.max_bad_fraction}; check the dataset files (the warnings above name the first ones)"
            )


def _shut_down(it: Iterator[Any]) -> None:
    """Stop a loader iterator's workers now. Workers ignore SIGTERM, so they must be stopped through the loader
    (torch's ``_shutdown_workers``) before the process exits: an exception's traceback would otherwise keep the
    iterator alive until multiprocessing's exit hook, whose SIGTERM they ignore."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


__all__ = ["BadDataError", "Interrupted", "NonFiniteLossError", "StepBatchSampler", "Trainer", "TrainerConfig", "TrainSummary", "num_samples"]
