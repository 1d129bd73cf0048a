"""Meta-device initialisation (``trainer.meta_init: true``): build a model without memory, shard it, then fill each
shard with exactly the values the normal build gives.

A builder run under ``torch.device("meta")`` allocates nothing, and its random initialisation draws nothing (a meta
kernel never touches the generator). :func:`build_on_meta` runs the builder that way under a dispatch mode that
records every tensor operation of the build: factories (``empty``, ``zeros``), in-place initialisers (``uniform_``,
``normal_``, ``fill_``, ``zero_``), computations (a table copied into a buffer). Each tensor is remembered by its
storage and its view (size, stride, offset), so an initialiser applied to a reshaped view of a weight (a patch
projection's ``w.view(D, -1)``) lands where it did.

:func:`materialize` then replays the record on the CPU from the generator state the build started with:

* every random operation is replayed in the recorded order on a tensor of the recorded shape, so the generator
  advances exactly as in the normal build (the draws of ``nn.Linear``'s own ``kaiming_uniform_``, later overwritten
  by MAE's ``xavier_uniform_``, included); a draw whose result the model does not keep goes to a scratch tensor
  that is freed at once;
* a backward liveness pass keeps only the operations whose results reach a parameter or buffer (from the last
  full overwrite of each storage on), so at most the tensors in flight are held in full: one weight at a time for
  MAE's build, never the model;
* when a storage's last operation has run, each parameter on it is copied into this rank's shard (a DTensor under
  FSDP2: its ``Shard(0)`` piece, cut locally, no communication) or into the plain tensor, on the run's device.

So the state dict of a meta-initialised model equals the normally built model's at the same seed bit for bit,
whatever the number of ranks (tests/engine/test_meta_init.py). Every rank replays every draw: initialisation costs
each rank the normal build's random-number time on its CPU (seconds for ViT-H), not its memory.

Limits (each raises with the fix): a random draw whose count depends on values (rejection samplers) would be
replayed on placeholder values; every initialiser ``nn.init`` and the maezoo builders use draws by shape only.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

#: in-place operations that overwrite their target without reading it
_OVERWRITES = {"uniform_", "normal_", "fill_", "zero_", "random_", "exponential_", "cauchy_", "log_normal_",
               "geometric_", "copy_", "bernoulli_"}


@dataclass(frozen=True)
class Ref:
    """A tensor of the record: its storage, its view on that storage and its dtype."""

    key: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    dtype: torch.dtype


@dataclass
class Op:
    func: Any  # an OpOverload
    args: Any  # the call's arguments, every meta tensor replaced by its Ref
    kwargs: Any
    outs: list[Ref | None]  # the outputs that live on a new storage (None for views and in-place results)
    writes: list[int]  # storages written: mutated arguments and new outputs
    reads: list[int]  # storages read (every tensor argument, mutated ones included unless overwritten)
    full: list[int]  # storages this op overwrites entirely without reading them
    random: bool


@dataclass
class Record:
    """What :func:`build_on_meta` saw: the operations, each storage's element count and dtype, the tensors of the
    model by name, and the generator state the build started from."""

    ops: list[Op] = field(default_factory=list)
    storages: dict[int, tuple[int, torch.dtype]] = field(default_factory=dict)
    names: dict[str, Ref] = field(default_factory=dict)
    rng: torch.Tensor | None = None
    #: the meta tensors themselves, kept alive so that a storage's address is never reused during the build
    keep: list[torch.Tensor] = field(default_factory=list)


_RECORDS: weakref.WeakKeyDictionary[nn.Module, Record] = weakref.WeakKeyDictionary()


class _Recorder(TorchDispatchMode):
    def __init__(self, record: Record) -> None:
        super().__init__()
        self.record = record

    def _ref(self, t: torch.Tensor) -> Ref:
        store = t.untyped_storage()
        key = StorageWeakRef(store).cdata
        if key not in self.record.storages:
            self.record.storages[key] = (store.nbytes() // t.element_size(), t.dtype)
            self.record.keep.append(t)
        return Ref(key, tuple(t.shape), tuple(t.stride()), t.storage_offset(), t.dtype)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = [a for a in tree_flatten((args, kwargs))[0] if _is_meta(a)]
        rec_args, rec_kwargs = tree_map(lambda a: self._ref(a) if _is_meta(a) else a, (args, kwargs))
        mutated = [self._ref(m).key for m in _mutated_args(func, args, kwargs) if _is_meta(m)]
        known = set(self.record.storages)  # the inputs' storages: an output on one of them is a view or in place
        outs: list[Ref | None] = []
        for o in tree_flatten(out)[0]:
            new = _is_meta(o) and StorageWeakRef(o.untyped_storage()).cdata not in known
            outs.append(self._ref(o) if new else None)
        fresh = [r.key for r in outs if r is not None]
        full = list(fresh)
        target = _mutated_args(func, args, kwargs)
        if target and func.overloadpacket.__name__ in _OVERWRITES and _covers(target[0]):
            full.append(mutated[0])  # overwritten whole: its earlier values do not matter
        reads = [self._ref(a).key for a in ins]
        if len(full) > len(fresh):
            reads.remove(full[-1])  # the overwritten target (``copy_`` still reads its source)
        self.record.ops.append(Op(func, rec_args, rec_kwargs, outs, mutated + fresh, reads, full,
                                  torch.Tag.nondeterministic_seeded in func.tags))
        return out


class _Constants(TorchFunctionMode):
    """``torch.tensor(value)`` on the meta device fills its storage without a dispatched operation: record the value
    (built on the CPU beside it) as a constant written into that storage."""

    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (torch.tensor, torch.as_tensor) and _is_meta(out):
            real = func(*args, **{**kwargs, "device": "cpu"})
            ref = self.recorder._ref(out)
            self.recorder.record.ops.append(Op(None, (real,), {}, [ref], [ref.key], [], [ref.key], False))
        return out


def _is_meta(a: Any) -> bool:
    return isinstance(a, torch.Tensor) and a.device.type == "meta"


def _mutated_args(func: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    out = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = args[i] if i < len(args) and not arg.kwarg_only else kwargs.get(arg.name)
        if isinstance(value, torch.Tensor):
            out.append(value)
    return out


def _covers(t: torch.Tensor) -> bool:
    """Whether the view ``t`` covers its whole storage (so writing it overwrites every element)."""
    return t.is_contiguous() and t.storage_offset() == 0 and t.numel() * t.element_size() == t.untyped_storage().nbytes()


def build_on_meta(builder: Callable[[], nn.Module], seed: int | None = None) -> nn.Module:
    """Run ``builder`` on the meta device (nothing allocated), recording its initialisation for
    :func:`materialize`. ``seed``: the ``torch.manual_seed`` the normal build would run under (default: the
    generator's current state)."""
    record = Record()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        record.rng = torch.get_rng_state()
        with torch.device("meta"), _Recorder(record) as recorder, _Constants(recorder):
            model = builder()
            for name, t in _named_tensors(model):
                record.names[name] = recorder._ref(t)
    real = [n for n, t in _named_tensors(model) if t.device.type != "meta"]
    if real:
        raise ValueError(f"meta initialisation: {real[:3]} were built on {model.state_dict()[real[0]].device}, not "
                         "on the meta device (a tensor made from numpy or an explicit device= in the builder); "
                         "build them with torch factories or use trainer.meta_init=false")
    record.keep.clear()  # addresses stay unique only while recording; the keys are plain numbers now
    _RECORDS[model] = record
    return model


def record_of(model: nn.Module) -> Record | None:
    return _RECORDS.get(model)


def is_meta(model: nn.Module) -> bool:
    return any(t.device.type == "meta" for _, t in _named_tensors(model))


def _named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(), *model.named_buffers()]


def _clean(name: str) -> str:
    return name.replace("_checkpoint_wrapped_module.", "")


def materialize(model: nn.Module, device: torch.device | str = "cpu", record: Record | None = None) -> nn.Module:
    """Allocate ``model``'s (sharded or plain) tensors on ``device`` and fill them as the recorded build did.

    ``model`` is the module :func:`build_on_meta` returned, possibly sharded by ``fully_shard`` and wrapped for
    activation checkpointing since; ``record`` defaults to its own (pass another build's record of the same
    builder to initialise a module that was moved to meta)."""
    record = record or record_of(model)
    if record is None:
        raise ValueError("this model was not built by maezoo.engine.meta_init.build_on_meta, so its initialisation "
                         "is unknown; build it with build_on_meta(lambda: build('model', name, **kwargs), seed)")
    model.to_empty(device=device)
    targets: dict[int, list[tuple[Ref, torch.Tensor]]] = {}
    for name, t in _named_tensors(model):
        ref = record.names.get(_clean(name))
        if ref is None:
            raise ValueError(f"meta initialisation: {name!r} is not in the recorded build; the record belongs to "
                             "another model")
        targets.setdefault(ref.key, []).append((ref, t))
    needed = _live_ops(record, set(targets))
    last: dict[int, int] = {}
    for i in needed:
        for k in record.ops[i].writes + record.ops[i].reads:
            last[k] = i
    live: dict[int, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.set_rng_state(record.rng)
        for i, op in enumerate(record.ops):
            if i in needed:
                _run(op, live, record, keep=True)
                for k in {*op.writes, *op.reads}:
                    if last.get(k) == i:
                        _emit(k, live, targets)
                        live.pop(k, None)
            elif op.random:  # the generator advances as in the normal build; the values are not kept
                _run(op, {}, record, keep=False)
    unset = [k for k in targets if k not in last]
    if unset:  # a storage no operation wrote (empty and never initialised): zeros rather than garbage
        for k in unset:
            for _, t in targets[k]:
                _local(t).zero_()
    return model


def _live_ops(record: Record, wanted: set[int]) -> set[int]:
    """Indices of the operations whose results reach a ``wanted`` storage (backward liveness over the record)."""
    pending, needed = set(wanted), set()
    for i in range(len(record.ops) - 1, -1, -1):
        op = record.ops[i]
        if not any(k in pending for k in op.writes):
            continue
        needed.add(i)
        for k in op.full:
            pending.discard(k)
        pending.update(op.reads)
    return needed


def _tensor(ref: Ref, pool: dict[int, torch.Tensor], record: Record) -> torch.Tensor:
    if ref.key not in pool:
        numel, dtype = record.storages[ref.key]
        pool[ref.key] = torch.zeros(numel, dtype=dtype)
    base = pool[ref.key]
    if base.dtype != ref.dtype:
        raise ValueError(f"meta initialisation: a storage is read as {ref.dtype} and {base.dtype}; not supported, "
                         "use trainer.meta_init=false")
    return base.as_strided(ref.size, ref.stride, ref.offset)


def _run(op: Op, pool: dict[int, torch.Tensor], record: Record, keep: bool) -> None:
    def real(a: Any) -> Any:
        if isinstance(a, Ref):
            return _tensor(a, pool, record)
        if isinstance(a, torch.device) and a.type == "meta":
            return torch.device("cpu")
        return a

    if op.func is None:  # a constant (``torch.tensor(value)``)
        _tensor(op.outs[0], pool, record).copy_(op.args[0])
        return
    args, kwargs = tree_map(real, (op.args, op.kwargs))
    if "device" in kwargs and kwargs["device"] is not None and torch.device(kwargs["device"]).type == "meta":
        kwargs["device"] = torch.device("cpu")
    out = op.func(*args, **kwargs)
    if not keep:
        return
    for ref, o in zip(op.outs, tree_flatten(out)[0], strict=False):
        if ref is not None and isinstance(o, torch.Tensor):
            _tensor(ref, pool, record).copy_(o)


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _emit(key: int, live: dict[int, torch.Tensor], targets: dict[int, list[tuple[Ref, torch.Tensor]]]) -> None:
    """Copy the finished storage ``key`` into every model tensor on it (this rank's shard of a DTensor)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    base = live.get(key)
    if base is None or key not in targets:
        return
    for ref, t in targets[key]:
        full = base.as_strided(ref.size, ref.stride, ref.offset)
        if isinstance(t, DTensor):
            piece = distribute_tensor(full.to(t.device), t.device_mesh, t.placements, src_data_rank=None)
            t.to_local().copy_(piece.to_local())
        else:
            t.copy_(full)


__all__ = ["Record", "build_on_meta", "is_meta", "materialize", "record_of"]
