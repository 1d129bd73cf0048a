"""Run logging: a progress bar on a terminal, plain lines otherwise; JSONL + TensorBoard metrics; the
run's provenance (resolved config, package versions, git commit, hardware) saved beside them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from maezoo.progress import Progress  # noqa: F401  (re-exported)
from maezoo.results import git_commit, hardware, versions


def write_provenance(run_dir: Path, config: dict[str, Any] | None = None, argv: list[str] | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {"versions": versions(), "git_commit": git_commit(), "hardware": hardware(), "argv": argv or sys.argv}
    (run_dir / "env.json").write_text(json.dumps(env, indent=2))
    if config is not None:
        import yaml

        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def update_env(run_dir: Path, extra: dict[str, Any]) -> None:
    """Merge ``extra`` into ``run_dir/env.json`` (atomically), e.g. the precision and threads a run chose."""
    path = run_dir / "env.json"
    try:
        env = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        env = {}
    env.update(extra)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".env.json.tmp")
    tmp.write_text(json.dumps(env, indent=2))
    tmp.replace(path)


class MetricsLogger:
    """Appends ``{"step": ..., "tag/name": value}`` lines to ``metrics.jsonl`` and mirrors them to TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                self.truncate_after(resume_step)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    # purge_step drops TensorBoard events logged after the checkpoint by the killed process
                    self._tb = SummaryWriter(str(run_dir / "tb"), purge_step=None if resume_step is None else resume_step + 1)
                except ImportError:  # tensorboard is a dependency, but keep logging if it is broken
                    self._tb = None

    def truncate_after(self, step: int) -> int:
        """Drop rows logged after ``step`` (a resume restarts there); returns how many were dropped."""
        if not self.path.is_file():
            return 0
        keep, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the kill
                dropped += 1
                continue
            if int(row.get("step", 0)) <= step:
                keep.append(line)
            else:
                dropped += 1
        if dropped:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(f"{x}\n" for x in keep))
            tmp.replace(self.path)
        return dropped

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
