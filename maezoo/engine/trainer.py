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
      seeded from ``(seed, s, rank)`` and the sample index (masks from ``(seed, s)`` and the sample's place in the
      global batch, so any number of ranks draws the masks one process draws), so a run resumed from any checkpoint ends with
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
import dataclasses
import functools
import math
import random
import signal
import sys
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

from maezoo.config import ConfigError, option
from maezoo.data.robust import RobustDataset, collate_counted
from maezoo.engine import checkpoint as ckpt
from maezoo.engine import fsdp, meta_init
from maezoo.engine.distributed import DistInfo, all_reduce_mean, barrier, init_distributed, wrap_model
from maezoo.engine.logging import MetricsLogger, Progress, update_env
from maezoo.engine.sample_seeding import global_batch_mask
from maezoo.optim import Schedule, build_optimizer, scaled_lr, schedule_lr, set_lr
from maezoo.runtime import resolve_device, resolve_precision, resolve_threads, set_threads, to_device
from maezoo.step import NonFiniteLossError, OptimStep


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
    #: build the model on the meta device, shard it (``fsdp``), then fill each rank's shards with the values the
    #: normal build gives at the run's seed (:mod:`maezoo.engine.meta_init`): no rank ever holds the full model
    meta_init: bool = False
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


#: what to change when pre-training meets a NaN/inf loss
NONFINITE_HINT = ("lower the learning rate, set trainer.clip_grad, use trainer.precision=fp32, or trainer.nonfinite=skip "
                  "to skip such steps")
Callback = Callable[[int, nn.Module], "dict[str, float] | None"]


@dataclass
class _Run:
    """The state of one :meth:`Trainer.fit` call, shared by its phases."""

    model: nn.Module
    train_model: nn.Module  # ``model`` under the DDP and compile wrappers
    run_dir: Path
    build_spec: dict[str, Any]
    info: DistInfo
    device: torch.device
    stepper: OptimStep
    total: int
    steps_per_epoch: int
    warmup: int
    peak_lr: float
    eff_batch: int
    input_fn: Callable[[Any], Any]
    callbacks: list[Callback]
    after_step: Callable[[int], Any] | None
    lr: float
    logger: MetricsLogger | None = None
    progress: Progress | None = None
    start_step: int = 0
    step: int = 0
    done_here: int = 0
    resumed_from: int | None = None
    prior_wall: float = 0.0
    counters: dict[str, int] = field(default_factory=lambda: {"bad": 0, "seen": 0, "skipped": 0})
    step_losses: dict[str, float] = field(default_factory=dict)
    loss_val: float = float("nan")
    t_start: float = 0.0
    wait_total: float = 0.0
    win_t: float = 0.0
    win_samples: int = 0
    #: FSDP2 (``trainer.distributed: fsdp`` under torchrun): blocks sharded, DCP checkpoints
    sharded: bool = False
    #: the dataset is a stream of shards (``maezoo.data.shards``): its loader slots fix the sample order
    stream: bool = False
    #: checkpoints through DCP (``trainer.distributed: fsdp``, on one process too): resumable on another rank count
    dcp: bool = False


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
        collate = functools.partial(collate_counted, collate=getattr(dataset, "collate_fn", None))
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
        if self.cfg.threads != "auto" or self.device.type != "cpu" or meta_init.is_meta(model):
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
        twins: list[tuple[nn.Module, OptimStep]] = []

        def step() -> None:
            if not twins:  # copied only when the probe runs (two or more free cores)
                twin = copy.deepcopy(model).to(self.device).train()
                twins.append((twin, OptimStep(torch.optim.SGD(twin.parameters(), lr=0.0), self.precision, self.device)))
            twin, stepper = twins[0]
            with stepper.autocast():
                out = twin(x, generator=torch.Generator().manual_seed(0))
            stepper.backprop(out.loss)  # forward and backward timed; the optimiser's share does not decide threads
            stepper.zero_grad()

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
        """Pre-train ``model`` on ``dataset`` into ``run_dir`` (from its newest checkpoint with ``resume``).

        Phases: :meth:`_setup` (device, plan, optimiser), :meth:`_restore` (resume), :meth:`_start` (wrapping,
        logging, header), then per step :meth:`_step`, :meth:`_log`, callbacks and :meth:`_save`, and finally
        the weights and the summary.
        """
        run = self._setup(model, dataset, Path(run_dir), build_spec, input_fn, callbacks or [], resume)
        if resume:
            self._restore(run)
        self._start(run, resume)
        interrupted = self._loop(run, dataset)
        wall = time.perf_counter() - run.t_start
        if interrupted is not None:
            if run.info.is_main:
                print(interrupted.message, file=sys.stderr, flush=True)
            raise interrupted
        self._finish(run)
        return self._summary(run, wall)

    def _setup(self, model: nn.Module, dataset: Dataset, run_dir: Path, build_spec: dict[str, Any],
               input_fn: Callable[[Any], Any], callbacks: list[Callback], resume: bool = False) -> _Run:
        """Device, precision and threads; DDP; the plan of the run; the optimiser and its step helper."""
        device = self.configure(model, dataset, input_fn)
        info = init_distributed(device)
        if resume:
            self._rescale_batch(run_dir, info)
        cfg = self.cfg
        if info.is_main:
            ckpt.remove_temporaries(run_dir)
        sharded = cfg.distributed == "fsdp" and info.enabled
        record = self._meta(model, build_spec) if cfg.meta_init or meta_init.is_meta(model) else None
        model = model if record is not None else model.to(device)
        if sharded:  # before the optimizer, which must hold the sharded parameters
            model = fsdp.shard_model(model, self.precision, cfg.activation_checkpointing)
        if record is not None:  # every rank fills its own shards (the whole model without fsdp)
            meta_init.materialize(model, device, record)
        eff_batch = cfg.batch_size * cfg.accum_steps * info.world_size
        stream = getattr(dataset, "batches_per_epoch", None)
        total, steps_per_epoch, warmup = self.plan(  # type: ignore[arg-type]
            len(dataset), info.world_size,  # type: ignore[arg-type]
            stream(info.world_size, max(1, cfg.num_workers), cfg.batch_size) if stream is not None else None)
        peak_lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.base_lr, eff_batch)
        opt = build_optimizer(model, peak_lr, cfg.weight_decay, tuple(cfg.betas), name=cfg.optimizer,  # type: ignore[arg-type]
                              decay=cfg.decay)
        stepper = OptimStep(opt, self.precision, device, clip_grad=cfg.clip_grad, params=model.parameters(),
                            nonfinite=cfg.nonfinite, name="", hint=NONFINITE_HINT)
        return _Run(model=model, train_model=model, run_dir=run_dir, build_spec=build_spec, info=info,
                    device=device, stepper=stepper, total=total, steps_per_epoch=steps_per_epoch, warmup=warmup,
                    peak_lr=peak_lr, eff_batch=eff_batch, input_fn=input_fn, callbacks=callbacks, lr=peak_lr,
                    after_step=getattr(model, "after_optimizer_step", None), sharded=sharded,
                    stream=stream is not None, dcp=cfg.distributed == "fsdp")

    def _meta(self, model: nn.Module, build_spec: dict[str, Any]) -> meta_init.Record:
        """The recorded build of ``model`` with ``model`` on the meta device: its own record when it was built by
        :func:`~maezoo.engine.meta_init.build_on_meta`, else ``build_spec`` built on meta at the run's seed (what
        ``maezoo run`` builds) and ``model``'s tensors released."""
        record = meta_init.record_of(model)
        if record is not None:
            return record
        from maezoo.registry import build

        twin = meta_init.build_on_meta(lambda: build("model", build_spec["name"], **build_spec.get("kwargs", {})),
                                       seed=self.seed)
        model.to("meta")
        return meta_init.record_of(twin)  # type: ignore[return-value]

    def _rescale_batch(self, run_dir: Path, info: DistInfo) -> None:
        """Resuming a DCP checkpoint (``fsdp``) on another number of ranks: the per-rank batch that keeps the saved
        effective batch (so the run continues with the same global batches, learning rate and schedule)."""
        latest = ckpt.latest_checkpoint(run_dir)
        state = ckpt.load_state(latest) if latest is not None else {}
        world, eff = int(state.get("world_size", info.world_size)), int(state.get("effective_batch", 0))
        cfg = self.cfg
        if not state.get("dcp") or world == info.world_size or cfg.batch_size * cfg.accum_steps * info.world_size == eff:
            return
        per_rank, rest = divmod(eff, cfg.accum_steps * info.world_size)
        if rest or per_rank < 1:
            raise ConfigError(f"{latest}: its effective batch of {eff} does not split over {info.world_size} process(es) "
                              f"x trainer.accum_steps={cfg.accum_steps}; resume on a number of processes that divides it")
        if info.is_main:
            print(f"resuming a {world}-process checkpoint on {info.world_size}: trainer.batch_size {cfg.batch_size} -> "
                  f"{per_rank} per process keeps the effective batch of {eff}", flush=True)
        self.cfg = dataclasses.replace(cfg, batch_size=per_rank)

    def _restore(self, run: _Run) -> None:
        """Weights, optimiser, scaler, RNG, counters and thread count from the newest readable checkpoint."""
        cfg, info = self.cfg, run.info
        latest = ckpt.latest_checkpoint(run.run_dir) if run.dcp else None
        if run.dcp and latest is None:
            raise FileNotFoundError(f"nothing to resume: no complete checkpoint under {run.run_dir / ckpt.CKPT_DIR}")
        state = ckpt.load_state(latest) if latest is not None else {}
        if state.get("dcp"):  # sharded model and optimizer, re-sharded by DCP to this run's ranks
            fsdp.load_dcp(run.run_dir, state["dcp"], run.model, run.stepper.optimizer)
        elif run.sharded:
            raise ConfigError(f"{latest or run.run_dir} holds no DCP checkpoint (written without trainer.distributed="
                              "fsdp); resume it with the settings it was written with")
        else:
            latest, state = ckpt.load_latest_valid(run.run_dir, run.model)
        saved = (int(state.get("world_size", info.world_size)), int(state.get("effective_batch", run.eff_batch)))
        other_world = saved[0] != info.world_size
        if saved[1] != run.eff_batch or other_world and (not state.get("dcp") or run.stream):
            why = ("a stream's sample order depends on the number of ranks" if run.stream and state.get("dcp")
                   else "only DCP checkpoints (trainer.distributed=fsdp) re-shard to another number of processes")
            raise ConfigError(
                f"{latest} was written by {saved[0]} process(es) with an effective batch of {saved[1]}; this "
                f"resume has {info.world_size} and {run.eff_batch} ({why}). Resume with the same number of processes "
                "and trainer.batch_size/accum_steps, or start a new run"
            )
        slots = max(1, cfg.num_workers)
        if run.stream and int(state.get("data_slots", slots)) != slots:
            raise ConfigError(f"{latest} streamed its shards through {state['data_slots']} loader slot(s) "
                              f"(trainer.num_workers); resume with trainer.num_workers={state['data_slots']}, "
                              "which fixes the order of the samples")
        if cfg.threads == "auto" and state.get("threads"):
            # the same thread count as before the interruption: float reductions, and so the weights,
            # then match an uninterrupted run bit for bit
            self.threads = int(state["threads"])
            set_threads(self.threads)
        if not state.get("dcp"):  # DCP restored the (sharded) optimiser state above
            run.stepper.optimizer.load_state_dict(state["optimizer"])
        run.stepper.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"][info.rank] if info.rank < len(state["rng"]) else state["rng"][0])
        run.start_step = run.step = run.resumed_from = int(state["step"])
        run.counters = dict(state["counters"])
        run.prior_wall = float(run.counters.pop("wall_s", 0.0))
        if info.is_main:
            print(f"resuming from {latest} (step {run.start_step}/{run.total})", flush=True)

    def _start(self, run: _Run, resume: bool) -> None:
        """DDP and compile wrappers, the metrics log, the run header, the progress display."""
        cfg, info = self.cfg, run.info
        # DDP first, compile around it: the compiler then splits the graph at DDP's bucket boundaries, so the
        # gradient all-reduce overlaps the backward pass (compiling inside DDP loses that overlap)
        train_model = run.model if run.sharded else wrap_model(run.model, info, run.device, cfg.distributed)
        run.train_model = torch.compile(train_model) if cfg.compile else train_model
        run.logger = MetricsLogger(run.run_dir, enabled=info.is_main, resume_step=run.start_step if resume else None)
        runtime = {"device": str(run.device), "precision": self.precision, "precision_setting": cfg.precision,
                   "threads": self.threads, "threads_setting": cfg.threads, "total_steps": run.total,
                   "steps_per_epoch": run.steps_per_epoch, "peak_lr": run.peak_lr, "effective_batch": run.eff_batch}
        if info.is_main:
            update_env(run.run_dir, {"runtime": runtime})
            length = f"{run.total} steps" + (
                f" ({cfg.epochs} epochs x {run.steps_per_epoch})" if cfg.max_steps is None else "")
            print(f"pre-training: {length}, batch {run.eff_batch}, lr {run.peak_lr:.3g}, device {run.device}, "
                  f"precision {self.precision} ({cfg.precision}), threads {self.threads} ({cfg.threads})", flush=True)
        run.progress = Progress(run.total, run.start_step, cfg.progress and info.is_main, cfg.log_every)

    def _loop(self, run: _Run, dataset: Dataset) -> Interrupted | None:
        """Steps until the end of the run, ``stop_after`` or a stop signal (returned, after its checkpoint)."""
        cfg = self.cfg
        self._signal = None
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS} if _main_thread() else {}
        run.t_start = time.perf_counter()
        it = iter(self._loader(dataset, run.info, run.start_step * cfg.accum_steps))
        run.win_t = time.perf_counter()
        try:
            while run.step < run.total:
                self._step(run, it)
                self._log(run)
                for cb in run.callbacks:
                    extra = cb(run.step, ckpt.unwrap(run.train_model))
                    if extra:
                        run.logger.log(run.step, extra)
                due = run.step % cfg.ckpt_every == 0 or run.step == run.total
                if due or self._signal is not None:
                    self._save(run)
                if self._signal is not None:
                    return Interrupted(self._signal, run.step, run.run_dir)
                if cfg.stop_after and run.done_here >= cfg.stop_after:
                    break
        finally:
            _shut_down(it)
            run.progress.close()
            run.logger.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        return None

    def _step(self, run: _Run, it: Iterator[Any]) -> None:
        """One optimiser step over ``accum_steps`` micro-batches (seeded by step, rank and micro-batch)."""
        cfg, info = self.cfg, run.info
        run.lr = schedule_lr(cfg.schedule, run.step, run.total, run.peak_lr, run.warmup, cfg.min_lr,
                             run.steps_per_epoch)
        set_lr(run.stepper.optimizer, run.lr)
        run.stepper.zero_grad()
        run.step_losses, total, finite = {}, 0.0, True
        for micro in range(cfg.accum_steps):
            value = self._micro(run, it, micro)
            finite = finite and value is not None and math.isfinite(value)
            total += value if value is not None else 0.0
        self._check_bad(run.counters)
        if info.enabled:
            ok = torch.tensor(1.0 if finite else 0.0, device=run.device)
            finite = bool(all_reduce_mean(ok, info).item() == 1.0)
        if run.stepper.update(run.step, total, finite=finite, detail=f", terms {run.step_losses}"):
            if run.after_step is not None:
                run.after_step(run.step)
            run.loss_val = total  # the optimised total, whatever terms it sums
        else:
            run.counters["skipped"] += 1
        run.step += 1
        run.done_here += 1

    def _micro(self, run: _Run, it: Iterator[Any], micro: int) -> float | None:
        """Forward and backward of one micro-batch; its loss share, or ``None`` when every sample failed to load."""
        cfg, info = self.cfg, run.info
        t0 = time.perf_counter()
        batch, n_bad, n_good = next(it)
        run.wait_total += time.perf_counter() - t0
        run.counters["bad"] += n_bad
        run.counters["seen"] += cfg.batch_size
        if batch is None:
            return None
        s = step_seed(self.seed, run.step, info.rank, micro)
        torch.manual_seed(s)
        gen = torch.Generator(device=run.device).manual_seed(s)
        x = to_device(run.input_fn(batch), run.device)
        # masks per sample: the global batch's, drawn alike on every rank (sample_seeding.py)
        mask_gen = torch.Generator(device=run.device).manual_seed(step_seed(self.seed, run.step, 0, micro))
        mask = global_batch_mask(ckpt.unwrap(run.model), x, mask_gen, info.rank, info.world_size)
        kw = {"generator": gen} if mask is None else {"generator": gen, "mask": mask}
        sync = micro == cfg.accum_steps - 1 or not info.enabled
        no_sync = getattr(run.train_model, "no_sync", None)
        with no_sync() if not sync and no_sync is not None else nullcontext():
            with run.stepper.autocast():
                out = run.train_model(x, **kw)
            loss = out.loss / cfg.accum_steps
            value = float(loss.detach())  # one host sync per micro-step, shared by the guard and the log
            run.stepper.backprop(loss)
        terms = getattr(out, "losses", None) or {}
        if len(terms) > 1:
            for k, v in terms.items():
                run.step_losses[k] = run.step_losses.get(k, 0.0) + float(v.detach()) / cfg.accum_steps
        run.win_samples += n_good
        return value

    def _log(self, run: _Run) -> None:
        """``train/*`` metrics every ``log_every`` steps and at the end; the progress display every step."""
        cfg = self.cfg
        if run.step % cfg.log_every == 0 or run.step == run.total:
            if run.info.enabled:  # the logged loss is the mean over ranks, not rank 0's own
                run.loss_val = float(all_reduce_mean(torch.tensor([run.loss_val], device=run.device), run.info).item())
            now = time.perf_counter()
            sps = run.win_samples * run.info.world_size / max(now - run.win_t, 1e-9)
            metrics = {"loss": run.loss_val, "lr": run.lr, "samples_per_s": sps,
                       "data_wait_share": run.wait_total / max(now - run.t_start, 1e-9)}
            metrics.update({f"loss_{k}": v for k, v in run.step_losses.items()})
            run.logger.log(run.step, metrics, prefix="train/")
            run.win_t, run.win_samples = now, 0
        run.progress.update(run.step, {"loss": run.loss_val, "lr": run.lr})

    def _save(self, run: _Run) -> None:
        """A checkpoint of the current step (every rank's RNG gathered to rank 0, which writes it)."""
        info = run.info
        rngs = [_rng_state()]
        if info.enabled:
            gathered: list[Any] = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        weights: Any = run.model
        extra: dict[str, Any] = {"optimizer": run.stepper.optimizer.state_dict()} if not run.dcp else {}
        if run.dcp:  # every rank writes its shards (DCP; one process too, so it resumes on more); full weights beside
            keep = self.cfg.keep_last - 1
            kept = {int(p.name.split("_")[1]) for p in ckpt.complete_checkpoints(run.run_dir)[: max(0, keep)]}
            extra = {"optimizer": {}, "dcp": fsdp.save_dcp(run.run_dir, run.step, run.model, run.stepper.optimizer, kept)}
            if run.sharded:
                weights = fsdp.FullWeights(fsdp.full_state(run.model))
        if info.is_main:
            wall = run.prior_wall + time.perf_counter() - run.t_start
            state = {"step": run.step, **extra, "scaler": run.stepper.scaler.state_dict(), "rng": rngs,
                     "counters": {**run.counters, "wall_s": wall}, "world_size": info.world_size,
                     "effective_batch": run.eff_batch, "threads": self.threads,
                     "data_slots": max(1, self.cfg.num_workers)}
            ckpt.save_checkpoint(run.run_dir, run.step, weights, run.build_spec, state, self.cfg.keep_last)
        barrier(info)

    def _finish(self, run: _Run) -> None:
        """The final weights (at the end of the run), every rank's copy when asked, the bad-sample check."""
        final: Any = fsdp.FullWeights(fsdp.full_state(run.model)) if run.sharded else run.model  # a collective
        if run.step == run.total and run.info.is_main:
            ckpt.save_model(final, run.run_dir, run.build_spec)
        if self.cfg.save_all_ranks and not run.sharded:
            from safetensors.torch import save_file

            save_file(ckpt.model_state(run.model), str(run.run_dir / f"rank{run.info.rank}.safetensors"))
        self._check_bad(run.counters, final=True)

    def _summary(self, run: _Run, wall: float) -> TrainSummary:
        c = run.counters
        return TrainSummary(
            steps=run.step, wall_time_s=wall, samples_per_s=run.done_here * run.eff_batch / max(wall, 1e-9),
            data_wait_share=run.wait_total / max(wall, 1e-9), final_loss=run.loss_val, lr=run.peak_lr,
            effective_batch=run.eff_batch, bad_samples=c["bad"], seen_samples=c["seen"], skipped_steps=c["skipped"],
            resumed_from=run.resumed_from, steps_this_process=run.done_here, total_wall_time_s=run.prior_wall + wall,
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


__all__ = ["BadDataError", "Interrupted", "NonFiniteLossError", "StepBatchSampler", "Trainer", "TrainerConfig",
           "TrainSummary"]
