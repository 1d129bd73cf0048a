"""2 gloo ranks on the CPU: ``trainer.distributed: fsdp`` (FSDP2) ends with the weights of a 2-rank DDP run, resumes
exactly from its DCP checkpoint, and exports full weights the 1-rank model loads; with masks seeded per sample a
2-rank DDP run equals the 1-rank run at the same global batch, and the logged loss is the mean over ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from maezoo.engine.checkpoint import load_model

TINY = [
    "stages=[pretrain]", "visualize=0", "model.args.embed_dim=32", "model.args.depth=2", "model.args.num_heads=2",
    "model.args.decoder_dim=16", "model.args.decoder_depth=1", "model.args.decoder_heads=2",
    "trainer.warmup_steps=2", "trainer.log_every=3", "trainer.num_workers=0", "trainer.precision=fp32",
    "trainer.threads=1", "trainer.device=cpu", "trainer.max_steps=6", "trainer.ckpt_every=3",
]


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _launch(run: Path, *extra: str, ranks: int = 2, port: int = 29541, cmd: str = "run") -> None:
    head = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(port),
            "-m", "maezoo"] if ranks > 1 else [sys.executable, "-m", "maezoo"]
    args = ["resume", str(run)] if cmd == "resume" else ["run", "image/mae_digits_demo", *TINY, *extra, "--run-dir", str(run)]
    r = subprocess.run(head + args, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-4) -> None:
    """Equal within float rounding. The attention key biases' gradient is zero up to rounding (softmax ignores a
    shift shared by all keys), and Adam divides it by its own size: rounding noise moves them by up to the step's
    lr (6.25e-5 here) per step, so the tolerance is 1e-4 rather than the 1e-6 most tensors meet."""
    assert a.keys() == b.keys()
    bad = {k: (a[k] - b[k]).abs().max().item() for k in a if not torch.allclose(a[k], b[k], atol=atol, rtol=1e-4)}
    assert not bad, f"{len(bad)} of {len(a)} tensors differ: {dict(list(bad.items())[:4])}"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist")
    out = {name: root / name for name in ("single", "ddp", "fsdp", "fsdp_cut", "fsdp_meta")}
    _launch(out["single"], "trainer.batch_size=16", ranks=1)
    _launch(out["ddp"], "trainer.batch_size=8", port=29541)
    _launch(out["fsdp"], "trainer.batch_size=8", "trainer.distributed=fsdp", port=29542)
    _launch(out["fsdp_cut"], "trainer.batch_size=8", "trainer.distributed=fsdp", "trainer.stop_after=4", port=29543)
    _launch(out["fsdp_cut"], port=29544, cmd="resume")
    _launch(out["fsdp_meta"], "trainer.batch_size=8", "trainer.distributed=fsdp", "trainer.meta_init=true", port=29545)
    return out


def test_two_ranks_equal_one_rank_at_the_same_global_batch(runs):
    _close(_weights(runs["ddp"]), _weights(runs["single"]))
    # the logged loss is the mean over the ranks' halves of the batch: the 1-rank loss
    assert _losses(runs["ddp"]) == pytest.approx(_losses(runs["single"]), rel=1e-5)


def test_fsdp_weights_equal_ddp(runs):
    _close(_weights(runs["fsdp"]), _weights(runs["ddp"]))


def test_fsdp_resumes_exactly_from_dcp(runs):
    ckpts = runs["fsdp_cut"] / "checkpoints"
    assert any(p.name.startswith("dcp_step_") for p in ckpts.iterdir())
    assert json.loads((runs["fsdp_cut"] / "pretrain_summary.json").read_text())["resumed_from"] == 3
    _close(_weights(runs["fsdp_cut"]), _weights(runs["fsdp"]), atol=1e-7)


def test_fsdp_meta_init_trains_as_the_normal_build(runs):
    # the meta-device build fills each shard with the normal build's values, so the runs agree bit for bit
    meta, normal = _weights(runs["fsdp_meta"]), _weights(runs["fsdp"])
    assert meta.keys() == normal.keys() and all(torch.equal(meta[k], normal[k]) for k in meta)


def test_fsdp_export_loads_into_the_one_rank_model(runs):
    model, spec = load_model(runs["fsdp"])
    x = torch.randn(2, 1, 16, 16)
    assert model.encode(x, pool="cls").shape == (2, spec["kwargs"]["embed_dim"])


_TEARDOWN = """
import atexit, os, sys, torch.distributed as dist
from maezoo.engine import distributed
distributed.exit_if_torn_down(5)          # no group joined yet: returns
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
atexit.register(os.remove, sys.argv[2])   # a registered cleanup (as the shard decoders' temporary folders) still runs
print("work done", end="")                # unflushed: exit_if_torn_down flushes before os._exit
distributed.cleanup()
distributed.exit_if_torn_down(3)
sys.exit(0)                               # not reached
"""


def test_a_rank_that_tore_its_group_down_exits_without_finalisation(tmp_path):
    left = tmp_path / "removed_at_exit"
    left.write_text("")
    r = subprocess.run([sys.executable, "-c", _TEARDOWN, str(tmp_path / "store"), str(left)], capture_output=True,
                       text=True, timeout=120)
    assert (r.returncode, r.stdout) == (3, "work done"), r.stderr[-2000:]
    assert not left.exists()
