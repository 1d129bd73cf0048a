"""Run a suite: each entry in its own ``maezoo run`` process, resumable, with a progress line and the suite's ETA.

A finished entry has its record file and is not run again; an entry whose run folder exists without a record is
continued with ``maezoo resume`` (the Trainer's exact resume); others start. "Finished" and "continued" hold only for
the same recipe: a record or run folder made from another version of the recipe file (another
:func:`~maezoo.config.recipe_digest`, or none recorded) is stale; the entry runs again, in a new folder, and the
stale folder is moved aside (``<entry>.stale-N``), never deleted. A failing entry is reported with the
tail of its log and the suite goes on; the exit status is non-zero when any entry failed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from maezoo.bench.records import build_entry_record, code_version, write_record
from maezoo.bench.suites import Suite, SuiteEntry, get_suite
from maezoo.config import recipe_digest

RUN_META = "recipe.json"  # written by `maezoo run` in every run folder


@dataclass
class EntryOutcome:
    entry: str
    status: str  # "done" (ran now), "skipped" (finished before), "failed"
    wall_time_s: float = 0.0
    log: Path | None = None


def _same_run(path: Path, entry: SuiteEntry, digest: str) -> bool:
    """Whether the JSON at ``path`` (a record, or a run folder's ``recipe.json``) was made by ``entry``'s recipe,
    overrides and recipe file version."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (doc.get("recipe") == entry.recipe and doc.get("overrides") == list(entry.overrides)
            and doc.get("recipe_sha") == digest)


def _move_aside(run_dir: Path) -> Path:
    """Rename a stale run folder to the first free ``<name>.stale-N`` beside it; return the new path."""
    n = 1
    while (target := run_dir.with_name(f"{run_dir.name}.stale-{n}")).exists():
        n += 1
    run_dir.rename(target)
    return target


def _fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _run_child(cmd: list[str], log: Path) -> tuple[int, float, float | None]:
    """Run ``cmd`` with its output appended to ``log``; return (exit status, seconds, peak RSS in MB of the child)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.terminate()  # the child checkpoints on SIGTERM; `maezoo bench` continues it next time
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss / 1024 if usage.ru_maxrss else None  # Linux reports KiB
    return proc.returncode, time.perf_counter() - t0, peak


def run_suite(name: str, results_root: Path = Path("benchmarks/results"), runs_root: Path = Path("runs/bench"),
              only: list[str] | None = None, python: str = sys.executable) -> list[EntryOutcome]:
    """Run (or continue) suite ``name``; records go to ``results_root/<suite>/<entry>.json``."""
    suite: Suite = get_suite(name)
    entries = list(suite.entries)
    if only:
        unknown = sorted(set(only) - {e.name for e in entries})
        if unknown:
            raise ValueError(f"suite {name!r} has no entr{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                             f"its entries: {', '.join(e.name for e in entries)}")
        entries = [e for e in entries if e.name in only]
    out_dir, run_root = results_root / name, runs_root / name
    outcomes: list[EntryOutcome] = []
    digests = {e.name: recipe_digest(e.recipe) for e in entries}
    todo = [e for e in entries if not _same_run(out_dir / f"{e.name}.json", e, digests[e.name])]
    expected_total = sum(e.minutes for e in todo) * 60
    spent, expected_done = 0.0, 0.0
    t_suite = time.perf_counter()
    print(f"suite {name}: {len(entries)} entries, {len(entries) - len(todo)} finished before, "
          f"about {_fmt(expected_total)} to go (expected)", flush=True)
    for i, entry in enumerate(entries, 1):
        rec_path = out_dir / f"{entry.name}.json"
        if entry not in todo:
            print(f"[{i}/{len(entries)}] {entry.name}: finished before ({rec_path})", flush=True)
            outcomes.append(EntryOutcome(entry.name, "skipped"))
            continue
        run_dir = run_root / entry.name
        log = run_root / f"{entry.name}.log"
        if run_dir.exists() and not _same_run(run_dir / RUN_META, entry, digests[entry.name]):
            moved = _move_aside(run_dir)
            print(f"[{i}/{len(entries)}] {entry.name}: {run_dir} was made by another version of {entry.recipe} "
                  f"(or other overrides); moved it to {moved}", flush=True)
        if (run_dir / RUN_META).is_file():
            cmd = [python, "-m", "maezoo", "resume", str(run_dir)]
            how = "continuing"
        else:
            cmd = [python, "-m", "maezoo", "run", entry.recipe, *entry.overrides, "--run-dir", str(run_dir)]
            how = "starting"
        # the ETA scales the remaining entries' expected minutes by how the finished ones compared with theirs
        scale = spent / expected_done if expected_done else 1.0
        left = sum(e.minutes for e in todo[todo.index(entry):]) * 60 * scale
        print(f"[{i}/{len(entries)}] {entry.name}: {how} {entry.recipe} (expected {_fmt(entry.minutes * 60 * scale)}, "
              f"suite ETA {_fmt(left)}; log {log})", flush=True)
        code = code_version()  # the code the child runs (taken before it starts, not when the record is written)
        rc, wall, peak = _run_child(cmd, log)
        if rc != 0:
            tail = "\n".join(log.read_text().splitlines()[-15:])
            print(f"[{i}/{len(entries)}] {entry.name}: FAILED (exit {rc}) after {_fmt(wall)}; last lines of {log}:\n{tail}",
                  flush=True)
            outcomes.append(EntryOutcome(entry.name, "failed", wall, log))
            continue
        spent += wall
        expected_done += entry.minutes * 60
        command = shlex.join(["maezoo", "run", entry.recipe, *entry.overrides])
        record = build_entry_record(name, entry, run_dir, command, wall, peak, out_dir, code=code,
                                    recipe_sha=digests[entry.name])
        write_record(rec_path, record)
        main = [r for r in record["records"] if r["protocol"] == entry.main_protocol and r["metric"] == entry.main_metric]
        shown = ", ".join(f"{r['dataset']} {entry.main_protocol} {r['value']:.3g}"
                          + (f" vs {r['baseline']['value']:.3g}" if r["baseline"] else "") for r in main)
        print(f"[{i}/{len(entries)}] {entry.name}: done in {_fmt(wall)}; {shown or 'no main-protocol result'}", flush=True)
        outcomes.append(EntryOutcome(entry.name, "done", wall, log))
    failed = [o.entry for o in outcomes if o.status == "failed"]
    print(f"suite {name}: {_fmt(time.perf_counter() - t_suite)} this time; "
          + (f"failed: {', '.join(failed)}" if failed else "every entry finished"), flush=True)
    return outcomes
