"""Pre-training speed of ConvMAE-Base vs MAE ViT-B/16 (images/s), one process, interleaved, median.

Both are maezoo models (``convmae_base``, ``mae_vit_base_patch16``) at the same input size, mask ratio 0.75,
norm-pix loss and decoder 8 x 512; one step is forward + backward + AdamW step (maezoo's
:func:`maezoo.optim.build_optimizer`) on the same synthetic batch, under bf16 autocast by default. The two
models alternate (order reversed on every other repeat, so slow drifts of a shared machine cancel out); each
figure is the median over ``--repeats`` timed steps after ``--warmup`` untimed ones. The JSON records
``torch.backends.cpu.get_cpu_capability()``, the thread count and the 1-minute load average before and after
(above the thread count: the machine was shared while measuring).

Usage::

    python benchmarks/convmae_speed.py                                   # CPU, batch 8, 224², bf16
    python benchmarks/convmae_speed.py --device cuda --batch 256         # a GPU
    python benchmarks/convmae_speed.py --out benchmarks/results/convmae_speed_cpu.json

Writes ``--out`` (JSON) and a Markdown table beside it (same name, ``.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import maezoo
from maezoo.optim import build_optimizer

MODELS = {"convmae_base": "ConvMAE-Base", "mae_vit_base_patch16": "MAE ViT-B/16"}


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def step_fn(name: str, args: argparse.Namespace):
    """A closure running one pre-training step of model ``name``; returns (closure, parameter count)."""
    model = maezoo.create_model(name, img_size=args.image_size).to(args.device).train()
    opt = build_optimizer(model, 1.5e-4)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=args.device)

    def run() -> float:
        if args.device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with autocast(args.device, args.precision):
            loss = model(x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    return run, sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--out", default="benchmarks/results/convmae_speed_cpu.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = {name: step_fn(name, args) for name in MODELS}
    for _ in range(args.warmup):
        for run, _ in steps.values():
            run()
    load_start = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in MODELS}
    for r in range(args.repeats):
        order = list(MODELS) if r % 2 == 0 else list(reversed(MODELS))
        for name in order:
            times[name].append(steps[name][0]())
    load_end = os.getloadavg()[0]
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {"label": MODELS[name], "params": steps[name][1], "median_s_per_step": med,
                      "images_per_s": args.batch / med, "min_s": min(ts), "max_s": max(ts), "times_s": ts}
    doc = {
        "what": "pre-training step (forward + backward + AdamW), mask 0.75, norm-pix, decoder 8x512",
        "device": args.device, "batch": args.batch, "image_size": args.image_size, "precision": args.precision,
        "repeats": args.repeats, "warmup": args.warmup, "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "processor": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "torch": torch.__version__, "load_avg_1min": [load_start, load_end],
        "shared_machine": max(load_start, load_end) > torch.get_num_threads(), "models": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# ConvMAE-Base vs MAE ViT-B pre-training speed ({args.device}, batch {args.batch}, {args.image_size}², "
        f"{args.precision})", "",
        f"Median of {args.repeats} steps after {args.warmup} warm-up, interleaved in one process; "
        f"{doc['threads']} threads, CPU capability {doc['cpu_capability']}, torch {torch.__version__}; 1-minute "
        f"load {load_start:.1f} / {load_end:.1f} at start / end ("
        + ("shared machine: absolute figures are pessimistic, the ratio is the comparison" if doc["shared_machine"]
           else "a quiet machine") + ").", "",
        "| model | params | s/step (median, min-max) | images/s |", "|---|---|---|---|",
    ]
    for r in rows.values():
        lines.append(f"| {r['label']} | {r['params']:,} | {r['median_s_per_step']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}) "
                     f"| {r['images_per_s']:.2f} |")
    ratio = rows["convmae_base"]["images_per_s"] / rows["mae_vit_base_patch16"]["images_per_s"]
    lines += ["", f"ConvMAE-Base / ViT-B images/s: {ratio:.2f}", "",
              f"Command: `python benchmarks/convmae_speed.py --device {args.device} --batch {args.batch} "
              f"--image-size {args.image_size} --precision {args.precision} --repeats {args.repeats} --out {args.out}`"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
