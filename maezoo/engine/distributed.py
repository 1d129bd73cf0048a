"""``torchrun`` support: DDP (or FSDP) on NCCL for GPUs and gloo for CPUs.

``trainer.distributed: fsdp`` shards the model instead (FSDP2, :mod:`maezoo.engine.fsdp`).

The same recipe runs on one process or many: ``torchrun --nproc_per_node 8 -m maezoo run RECIPE``.
Environment variables set by torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) switch it on.
"""

from __future__ import annotations

import atexit
import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # rank 0 evaluates between pre-training runs (several seeds or datasets) while the others wait
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=12))
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, strategy: str = "ddp") -> nn.Module:
    if not info.enabled:
        return model
    if strategy != "ddp":
        raise ValueError(f"distributed strategy {strategy!r} is not supported; use 'ddp'")
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.AVG if dist.get_backend() == "nccl" else dist.ReduceOp.SUM)
        if dist.get_backend() != "nccl":
            value /= info.world_size
    return value


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


_torn_down = False


def cleanup(info: DistInfo | None = None) -> None:
    """Tear the process group down once every rank is done with it (a gloo rank whose peer already left may abort
    at exit); without ``info``, whatever group this process joined."""
    global _torn_down
    if (info is None or info.enabled) and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        _torn_down = True


def exit_if_torn_down(code: int) -> None:
    """End a rank whose process group :func:`cleanup` tore down with ``os._exit(code)``, after the ``atexit``
    handlers (temporary folders) and a flush of stdout/stderr, skipping the rest of the interpreter's finalisation.

    Objects that still hold gloo resources (FSDP2's device mesh, DCP planners) would be destroyed there, and gloo
    may then abort a rank whose work was done ("terminate called without an active exception": 2 of 16 two-rank
    FSDP launches on a loaded 2-core CPU, 0 of 20 with this exit; with the ``atexit`` handlers run first, 0 of 20
    quiet and 0 of 20 beside two busy processes). Everything a run writes is closed before this is called.
    """
    if _torn_down:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
