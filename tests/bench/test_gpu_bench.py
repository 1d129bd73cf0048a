"""The GPU benchmark's dry run: every section of ``benchmarks/gpu/run.sh`` runs on the CPU at toy sizes, so the
script a GPU machine will run cannot rot between loans."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_dry_run_writes_every_row(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--dry-run", "--out-dir", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    data = json.loads((tmp_path / "dry_run.json").read_text())
    assert data["dry_run"] and data["peak_tflops"] > 0
    rows = {**data["image"], **data["video"]}
    assert set(rows) == {"ViT-B/16", "ViT-L/16", "VideoMAE ViT-B"}
    for label, sec in rows.items():
        entries = sec["entries"]
        assert "maezoo" in entries, label
        expected = {"maezoo", "transformers"} - {k.split()[-1] for k in data["skipped"] if k.startswith(label.split("/")[0])}
        assert set(entries) >= expected, (label, data["skipped"])
        for name, e in entries.items():
            assert e["samples_per_s"] > 0 and e["flops"] > 0 and 0 < e["mfu"], (label, name)
            assert len(e["timings"]) == data["config"]["repeats"]
    d = data["data"]
    assert d["loader_images_per_s"] > 0 and d["trainer_images_per_s"] > 0 and math.isfinite(d["fed_share"])
    md = (tmp_path / "dry_run.md").read_text()
    assert "DRY RUN" in md and "| ViT-L/16 |" in md and "Image pipeline:" in md
