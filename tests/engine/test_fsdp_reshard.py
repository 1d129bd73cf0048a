"""DCP checkpoints re-shard: a ``trainer.distributed: fsdp`` run saved on 2 gloo ranks resumes on 1, and one saved on 1
resumes on 2, each ending with the weights of the uninterrupted 2-rank run within float rounding (the per-rank batch
is rescaled to keep the effective batch; what differs is the gradient averaged over two halves of the global batch
instead of one whole batch)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

import maezoo
from maezoo.config import ConfigError
from maezoo.engine.trainer import Trainer, TrainerConfig

KW = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2, decoder_dim=16, decoder_depth=1,
          decoder_heads=2)
SPEC = {"name": "mae_vit", "kwargs": KW}
GLOBAL_BATCH, STEPS = 8, 6


def _data() -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(1, 16, 16, generator=g), 0) for _ in range(32)]


def _fit(run: Path, world: int, resume: bool = False, stop: int = 0, batch: int | None = None, **extra):
    """``batch``: the per-rank batch in the config (default: the global batch split over ``world``)."""
    cfg = TrainerConfig(max_steps=STEPS, batch_size=batch or GLOBAL_BATCH // world, num_workers=0, progress=False, threads=1,
                        precision="fp32", device="cpu", warmup_steps=2, ckpt_every=3, log_every=3, stop_after=stop,
                        distributed="fsdp", **extra)
    torch.manual_seed(5)
    model = maezoo.create_model("mae_vit", **KW)
    return Trainer(cfg, seed=5).fit(model, _data(), run, SPEC, resume=resume)


def _ranks(rank: int, world: int, port: int, jobs: list[tuple[str, bool, int, int | None]]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    for run, resume, stop, batch in jobs:
        _fit(Path(run), world, resume, stop, batch)
    dist.barrier()  # every rank done communicating before gloo tears down (else a rank may abort at exit)
    dist.destroy_process_group()


def _two_ranks(port: int, *jobs: tuple[str, bool, int, int | None]) -> None:
    mp.spawn(_ranks, args=(2, port, list(jobs)), nprocs=2, join=True)


def _close(a: Path, b: Path, atol: float = 1e-5) -> None:
    """Within float rounding (measured: at most 2.1e-6 apart after 6 steps; over longer runs the attention key biases,
    whose gradient is zero up to rounding, drift further under Adam, see test_fsdp.py)."""
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    bad = {k: (x[k] - y[k]).abs().max().item() for k in x if not torch.allclose(x[k], y[k], atol=atol, rtol=1e-4)}
    assert not bad, f"{len(bad)} of {len(x)} tensors differ: {dict(list(bad.items())[:4])}"


def test_dcp_resumes_on_another_number_of_ranks(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ref, cut21, cut12 = tmp_path / "ref", tmp_path / "cut21", tmp_path / "cut12"
    _two_ranks(29561, (str(ref), False, 0, None), (str(cut21), False, 3, None))
    assert (cut21 / "checkpoints" / "dcp_step_00000003").is_dir() and not (cut21 / "model.safetensors").exists()
    s = _fit(cut21, world=1, resume=True, batch=GLOBAL_BATCH // 2)  # 2 -> 1: the recipe's 4 per rank rescaled to 8
    assert (s.resumed_from, s.steps, s.effective_batch) == (3, STEPS, GLOBAL_BATCH)
    _fit(cut12, world=1, stop=3)  # one process under fsdp writes DCP too
    assert (cut12 / "checkpoints" / "dcp_step_00000003").is_dir()
    _two_ranks(29562, (str(cut12), True, 0, GLOBAL_BATCH))  # 1 -> 2: the recipe's 8 rescaled to 4 per rank
    _close(cut21, ref)
    _close(cut12, ref)
    # the uninterrupted one-process run agrees as well (same global batches, same masks)
    one = tmp_path / "one"
    _fit(one, world=1)
    _close(one, ref)


def test_a_resume_that_cannot_keep_the_effective_batch_is_refused(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    _fit(tmp_path / "r", world=1, stop=3)
    with pytest.raises(ConfigError, match="effective batch"):
        _fit(tmp_path / "r", world=1, resume=True, accum_steps=2)
