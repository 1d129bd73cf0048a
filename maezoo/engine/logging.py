"""Run logging: a progress bar on a terminal, plain lines otherwise; JSONL + TensorBoard metrics; the
run's provenance (resolved config, package versions, git commit, hardware) saved beside them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from maezoo.results import git_commit, hardware, versions


def write_provenance(run_dir: Path, config: dict[str, Any] | None = None, argv: list[str] | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {"versions": versions(), "git_commit": git_commit(), "hardware": hardware(), "argv": argv or sys.argv}
    (run_dir / "env.json").write_text(json.dumps(env, indent=2))
    if config is not None:
        import yaml

        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


class MetricsLogger:
    """Appends ``{"step": ..., "tag/name": value}`` lines to ``metrics.jsonl`` and mirrors them to TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(run_dir / "tb"))
                except ImportError:  # tensorboard is a dependency, but keep logging if it is broken
                    self._tb = None

    def log(self, step: int, metrics: dict[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **{f"{prefix}{k}": float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{prefix}{k}", float(v), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


class Progress:
    """A rich progress bar when stdout is a terminal; a plain line every ``every`` steps otherwise."""

    def __init__(self, total: int, start: int, enabled: bool, every: int, desc: str = "pretrain") -> None:
        self.total, self.every, self.enabled, self.desc = total, max(1, every), enabled, desc
        self.bar = None
        self.t0, self.s0 = time.perf_counter(), start
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task(desc, total=total, completed=start, info="")

    def update(self, step: int, info: dict[str, float]) -> None:
        if not self.enabled:
            return
        text = "  ".join(f"{k} {v:.4g}" for k, v in info.items())
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=text)
        elif step % self.every == 0 or step == self.total:
            el = time.perf_counter() - self.t0
            left = el / max(step - self.s0, 1) * (self.total - step)
            print(f"[{self.desc}] step {step}/{self.total}  {text}  eta {left:.0f}s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
