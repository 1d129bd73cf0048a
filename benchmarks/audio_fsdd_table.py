"""FSDD table from runs of ``audio/audiomae_fsdd``: the official split and the leave-one-speaker-out average.

Reads only ``results*.json`` files written by the ``mae`` system (a run's, a leaf's, or a re-evaluation's from
``stage=finetune checkpoint=RUN``; a later file's value replaces an earlier one for the same dataset, protocol
and init): top-1 of every protocol and init on ``fsdd-official``, and the mean ± std over the
``fsdd-loso-<speaker>`` entries found, beside the hand-made baseline of ``benchmarks/audio_fsdd_baseline.py``
when its JSON is given.

Usage::

    python benchmarks/audio_fsdd_table.py runs/audiomae_fsdd/results.json \
        --baseline benchmarks/results/audio_fsdd_baseline.json --out benchmarks/results/audio_fsdd.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from maezoo.results import read_results


def table(results: list[Path], baseline: Path | None = None) -> str:
    rows = [r for path in results for r in read_results(path)[1]]
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        if r.metric == "top1" and r.init != "published":
            cells.setdefault((r.protocol, r.init), {})[r.dataset] = r.value
    lines = ["| protocol | init | fsdd-official | LOSO mean ± std (speakers) |", "|---|---|---|---|"]
    for (proto, init), by in sorted(cells.items()):
        loso = [v for k, v in by.items() if k.startswith("fsdd-loso-")]
        off = f"{by['fsdd-official']:.2f}" if "fsdd-official" in by else "-"
        mean = (f"{statistics.mean(loso):.2f} ± {statistics.pstdev(loso):.2f} ({len(loso)})" if loso else "-")
        lines.append(f"| {proto} | {init} | {off} | {mean} |")
    if baseline is not None and baseline.is_file():
        b = json.loads(baseline.read_text())
        loso = [v for k, v in b["accuracy"].items() if "loso" in k]
        lines.append(f"| log-mel stats + logistic regression | hand-made | {b['accuracy']['fsdd-official']:.2f} | "
                     f"{statistics.mean(loso):.2f} ± {statistics.pstdev(loso):.2f} ({len(loso)}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--baseline", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    text = table(args.results, args.baseline)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
