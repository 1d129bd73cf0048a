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
from maezoo.engine.trainer import BadDataError, NonFiniteLossError, StepBatchSampler, Trainer, TrainerConfig
from maezoo.optim import cosine_lr, param_groups, scaled_lr
from maezoo.testing import kill_and_resume

TINY = [
    "stages=[pretrain]", "visualize=0", "model.args.embed_dim=32", "model.args.depth=2", "model.args.num_heads=2",
    "model.args.decoder_dim=16", "model.args.decoder_depth=1", "model.args.decoder_heads=2",
    "trainer.batch_size=16", "trainer.warmup_steps=5", "trainer.log_every=5", "trainer.num_workers=0",
    "trainer.precision=fp32", "trainer.threads=1",
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


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, workers):
    steps = ["trainer.max_steps=60", "trainer.ckpt_every=10", f"trainer.num_workers={workers}"]
    got = kill_and_resume(["image/mae_digits_demo", *TINY, *steps], tmp_path, kill_after=20, env=_env(), timeout=240)
    summary = got.summary
    assert got.killed_at < 60 and summary["steps"] == 60
    assert summary["steps_this_process"] == 60 - summary["resumed_from"]
    assert summary["total_wall_time_s"] > summary["wall_time_s"]  # the killed process's time is counted too
    got.assert_identical()
    assert got.logged_steps() == got.logged_steps("reference"), "the log holds each step once, as an uninterrupted run's"


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    from maezoo.cli import main

    run = tmp_path / "run"
    args = ["run", "image/mae_digits_demo", *TINY, "trainer.max_steps=30", "trainer.ckpt_every=10",
            "trainer.keep_last=3", "--run-dir", str(run)]
    assert main([*args, "trainer.stop_after=20"]) == 0
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000020"
    weights = run / "checkpoints" / "step_00000020" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    capsys.readouterr()
    assert main(["resume", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "step_00000020 is damaged" in err and "resuming from step_00000010 instead" in err
    assert json.loads((run / "pretrain_summary.json").read_text())["resumed_from"] == 10
    ref = tmp_path / "ref"
    assert main(["run", "image/mae_digits_demo", *TINY, "trainer.max_steps=30", "trainer.ckpt_every=10",
                 "--run-dir", str(ref)]) == 0
    _assert_same(_weights(ref / "model.safetensors"), _weights(run / "model.safetensors"))


def test_accumulation_equals_one_double_batch(tmp_path):
    def fit(bs: int, accum: int) -> torch.Tensor:
        cfg = TrainerConfig(max_steps=6, batch_size=bs, accum_steps=accum, num_workers=0, progress=False,
                            precision="fp32", warmup_steps=0, lr=0.05, threads=1)
        model = _Lin()
        Trainer(cfg, seed=1).fit(model, _Points(64), tmp_path / f"{bs}x{accum}", {"name": "x"})
        return model.w.detach().clone()

    one, two = fit(16, 1), fit(8, 2)
    assert not torch.equal(one, torch.ones(2))  # it trained
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-6)


def test_epochs_schedules_and_adam_for_every_modality(tmp_path):
    from maezoo.optim import schedule_lr

    cfg = TrainerConfig(max_steps=None, epochs=3, batch_size=5, drop_last=False, shuffle=False, optimizer="adam",
                        decay="all", schedule="epoch_cosine", lr=0.1, warmup_steps=0, num_workers=0, progress=False,
                        precision="fp32", threads=1)
    t = Trainer(cfg)
    assert t.plan(12) == (9, 3, 0)  # 12 samples in batches of 5, last partial batch kept: 3 steps per epoch
    s = t.fit(_Lin(), _Points(12), tmp_path, {"name": "x"})
    assert s.steps == 9 and s.seen_samples == 45
    lrs = [json.loads(x)["train/lr"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [schedule_lr("epoch_cosine", k, 9, 0.1, 0, 0.0, 3) for k in (0, 3, 6)] == pytest.approx([0.1, 0.075, 0.025])
    assert lrs[-1] == pytest.approx(0.025)  # GraphMAE's (1 + cos(pi * e / E)) / 2 for the last epoch
    assert schedule_lr("constant", 7, 9, 0.1) == 0.1


def test_auto_precision_and_threads_are_chosen_and_reported(tmp_path, monkeypatch):
    from maezoo import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert runtime.resolve_precision("auto", "cpu") == "fp32"  # AVX2-only: bf16 would be emulated
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        runtime.resolve_precision("fp16", "cpu")
    monkeypatch.setattr(runtime, "free_cores", lambda sample_s=0.2: 1)
    assert runtime.resolve_threads("auto", 10**9) == 1  # one core free: one thread, whatever the model
    monkeypatch.setattr(runtime, "free_cores", lambda sample_s=0.2: 2)
    slow_on_two = {1: [0.01] * 5, 2: [0.05] * 5}
    monkeypatch.setattr(runtime, "time_threads", lambda step, counts, repeats=5: slow_on_two)
    assert runtime.resolve_threads("auto", 10**9, probe=lambda: None) == 1  # threads wait on each other
    monkeypatch.setattr(runtime, "time_threads", lambda step, counts, repeats=5: {1: [0.05] * 5, 2: [0.026] * 5})
    assert runtime.resolve_threads("auto", 10, probe=lambda: None) == 2
    assert runtime.resolve_threads(3) == 3
    cfg = TrainerConfig(max_steps=2, batch_size=4, num_workers=0, progress=False, warmup_steps=0)
    try:
        s = Trainer(cfg).fit(_Lin(), _Points(16), tmp_path, {"name": "x"})
    finally:
        torch.set_num_threads(1)
    env = json.loads((tmp_path / "env.json").read_text())["runtime"]
    assert env["precision"] == s.precision == "bf16" and env["precision_setting"] == "auto"
    assert env["threads"] == s.threads == 2 and env["threads_setting"] == "auto"


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
    assert "checkpoint written" in err
    ckpt = (run / "checkpoints" / "latest").read_text().strip()
    assert int(ckpt.split("_")[1]) >= 5


GROUP_RUN = [*TINY, "trainer.num_workers=1", "trainer.max_steps=400", "trainer.ckpt_every=100000"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    ref = tmp_path_factory.mktemp("group") / "ref"
    r = _run(["run", "image/mae_digits_demo", *GROUP_RUN, "--run-dir", str(ref)])
    assert r.returncode == 0, r.stderr
    return _weights(ref / "model.safetensors")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_the_process_group_checkpoints_and_resumes_exactly(tmp_path, uninterrupted, sig, code):
    """A cluster scheduler (or Ctrl-C) signals the main process and its DataLoader worker at once."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "maezoo", "run", "image/mae_digits_demo", *GROUP_RUN,
                             "--run-dir", str(run)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not metrics.exists():
        time.sleep(0.005)
    assert proc.poll() is None, "run finished before it could be signalled; the test needs more steps"
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "DataLoader worker" not in err, err
    name = signal.Signals(sig).name
    lines = [x for x in (out + err).splitlines() if "interrupted by" in x]
    step = int((run / "checkpoints" / "latest").read_text().strip().split("_")[1])
    assert lines == [f"interrupted by {name} at step {step}: checkpoint written; continue with `maezoo resume {run}`"]
    assert 5 <= step < 400 and not (run / "model.safetensors").exists()

    r = _run(["resume", str(run)])
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "pretrain_summary.json").read_text())["resumed_from"] == step
    _assert_same(uninterrupted, _weights(run / "model.safetensors"))


def test_pruning_keeps_this_runs_checkpoints_and_start_removes_temporaries(tmp_path):
    from maezoo.engine import checkpoint as ckpt

    root = tmp_path / "checkpoints"
    for n in (1200, 1000):  # a longer earlier run in the same folder
        (root / f"step_{n:08d}").mkdir(parents=True)
        torch.save({"step": n}, root / f"step_{n:08d}" / "state.pt")
    leftovers = [root / ".latest.tmp4242", tmp_path / ".model.safetensors.tmp4242"]
    for p in leftovers:
        p.write_text("half")
    (root / ".step_00000040.tmp4242").mkdir()
    (tmp_path / ".notes.tmp").write_text("not a temporary of ours")
    cfg = TrainerConfig(max_steps=9, batch_size=4, num_workers=0, progress=False, precision="fp32", warmup_steps=0,
                        threads=1, ckpt_every=3, keep_last=2)
    Trainer(cfg).fit(_Lin(), _Points(16), tmp_path, {"name": "x"})
    assert not any(p.exists() for p in [*leftovers, root / ".step_00000040.tmp4242"])
    assert (tmp_path / ".notes.tmp").exists()
    assert (root / "latest").read_text().strip() == "step_00000009"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000006", "step_00000009", "step_00001000",
                                                          "step_00001200"]
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step_00000009", "step_00000006"]
    assert ckpt.latest_checkpoint(tmp_path) == root / "step_00000009"


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


class _Points(torch.utils.data.Dataset):
    """Deterministic 2-D points (no randomness, so batch composition is all that differs between runs)."""

    def __init__(self, n: int) -> None:
        self.x = torch.linspace(-1, 1, 2 * n).view(n, 2)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


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


class _Views(torch.utils.data.Dataset):
    """Samples that are dicts of two views (multi-view / multi-modal batches)."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.full((2,), float(i) / 32)
        return {"a": x, "b": 2 * x}


class _TwoViews(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))
        self.seen: list[tuple] = []

    def forward(self, x, generator=None):
        self.seen.append((sorted(x), tuple(x["a"].shape), bool(torch.equal(x["b"], 2 * x["a"]))))
        loss = ((x["a"] * self.w).sum(-1) - (x["b"] * self.w).sum(-1) / 2 - 1).pow(2).mean()
        return _Out(loss, {"recon": loss})


def test_dict_batches_reach_the_model_on_the_device(tmp_path):
    cfg = TrainerConfig(max_steps=4, batch_size=8, num_workers=0, progress=False, precision="fp32", warmup_steps=0,
                        threads=1, log_every=4)
    model = _TwoViews()
    s = Trainer(cfg).fit(model, _Views(), tmp_path, {"name": "x"})
    assert model.seen == [(["a", "b"], (8, 2), True)] * 4  # collated per key, views kept together
    assert s.samples_per_s > 0 and s.seen_samples == 32
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["train/loss"] == pytest.approx(1.0)  # the views cancel: (0 - 1)^2 whatever the weights


def test_resume_refuses_a_recipe_that_changed_since_the_run_started(tmp_path, capsys):
    import yaml

    from maezoo.cli import main
    from maezoo.config import resolve_recipe

    recipe = tmp_path / "mine.yaml"
    recipe.write_text(resolve_recipe("image/mae_digits_demo").read_text())
    run = tmp_path / "run"
    assert main(["run", str(recipe), *TINY, "trainer.max_steps=20", "trainer.ckpt_every=5", "trainer.stop_after=10",
                 "--run-dir", str(run)]) == 0
    raw = yaml.safe_load(recipe.read_text())
    raw["trainer"]["base_lr"] = 5e-3
    recipe.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "resolves differently" in err and "trainer.base_lr" in err
    assert json.loads((run / "pretrain_summary.json").read_text())["steps"] == 10  # nothing was continued


def test_free_cores_does_not_count_this_process_as_load(monkeypatch):
    """The run's own CPU use during the sample (OpenMP threads still spinning) is not another process's load."""
    from maezoo import runtime

    tick = os.sysconf("SC_CLK_TCK")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runtime.time, "sleep", lambda s: None)
    # 0.2 s on 2 cores = 0.4 core-seconds of ticks; one core busy (idle 0.2 of 0.4) ...
    stats = iter([(0.0, 0.0), (0.2 * tick, 0.4 * tick)])
    monkeypatch.setattr(runtime, "_cpu_times", lambda: next(stats))
    # ... and all of that busy time is this process's own
    own = iter([10.0, 10.2])
    monkeypatch.setattr(runtime, "_own_cpu_seconds", lambda: next(own))
    assert runtime.free_cores() == 2
    stats = iter([(0.0, 0.0), (0.2 * tick, 0.4 * tick)])
    own = iter([10.0, 10.0])  # the busy core belongs to someone else
    monkeypatch.setattr(runtime, "_cpu_times", lambda: next(stats))
    monkeypatch.setattr(runtime, "_own_cpu_seconds", lambda: next(own))
    assert runtime.free_cores() == 1


def test_time_threads_interleaves_the_counts():
    from maezoo import runtime

    seen = []
    out = runtime.time_threads(lambda: seen.append(torch.get_num_threads()), (1, 2), repeats=3)
    assert set(out) == {1, 2} and all(len(v) == 3 and min(v) >= 0 for v in out.values())
    assert seen == [1, 2, 1, 2, 1, 2, 1, 2]  # one warm-up each, then interleaved


def test_more_threads_must_win_clearly():
    """A lucky repeat while another process pauses does not pick more threads (15x slower when it is wrong)."""
    from maezoo.runtime import more_threads_pay

    assert more_threads_pay([1.0] * 5, [0.7] * 5)  # quiet: 30% faster every time
    assert not more_threads_pay([1.0] * 5, [0.95] * 5)  # under 10% saved
    assert not more_threads_pay([1.0] * 5, [0.1, 0.1, 15.0, 15.0, 15.0])  # busy core: wins twice, median awful
    assert not more_threads_pay([1.0] * 5, [0.5, 0.5, 0.5, 2.0, 2.0])  # 3 of 5 wins is not enough
