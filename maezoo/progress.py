"""Progress with an ETA for any long loop (pre-training, fine-tuning, probes): a rich bar on a terminal,
a plain line every ``every`` steps otherwise."""

from __future__ import annotations

import sys
import time


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
