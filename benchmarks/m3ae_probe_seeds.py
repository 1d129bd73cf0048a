"""M3AE's claim at several seeds: the image-only linear probe of pair-trained M3AE beside image-only MAE.

    python benchmarks/m3ae_probe_seeds.py RUN [RUN ...] --out benchmarks/results/m3ae_probe_seeds.jsonl

Each RUN is a folder of ``maezoo run multimodal/m3ae_cifar10 "seeds=[S]" ...`` (its pair-trained weights, and the
image-only MAE of the recipe's ``image_only`` ablation in ``RUN/ablations/image_only``). For every model the full
CIFAR-10 splits (50,000 / 10,000 images, captions dropped) are encoded once per pooling (the class token, as both
papers' linear-probe code does, and the mean of the image tokens), and the recipe's probe (BatchNorm + linear, SGD,
base lr 0.1) is trained for 30 and for 90 epochs (MAE's schedule) on the same features. Figures are appended to
``--out`` (one row per run, model, pooling and schedule), so two processes can share the work and one file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from maezoo.data.modal import ModalityView
from maezoo.engine.checkpoint import load_model, resolve_weights
from maezoo.eval.features import extract_features, make_loader
from maezoo.eval.linprobe import linear_probe
from maezoo.registry import build

MODELS = {"m3ae": ".", "image-only MAE": "ablations/image_only"}


def _images(data: dict, split: str, vocab: Path | None) -> ModalityView:
    """The image half of the run's own dataset (its ``config.yaml``), with the vocabulary kept beside its weights."""
    args = {**data.get("args", {}), **({"vocab_file": str(vocab)} if vocab else {})}
    return ModalityView(build("dataset", data["name"], split=split, transform="eval", **args), ["image"])


def probe_run(run: Path, epochs: list[int], pools: list[str], batch_size: int) -> list[dict]:
    config = yaml.safe_load((run / "config.yaml").read_text())
    seed = config["seeds"][0]
    vocab = run / "tokenizer.json" if (run / "tokenizer.json").is_file() else None
    data = {split: _images(config["data"], split, vocab) for split in ("train", "test")}
    rows = []
    for name, sub in MODELS.items():
        model, _ = load_model(resolve_weights(run / sub).parent)
        for pool in pools:
            t0 = time.perf_counter()
            feats = {s: extract_features(model, make_loader(d, batch_size, num_workers=1), pool=pool,
                                         amp_dtype=torch.bfloat16) for s, d in data.items()}
            t_feat = time.perf_counter() - t0
            for ep in epochs:
                met = linear_probe(*feats["train"], *feats["test"], epochs=ep, batch_size=256, base_lr=0.1, seed=seed)
                row = {"run": str(run), "seed": seed, "model": name, "pool": pool, "epochs": ep,
                       "top1": round(met["top1"], 2), "top5": round(met["top5"], 2),
                       "train_samples": len(feats["train"][1]), "test_samples": len(feats["test"][1]),
                       "features_s": round(t_feat, 1), "probe_s": round(met["wall_time_s"], 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, nargs="+", default=[30, 90])
    ap.add_argument("--pools", nargs="+", default=["cls", "mean"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for run in a.runs:
        rows = probe_run(run, a.epochs, a.pools, a.batch_size)
        with a.out.open("a") as f:  # one JSON line per row
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
