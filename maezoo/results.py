"""``results.json``: one schema for every modality, system and protocol.

The cross-modality benchmark tables are built from these files alone, so each row carries everything
needed to place it: what was trained (system, modality, dataset, model), how it was measured
(protocol, metric), the value (mean and std over seeds, with the per-seed values), and the cost
(steps, wall time, hardware).

Schema (``schema_version`` 1)::

    {
      "schema_version": 1,
      "run": {"recipe": str, "created": ISO-8601, "maezoo_version": str, "git_commit": str | null},
      "hardware": {"device": str, "cpu": str, "num_threads": int, ...},
      "results": [
        {"system": "mae", "modality": "image", "dataset": "cifar10", "model": "mae_vit",
         "protocol": "knn" | "linprobe" | "finetune" | "partial_finetune" | "scratch" | ...,
         "init": "pretrained" | "random",
         "metric": "top1", "value": 61.2, "std": 0.0, "seeds": [0], "values": [61.2],
         "higher_is_better": true, "steps": 2000, "wall_time_s": 840.5, "extra": {...}}
      ]
    }
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class Result:
    system: str
    modality: str
    dataset: str
    model: str
    protocol: str
    metric: str
    values: list[float]
    seeds: list[int]
    init: str = "pretrained"
    higher_is_better: bool = True
    steps: int | None = None
    wall_time_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["value"], d["std"] = self.value, self.std
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Result:
        d = {k: v for k, v in d.items() if k not in ("value", "std")}
        return cls(**d)


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "num_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        # bf16 is native with AVX512-BF16/AMX and emulated (very slow) with AVX2 only: name it with every CPU figure
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["device"] = "cuda"
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("maezoo", "torch", "torchvision", "torchaudio", "timm", "torch-geometric", "numpy", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def write_results(path: str | Path, results: list[Result], recipe: str = "") -> Path:
    """Write (atomically) a ``results.json`` holding ``results``."""
    from maezoo import __version__

    path = Path(path)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "recipe": recipe,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "maezoo_version": __version__,
            "git_commit": git_commit(),
        },
        "hardware": hardware(),
        "results": [r.to_json() for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
    return path


def read_results(path: str | Path) -> tuple[dict[str, Any], list[Result]]:
    doc = json.loads(Path(path).read_text())
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: unsupported results schema_version {doc.get('schema_version')!r}")
    return doc, [Result.from_json(r) for r in doc["results"]]


RESULTS = "results.json"


def results_name(stage: str | None = None) -> str:
    """The results file of a run: ``results.json``, or ``results_<stage>.json`` for a single-stage evaluation."""
    return RESULTS if not stage else f"results_{stage}.json"


def results_file(path: str | Path) -> Path:
    """``results.json`` of a run folder, or the file itself."""
    p = Path(path)
    if p.is_dir():
        if not (p / RESULTS).is_file():
            raise FileNotFoundError(f"{p} has no {RESULTS} (is it a finished maezoo run folder?)")
        return p / RESULTS
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such run folder or results.json")
    return p


def fmt_number(v: float) -> str:
    """Two decimals for scores (``84.36``), more for small errors (``0.3728``) so differences stay visible."""
    a = abs(v)
    return f"{v:.2f}" if a >= 10 or a == 0 else f"{v:.3f}" if a >= 1 else f"{v:.4f}"


def _fmt(r: Result | None) -> str:
    if r is None:
        return "–"
    return f"{fmt_number(r.value)} ± {fmt_number(r.std)}" if len(r.values) > 1 else fmt_number(r.value)


def render_table(paths: list[str | Path]) -> str:
    """One Markdown table from run folders or ``results.json`` files of any modality.

    One row per (dataset, protocol) and headline metric: the pre-trained score beside its baseline (random init, or
    from scratch for fine-tuning) and the gain (positive: pre-training helped; for error metrics the baseline minus
    the pre-trained value), top-5 beside top-1, and the published figure where the recipe gives one. Metrics other
    than top-1/top-5 (``mse@96``, ``accuracy`` ...) each get a row.
    """
    runs = []
    for p in paths:
        doc, results = read_results(results_file(p))
        runs.append((results, doc["hardware"].get("gpu") or doc["hardware"].get("cpu", "?")))
    return render_rows(runs)


def render_rows(runs: list[tuple[list[Result], str]]) -> str:
    """The table of :func:`render_table` from ``(results, hardware name)`` pairs (``maezoo run`` prints it too)."""
    head = ("modality", "dataset", "model", "protocol", "metric", "pre-trained", "baseline", "gain", "top-5 (pre / base)",
            "published", "seeds", "steps", "hardware")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    body = []
    for results, hw in runs:
        idx: dict[tuple, Result] = {}
        for r in results:  # the first published figure of a metric is the one shown
            idx.setdefault((r.dataset, r.model, r.protocol, r.metric, r.init), r)
        for r in results:
            if r.init != "pretrained" or r.metric == "top5" and (r.dataset, r.model, r.protocol, "top1", "pretrained") in idx:
                continue
            key = (r.dataset, r.model, r.protocol)
            base = idx.get((*key, r.metric, "random"))
            pub = idx.get((*key, r.metric, "published"))
            gain = "–"
            if base is not None:
                g = (r.value - base.value) if r.higher_is_better else (base.value - r.value)
                gain = f"{'+' if g >= 0 else '−'}{fmt_number(abs(g))}"
            top5 = "–"
            if r.metric == "top1" and (*key, "top5", "pretrained") in idx:
                top5 = f"{_fmt(idx[(*key, 'top5', 'pretrained')])} / {_fmt(idx.get((*key, 'top5', 'random')))}"
            body.append((r.modality, r.dataset, r.model, r.protocol, r.metric, _fmt(r),
                         _fmt(base) + (" (scratch)" if base is not None and "finetune" in r.protocol else ""), gain, top5,
                         _fmt(pub), str(len(r.seeds)), "" if r.steps is None else str(r.steps), hw))
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)
