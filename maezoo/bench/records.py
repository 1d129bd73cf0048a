"""Benchmark records: everything one suite entry measured, read back from its run folder, as one JSON file.

File ``benchmarks/results/<suite>/<entry>.json``::

    {"schema": "maezoo.bench/1", "suite": ..., "entry": ..., "recipe": ..., "recipe_sha": digest of the recipe file,
     "overrides": [...],
     "command": "maezoo run ...", "created": ISO-8601,
     "code": {"commit": sha, "tree": sha of maezoo/ and recipes/, "dirty": bool},
     "hardware": {...}, "entry_wall_time_s": float, "peak_rss_mb": float,
     "pretrain": {dataset: {steps, samples_per_s, tokens_per_s, final_loss, effective_batch, wall_time_s, ...}},
     "curves": {dataset: {"loss": [[step, loss], ...], "monitor": {metric: [[step, value], ...]}}},
     "figure": "<entry>.png" | null,
     "records": [one per (dataset, protocol, metric): system, modality, dataset, model, params, masking, mask_ratio,
                 steps, epochs, effective_batch, device, wall_time_s, samples_per_s, tokens_per_s, peak_rss_mb,
                 final_loss, value, std, values, seeds, baseline {init, value, std}, gain, published {value, source}]}

Every number comes from the run's own files (``results.json``, ``pretrain_summary.json``, ``metrics.jsonl``,
``model.json``/``model.safetensors``, ``config.yaml``); nothing is typed in.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from maezoo.results import Result, hardware, read_results

SCHEMA = "maezoo.bench/1"
#: figure files a visualiser writes into a run folder, in order of preference
FIGURES = ("reconstructions.png", "embeddings.png")
CODE_PATHS = ("maezoo", "recipes")


def code_version(root: Path | None = None) -> dict[str, Any]:
    """The commit, the git tree of ``maezoo/`` + ``recipes/`` at that commit, and whether they had uncommitted
    changes (then the record was not made by the committed code)."""
    root = root or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "tree": None, "dirty": None}
    tree = git("rev-parse", *(f"HEAD:{p}" for p in CODE_PATHS))
    status = git("status", "--porcelain", "--", *CODE_PATHS)
    return {"commit": commit, "tree": tree.replace("\n", ",") if tree else None,
            "dirty": bool(status) if status is not None else None}


def _leaves(run_dir: Path) -> list[Path]:
    """Leaf folders (one per dataset and seed) under a run folder: those holding a ``pretrain_summary.json``."""
    return sorted(p.parent for p in run_dir.rglob("pretrain_summary.json")
                  if "checkpoints" not in p.parts and "ablations" not in p.relative_to(run_dir).parts)


def _dataset_of(leaf: Path, run_dir: Path) -> str | None:
    parts = [p for p in leaf.relative_to(run_dir).parts if not p.startswith("seed_")]
    return parts[0].lower() if parts else None


def count_params(folder: Path) -> int | None:
    """Parameters in ``folder/model.safetensors``, read from the header (no weights loaded)."""
    path = folder / "model.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return int(sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()))


def tokens_per_sample(folder: Path, config: dict[str, Any]) -> float | None:
    """Tokens the tokenizer makes from one training sample (all of them, before masking), measured by running the
    saved model's tokenizer on the dataset's first sample; None when that cannot be done."""
    import torch
    from torch.utils.data import default_collate

    import maezoo
    from maezoo.engine.checkpoint import load_model

    try:
        model, _ = load_model(folder)
        data = config.get("data") or {}
        ds = maezoo.build("dataset", data["name"], **{**(data.get("args") or {}), "split": "train", "transform": "eval"})
        item = ds[0]
        x = item[0] if isinstance(item, tuple | list) else item
        collate = getattr(ds, "collate_fn", None)
        if collate is not None:
            batch = collate([item])
            batch = batch[0] if isinstance(batch, tuple | list) else batch
        else:
            batch = default_collate([x])
        with torch.no_grad():
            toks = model.tokenizer(batch).tokens  # [B', N, D] for one sample (B' > 1: channel-independent rows)
        return float(toks.shape[0] * toks.shape[1])
    except Exception:  # a plugin tokenizer without an eval split, an exotic sample: leave the field empty
        return None


def read_curves(leaf: Path, max_points: int = 200) -> dict[str, Any]:
    """The pre-training loss and the k-NN monitor from ``metrics.jsonl``, at most ``max_points`` loss points."""
    path = leaf / "metrics.jsonl"
    loss: list[list[float]] = []
    monitor: dict[str, list[list[float]]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            step = row.get("step")
            if step is None:
                continue
            if isinstance(row.get("train/loss"), int | float):
                loss.append([int(step), float(row["train/loss"])])
            for k, v in row.items():
                if k.startswith("monitor/") and isinstance(v, int | float):
                    monitor.setdefault(k.removeprefix("monitor/"), []).append([int(step), float(v)])
    if len(loss) > max_points:
        stride = math.ceil(len(loss) / max_points)
        loss = loss[::stride] + ([loss[-1]] if (len(loss) - 1) % stride else [])
    return {"loss": loss, "monitor": monitor}


def _model_args(config: dict[str, Any]) -> dict[str, Any]:
    return (config.get("model") or {}).get("args") or {}


def _masking(config: dict[str, Any]) -> tuple[str | None, float | None]:
    args = _model_args(config)
    ratio = args.get("mask_ratio", (args.get("masking_args") or {}).get("ratio"))
    masking = args.get("masking")
    if isinstance(masking, dict):
        masking = masking.get("name")
    return masking, ratio


def build_entry_record(suite: str, entry: Any, run_dir: Path, command: str, entry_wall_s: float,
                       peak_rss_mb: float | None, figures_dir: Path, code: dict[str, Any] | None = None,
                       recipe_sha: str | None = None) -> dict[str, Any]:
    """The record of one finished suite entry (see the module docstring)."""
    import yaml

    results_path = run_dir / "results.json"
    doc, results = read_results(results_path)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    configs = config.get("variants") or {None: config}
    pretrain: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    params: dict[str, int | None] = {}
    for leaf in _leaves(run_dir):
        ds = _dataset_of(leaf, run_dir)
        cfg = configs.get(ds) or next((v for k, v in configs.items() if k and k.lower() == ds), None) or config
        label = (ds or (cfg.get("data") or {}).get("label") or (cfg.get("data") or {}).get("args", {}).get("name")
                 or (cfg.get("data") or {}).get("name") or "").lower()
        summ = json.loads((leaf / "pretrain_summary.json").read_text())
        if label in pretrain:  # another seed of the same dataset: keep the first seed's summary and curve
            pretrain[label].setdefault("other_seeds", []).append({k: summ.get(k) for k in ("steps", "wall_time_s", "final_loss")})
            continue
        tps = tokens_per_sample(leaf, cfg)
        masking, ratio = _masking(cfg)
        trainer = cfg.get("trainer") or {}
        pretrain[label] = {
            "steps": summ.get("steps"), "epochs": trainer.get("epochs"), "effective_batch": summ.get("effective_batch"),
            "wall_time_s": summ.get("total_wall_time_s") or summ.get("wall_time_s"),
            "samples_per_s": summ.get("samples_per_s"),
            "tokens_per_sample": tps,
            "tokens_per_s": (summ["samples_per_s"] * tps) if tps and summ.get("samples_per_s") else None,
            "final_loss": summ.get("final_loss"), "precision": summ.get("precision"), "threads": summ.get("threads"),
            "data_wait_share": summ.get("data_wait_share"), "bad_samples": summ.get("bad_samples"),
            "masking": masking, "mask_ratio": ratio,
        }
        params[label] = count_params(leaf)
        curves[label] = read_curves(leaf)
    figure = None
    first = _leaves(run_dir)[:1]
    for leaf in first:
        for name in FIGURES:
            if (leaf / name).is_file():
                figures_dir.mkdir(parents=True, exist_ok=True)
                figure = f"{entry.name}.png"
                shutil.copyfile(leaf / name, figures_dir / figure)
                break
    hw = doc.get("hardware") or hardware()
    return {
        "schema": SCHEMA, "suite": suite, "entry": entry.name, "method": entry.method or entry.name,
        "recipe": entry.recipe, "recipe_sha": recipe_sha, "overrides": list(entry.overrides), "command": command,
        "main": {"protocol": entry.main_protocol, "metric": entry.main_metric}, "notes": entry.notes,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "code": code or code_version(), "hardware": hw, "entry_wall_time_s": round(entry_wall_s, 1),
        "peak_rss_mb": None if peak_rss_mb is None else round(peak_rss_mb, 1),
        "pretrain": pretrain, "curves": curves, "figure": figure,
        "records": grouped(rows(results, pretrain, params, hw, peak_rss_mb), entry.groups),
    }


def grouped(records: list[dict[str, Any]], groups: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    """``records`` plus, per ``(label, prefix)``, one row per (protocol, metric) averaging the datasets whose name
    starts with ``prefix`` (value and baseline: mean over datasets; std: over datasets; seeds: every dataset's)."""
    import statistics

    out = list(records)
    for label, prefix in groups:
        members: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in records:
            if r["dataset"].startswith(prefix.lower()):
                members.setdefault((r["protocol"], r["metric"]), []).append(r)
        for rs in members.values():
            vals = [r["value"] for r in rs]
            bases = [r["baseline"]["value"] for r in rs if r.get("baseline")]
            first = rs[0]
            row = {**first, "dataset": label, "value": statistics.fmean(vals),
                   "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "values": vals,
                   "seeds": [s for r in rs for s in r["seeds"]], "over": [r["dataset"] for r in rs],
                   "wall_time_s": sum(r["wall_time_s"] or 0 for r in rs) or None, "published": None}
            if len(bases) == len(rs):
                row["baseline"] = {**first["baseline"], "value": statistics.fmean(bases),
                                   "std": statistics.stdev(bases) if len(bases) > 1 else 0.0}
                row["gain"] = statistics.fmean([r["gain"] for r in rs])
            else:
                row["baseline"], row["gain"] = None, None
            out.append(row)
    return out


def rows(results: list[Result], pretrain: dict[str, Any], params: dict[str, int | None], hw: dict[str, Any],
         peak_rss_mb: float | None) -> list[dict[str, Any]]:
    """One record per (dataset, protocol, metric) of the pre-trained model, with its baseline and published figure."""
    by_key: dict[tuple[str, str, str, str, str], Result] = {}
    for r in results:  # the first published figure of a metric is the one shown (a recipe lists its main one first)
        key = (r.dataset, r.model, r.protocol, r.metric, r.init)
        if r.init != "published" or key not in by_key:
            by_key[key] = r
    main = next((r.model for r in results if r.init == "pretrained"), None)
    out = []
    for r in results:
        if r.init != "pretrained":
            continue
        base = by_key.get((r.dataset, r.model, r.protocol, r.metric, "random"))
        pub = by_key.get((r.dataset, r.model, r.protocol, r.metric, "published"))
        pre = pretrain.get(r.dataset) or (next(iter(pretrain.values())) if len(pretrain) == 1 else {})
        if r.model != main:  # a recipe's ablation (another model of the same run): only its steps are known here
            pre = {"steps": r.steps}
        gain = None
        if base is not None:
            gain = (r.value - base.value) if r.higher_is_better else (base.value - r.value)
        out.append({
            "system": r.system, "modality": r.modality, "dataset": r.dataset, "model": r.model,
            "params": None if r.model != main else params.get(r.dataset) if r.dataset in params else (
                next(iter(params.values())) if len(params) == 1 else None),
            "masking": pre.get("masking"), "mask_ratio": pre.get("mask_ratio"),
            "steps": pre.get("steps"), "epochs": pre.get("epochs"), "effective_batch": pre.get("effective_batch"),
            "device": hw.get("gpu") or hw.get("cpu"), "wall_time_s": pre.get("wall_time_s"),
            "samples_per_s": pre.get("samples_per_s"), "tokens_per_s": pre.get("tokens_per_s"),
            "peak_rss_mb": None if peak_rss_mb is None else round(peak_rss_mb, 1), "final_loss": pre.get("final_loss"),
            "protocol": r.protocol, "metric": r.metric, "higher_is_better": r.higher_is_better,
            "value": r.value, "std": r.std, "values": r.values, "seeds": r.seeds,
            "protocol_wall_time_s": r.wall_time_s,
            "baseline": None if base is None else {"init": "random", "value": base.value, "std": base.std,
                                                   "what": "from scratch" if "finetune" in r.protocol else "random init"},
            "gain": gain,
            "published": None if pub is None else {"value": pub.value, "source": pub.extra.get("source", ""),
                                                   "setting": pub.extra.get("setting", "")},
        })
    return out


def write_record(path: Path, record: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_records(folder: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(folder.glob("*.json")):
        doc = json.loads(p.read_text())
        if doc.get("schema") == SCHEMA:
            out.append(doc)
    return out
