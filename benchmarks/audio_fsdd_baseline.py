"""Hand-made FSDD baseline: log-mel statistics + logistic regression, official split and leave-one-speaker-out.

Features per clip: mean and standard deviation over the clip's own frames (no padding) of each of the 128 Kaldi
log-mel bins (the same filterbanks the ``fsdd`` dataset gives Audio-MAE), standardised on the training split;
scikit-learn's ``LogisticRegression`` (lbfgs, ``C=1``, 2,000 iterations). Clips shorter than one 16-frame patch are
skipped exactly as for the model, so both see the same clips.

Usage::

    python benchmarks/audio_fsdd_baseline.py --out benchmarks/results/audio_fsdd_baseline.json

Prints a Markdown table and writes the JSON (accuracy per split, LOSO mean).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import maezoo
from maezoo.audio.data import FSDD_SPEAKERS


def features(ds) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 256]`` per-bin mean and std over each clip's valid frames, and the labels."""
    out = []
    for fb, n in zip(ds.fbanks, ds.frames.tolist()):
        f = fb[:n]
        out.append(torch.cat([f.mean(0), f.std(0)]).numpy())
    return np.stack(out), np.asarray(ds.targets)


def accuracy(name: str, frames: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr, te = (maezoo.build("dataset", "fsdd", split=s, transform="eval", name=name, target_frames=frames)
              for s in ("train", "test"))
    (xtr, ytr), (xte, yte) = features(tr), features(te)
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(xtr), ytr)
    return 100.0 * float((clf.predict(scaler.transform(xte)) == yte).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64, help="frames the clips are cropped to (the recipe's 64)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    acc = {"fsdd-official": accuracy("fsdd-official", args.frames)}
    for s in FSDD_SPEAKERS:
        acc[f"fsdd-loso-{s}"] = accuracy(f"fsdd-loso-{s}", args.frames)
    loso = [v for k, v in acc.items() if "loso" in k]
    res = {"features": "log-mel mean+std per bin (256)", "classifier": "LogisticRegression(C=1)",
           "frames": args.frames, "accuracy": acc, "loso_mean": float(np.mean(loso)), "loso_std": float(np.std(loso)),
           "wall_time_s": time.perf_counter() - t0, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    print("| split | top-1 |\n|---|---|")
    for k, v in acc.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| LOSO mean (6 speakers) | {res['loso_mean']:.2f} ± {res['loso_std']:.2f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
