"""Wall time of `maezoo run RECIPE --quick` for every recipe whose data is on this machine, and of `threads: auto`
against fixed thread counts on the same short runs.

    python benchmarks/quick_runs.py                       # every recipe that runs here, --quick
    python benchmarks/quick_runs.py --threads             # pre-training only: threads auto (twice), 1 and 2
    python benchmarks/quick_runs.py --only image/mae_digits_demo,graph/graphmae_cora

Each run is a fresh process (`python -m maezoo run R --quick --run-dir <tmp>`), timed whole: import, data,
pre-training and every protocol. Results go to ``benchmarks/results/quick_runs.json`` with the machine, its CPU
capability and the load average, so a figure from a shared machine says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_note

ROOT = Path(__file__).resolve().parents[1]
#: recipes whose data this machine has (the others read user-provided lists: Kinetics, UCF101, ESC-50, ...)
RUNS_HERE = [
    "image/mae_digits_demo", "image/mae_cifar10", "image/mae_cifar10_small", "image/convmae_cifar10",
    "video/videomae_moving_digits", "audio/audiomae_fsdd", "timeseries/patchtst_etth1", "timeseries/tsformer_etth1",
    "graph/graphmae_cora", "graph/graphmae_tu", "text/bert_wordnet",
]


def run(recipe: str, extra: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "maezoo", "run", recipe, "--run-dir", str(out), *extra],
                          capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    head = re.search(r"threads (\d+) \((\w+)\)", proc.stdout)
    rate = re.search(r"pre-training: \d+ steps in ([\d.]+)s.*?, ([\d.]+) samples/s", proc.stdout)
    return {"recipe": recipe, "args": extra, "wall_s": round(wall, 1), "rc": proc.returncode,
            "threads": int(head.group(1)) if head else None,
            "pretrain_s": float(rate.group(1)) if rate else None,
            "samples_per_s": float(rate.group(2)) if rate else None,
            "error": proc.stderr.strip().splitlines()[-1:] if proc.returncode else []}


#: pre-training only, long enough for a stable rate, first dataset only
THREADS_RUN = ["stages=[pretrain]", "visualize=0", "monitor.every=0", "trainer.max_steps=150", "trainer.log_every=50",
               "trainer.ckpt_every=1000"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated recipes (default: every recipe that runs here)")
    ap.add_argument("--threads", action="store_true", help="pre-training rates with threads auto (twice), 1 and 2")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/quick_runs.json (threads_auto.json)")
    args = ap.parse_args()
    recipes = [r for r in args.only.split(",") if r] or RUNS_HERE
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, recipe in enumerate(recipes):
            variants = [["--quick"]] if not args.threads else []
            if args.threads:  # auto twice (is the choice stable?), then each fixed count, interleaved by recipe
                first = _first_dataset(recipe)
                variants += [[*THREADS_RUN, *first, f"trainer.threads={t}"] for t in ("auto", 1, 2, "auto")]
            for j, extra in enumerate(variants):
                row = run(recipe, extra, Path(tmp) / f"{i}_{j}")
                print(json.dumps(row), flush=True)
                rows.append(row)
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"{torch.backends.cpu.get_cpu_capability()}", "load": load_note(), "runs": rows}
    out = Path(args.out or ROOT / "benchmarks/results" / ("threads_auto.json" if args.threads else "quick_runs.json"))
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def _first_dataset(recipe: str) -> list[str]:
    """``datasets=[first]`` for a recipe that runs several datasets, else nothing."""
    import yaml

    raw = yaml.safe_load((ROOT / "recipes" / f"{recipe}.yaml").read_text())
    names = raw.get("datasets")
    return [f"datasets=[{names[0]}]"] if names else []


if __name__ == "__main__":
    main()
