"""What a modality's or a plugin's tests reuse: exact resume after SIGKILL, through the command line.

::

    from maezoo.testing import kill_and_resume

    def test_resume(tmp_path):
        got = kill_and_resume(["my/recipe", "trainer.max_steps=40", "trainer.ckpt_every=5"], tmp_path, kill_after=10)
        got.assert_identical()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class KillResume:
    """The two runs of :func:`kill_and_resume`: ``reference`` ran to the end, ``resumed`` was killed at
    ``killed_at`` (its newest checkpoint then) and resumed; ``summary`` is its ``pretrain_summary.json``."""

    reference: Path
    resumed: Path
    killed_at: int
    summary: dict[str, Any]

    def assert_identical(self) -> None:
        """The resumed run's final weights equal the uninterrupted run's, bit for bit."""
        from safetensors.torch import load_file

        a = load_file(str(self.reference / "model.safetensors"))
        b = load_file(str(self.resumed / "model.safetensors"))
        assert a.keys() == b.keys(), f"parameter names differ: {sorted(set(a) ^ set(b))[:5]}"
        diff = {k: float((a[k].float() - b[k].float()).abs().max()) for k in a if not a[k].equal(b[k])}
        assert not diff, f"resumed weights differ from the uninterrupted run's: {dict(list(diff.items())[:5])}"

    def logged_steps(self, which: str = "resumed") -> list[int]:
        """The steps ``metrics.jsonl`` holds, in order."""
        folder = self.resumed if which == "resumed" else self.reference
        return [json.loads(x)["step"] for x in (folder / "metrics.jsonl").read_text().splitlines()]


def run_env(data: Path | None = None) -> dict[str, str]:
    """One intra-op thread, unbuffered output and (optionally) a data root of its own."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if data is not None:
        env["MAEZOO_DATA"] = str(data)
    return env


def kill_and_resume(args: list[str], workdir: Path, *, kill_after: int = 10, env: dict[str, str] | None = None,
                    timeout: float = 300.0) -> KillResume:
    """``maezoo run *args`` to the end in ``workdir/ref``; again in ``workdir/killed``, sent SIGKILL as soon as a
    checkpoint at step ``kill_after`` or later exists; then ``maezoo resume`` on it. ``args`` start with the recipe
    and must save checkpoints often enough (``trainer.ckpt_every``) and run long enough to be killed part-way."""
    env = env or run_env(workdir / "data")
    ref, run = workdir / "ref", workdir / "killed"
    cmd = [sys.executable, "-m", "maezoo", "run", *args]
    done = subprocess.run([*cmd, "--run-dir", str(ref)], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = subprocess.Popen([*cmd, "--run-dir", str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() >= f"step_{kill_after:08d}":
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be killed: give it more steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().strip().split("_")[1])
    assert killed_at >= kill_after and not (run / "model.safetensors").exists()
    done = subprocess.run([sys.executable, "-m", "maezoo", "resume", str(run)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "pretrain_summary.json").read_text())
    assert summary["resumed_from"] >= killed_at, summary
    return KillResume(ref, run, killed_at, summary)


__all__ = ["KillResume", "kill_and_resume", "run_env"]
