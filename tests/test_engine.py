"""The engine: exact resume after a real SIGKILL, SIGTERM checkpoints, 2-process gloo DDP, the
optimiser rules, non-finite guard and bad-sample accounting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import maezoo
from maezoo.engine.optim import cosine_lr, param_groups, scaled_lr
from maezoo.engine.trainer import BadDataError, NonFiniteLossError, StepBatchSampler, Trainer, TrainerConfig

TINY = [
    "stages=[pretrain]", "visualize=0", "model.args.embed_dim=32", "model.args.depth=2", "model.args.num_heads=2",
    "model.args.decoder_dim=16", "model.args.decoder_depth=1", "model.args.decoder_heads=2",
    "trainer.batch_size=16", "trainer.warmup_steps=5", "trainer.log_every=5", "trainer.num_workers=0",
    "trainer.precision=fp32",
]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maezoo", *args], env=_env(), capture_output=True, text=True, timeout=300, **kw)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    diff = {k: (a[k] - b[k]).abs().max().item() for k in a if not torch.equal(a[k], b[k])}
    assert not diff, f"weights differ: {dict(list(diff.items())[:5])}"


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    steps = ["trainer.max_steps=60", "trainer.ckpt_every=10"]
    ref = tmp_path / "ref"
    r = _run(["run", "image/mae_digits_demo", *TINY, *steps, "--run-dir", str(ref)])
    assert r.returncode == 0, r.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "maezoo", "run", "image/mae_digits_demo", *TINY, *steps,
                             "--run-dir", str(run)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() >= "step_00000020":
            break
        time.sleep(0.005)
    assert proc.poll() is None, "run finished before it could be killed; the test needs more steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().strip().split("_")[1])
    assert 20 <= killed_at < 60 and not (run / "model.safetensors").exists()

    r = _run(["resume", str(run)])
    assert r.returncode == 0, r.stderr
    summary = json.loads((run / "pretrain_summary.json").read_text())
    assert summary["resumed_from"] >= killed_at and summary["steps"] == 60
    _assert_same(_weights(ref / "model.safetensors"), _weights(run / "model.safetensors"))


def test_sigterm_writes_checkpoint(tmp_path):
    run = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "maezoo", "run", "image/mae_digits_demo", *TINY,
                             "trainer.max_steps=100000", "trainer.ckpt_every=100000", "--run-dir", str(run)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not metrics.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "checkpoint written at step" in out
    ckpt = (run / "checkpoints" / "latest").read_text().strip()
    assert int(ckpt.split("_")[1]) >= 5


def test_ddp_gloo_two_processes(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "maezoo", "run", "image/mae_digits_demo", *TINY, "trainer.max_steps=12", "trainer.device=cpu",
           "trainer.save_all_ranks=true", "trainer.ckpt_every=6", "--run-dir", str(run)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same(_weights(run / "rank0.safetensors"), _weights(run / "rank1.safetensors"))
    s = json.loads((run / "pretrain_summary.json").read_text())
    assert s["effective_batch"] == 2 * 16
    assert s["lr"] == pytest.approx(scaled_lr(1e-3, 32))
    # the two ranks saw different data: the weights differ from a 1-process run with the same batch size
    single = tmp_path / "single"
    r = _run(["run", "image/mae_digits_demo", *TINY, "trainer.max_steps=12", "--run-dir", str(single)])
    assert r.returncode == 0, r.stderr
    assert not torch.equal(_weights(single / "model.safetensors")["tokenizer.proj.weight"],
                           _weights(run / "rank0.safetensors")["tokenizer.proj.weight"])


def test_sampler_resumes_mid_epoch_and_shards():
    full = StepBatchSampler(100, 8, seed=3, rank=0, world=1)
    it = iter(full)
    batches = [next(it) for _ in range(30)]  # crosses epoch boundaries (12 batches per epoch)
    resumed = iter(StepBatchSampler(100, 8, seed=3, rank=0, world=1, start=17))
    assert [next(resumed) for _ in range(13)] == batches[17:]
    r0 = next(iter(StepBatchSampler(100, 8, seed=3, rank=0, world=2)))
    r1 = next(iter(StepBatchSampler(100, 8, seed=3, rank=1, world=2)))
    assert not {i for i, _ in r0} & {i for i, _ in r1}
    with pytest.raises(ValueError, match="batch_size"):
        StepBatchSampler(10, 8, seed=0, world=2)


def test_optimizer_rules():
    model = maezoo.create_model("mae_vit", img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2,
                                decoder_dim=16, decoder_depth=1, decoder_heads=2)
    groups = param_groups(model, weight_decay=0.05)
    names_nd = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    names_d = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    assert "encoder.cls_token" in names_nd and "decoder.mask_token" in names_nd
    assert all(n.endswith(("bias", "token")) or "norm" in n for n in names_nd)
    assert "encoder.blocks.0.attn.qkv.weight" in names_d
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert cosine_lr(0, 100, 1.0, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_lr(10, 100, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 1.0, warmup_steps=10, min_lr=0.01) == pytest.approx(0.01)


@dataclass
class _Out:
    loss: torch.Tensor
    losses: dict


class _NaNModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x, generator=None):
        loss = (self.w * x.sum()) * float("nan")
        return _Out(loss, {"recon": loss})


class _Flaky(torch.utils.data.Dataset):
    def __init__(self, bad_every: int) -> None:
        self.bad_every = bad_every

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i):
        if self.bad_every and i % self.bad_every == 0:
            raise OSError(f"corrupt file {i}")
        return torch.ones(2), 0


def test_nonfinite_loss_stops_naming_the_step(tmp_path):
    t = Trainer(TrainerConfig(max_steps=3, batch_size=4, num_workers=0, progress=False, precision="fp32", warmup_steps=0))
    with pytest.raises(NonFiniteLossError, match="step 0"):
        t.fit(_NaNModel(), _Flaky(0), tmp_path, {"name": "x"})
    t = Trainer(TrainerConfig(max_steps=3, batch_size=4, num_workers=0, progress=False, precision="fp32",
                              warmup_steps=0, nonfinite="skip"))
    s = t.fit(_NaNModel(), _Flaky(0), tmp_path / "skip", {"name": "x"})
    assert s.skipped_steps == 3


class _Lin(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def forward(self, x, generator=None):
        loss = ((x * self.w).sum(-1) - 1).pow(2).mean()
        return _Out(loss, {"recon": loss})


def test_bad_samples_are_skipped_and_counted(tmp_path):
    cfg = dict(max_steps=8, batch_size=8, num_workers=0, progress=False, precision="fp32", warmup_steps=0)
    s = Trainer(TrainerConfig(**cfg, max_bad_fraction=0.2)).fit(_Lin(), _Flaky(16), tmp_path / "a", {"name": "x"})
    assert s.bad_samples == 4 and s.seen_samples == 64  # indices 0, 16, 32, 48 over one epoch
    with pytest.raises(BadDataError, match="max_bad_fraction"):
        Trainer(TrainerConfig(**cfg, max_bad_fraction=0.01)).fit(_Lin(), _Flaky(16), tmp_path / "b", {"name": "x"})
