"""Graph-classification accuracy of the official GraphMAE (THUDM/GraphMAE, branch ``pyg``) on a TU set, here.

The published TU figures come from the DGL implementation; this runs the official PyG port on this
machine with its own per-dataset configuration (``--use_cfg``) so maezoo's figures can be compared with
the same code path and data. The official code is never copied into maezoo: pass a checkout of its
``pyg`` branch (see ``benchmarks/speed/graphmae_speed.py`` for how to get one); it is copied into a temporary
folder, the TU zip from ``../shared/data/tu`` is extracted to ``./data/<NAME>/raw`` there, and::

    python main_graph.py --dataset NAME --use_cfg --seeds 0 1 2 3 4 --device -1

is run unmodified. Per-seed SVM accuracies (``#Test_f1``) and the final mean are parsed from its output
and written to ``benchmarks/results/graphmae_official_<name>.json``.

    python benchmarks/graphmae_official_tu.py /tmp/gmae MUTAG
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from maezoo.graph.data import extract_tu_zip

REPO = Path(__file__).resolve().parents[1]
TU = REPO.parent / "shared" / "data" / "tu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("official", type=Path, help="checkout of THUDM/GraphMAE branch pyg (not modified)")
    ap.add_argument("dataset", help="TU set name, e.g. MUTAG, PROTEINS, IMDB-BINARY")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    name = args.dataset.upper()
    zip_path = TU / f"{name}.zip"
    if not zip_path.is_file():
        raise SystemExit(f"{zip_path} not found; the TU sets are expected in ../shared/data/tu")
    out = args.out or REPO / "benchmarks" / "results" / f"graphmae_official_{name.lower()}.json"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "graphmae_official"
        shutil.copytree(args.official.resolve(), root, ignore=shutil.ignore_patterns(".git", "chem", "imgs"))
        extract_tu_zip(zip_path, name, root / "data" / name / "raw")
        cmd = [sys.executable, "main_graph.py", "--dataset", name, "--use_cfg", "--seeds",
               *map(str, args.seeds), "--device", "-1"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"official run failed (exit {proc.returncode}):\n{text[-3000:]}")
    per_seed = [float(m.group(1)) * 100 for m in re.finditer(r"#Test_f1: ([0-9.]+)", text)]
    final = re.search(r"# final_acc: ([0-9.]+)±([0-9.]+)", text)
    if len(per_seed) != len(args.seeds) or final is None:
        raise SystemExit(f"could not parse the official output:\n{text[-3000:]}")
    doc = {"benchmark": f"official GraphMAE (pyg branch) graph classification on {name}, SVM 10-fold CV",
           "command": " ".join(cmd), "seeds": args.seeds, "values": per_seed,
           "mean": float(final.group(1)) * 100, "std": float(final.group(2)) * 100, "wall_time_s": round(wall, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpf = out.with_suffix(".json.tmp")
    tmpf.write_text(json.dumps(doc, indent=2))
    os.replace(tmpf, out)
    print(f"official GraphMAE {name}: {doc['mean']:.2f} ± {doc['std']:.2f} over seeds {args.seeds} "
          f"({', '.join(f'{v:.2f}' for v in per_seed)}); {wall:.0f} s -> {out}")


if __name__ == "__main__":
    main()
