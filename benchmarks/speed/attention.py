"""Forward + backward of one attention call at MAE's shapes: fused SDPA vs timm's explicit path (q k^T, softmax, v)
vs SDPA on fp32 copies (half precision only).

This is the measurement behind ``maezoo.core.attention`` kernel bounds: the kernels are timed
interleaved in one process (median and min-max of ``--repeats``), per shape and dtype.

Usage::

    python benchmarks/speed/attention.py                     # writes benchmarks/speed/results/attention_<device>.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
#: (batch, heads, tokens, head dim): ViT-B decoder (8 x 512, 16 heads) on 196 + 1 tokens, ViT-B encoder on the
#: 49 + 1 visible tokens, and longer sequences where SDPA wins
SHAPES = [(8, 16, 197, 32), (8, 12, 50, 64), (8, 16, 256, 32), (2, 16, 512, 32), (1, 6, 1568, 64)]


def run(kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> float:
    t0 = time.perf_counter()
    if kind == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v)
    elif kind == "sdpa_fp32":  # SDPA on fp32 copies, the output cast back (measured; never the fastest in bf16)
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
    else:
        out = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
    out.sum().backward()
    if q.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    load_start = os.getloadavg()[0]
    for dtype in (torch.bfloat16, torch.float32):
        for shape in SHAPES:
            q, k, v = (torch.randn(*shape, dtype=dtype, device=args.device, requires_grad=True) for _ in range(3))
            kinds = ("sdpa", "explicit", "sdpa_fp32") if dtype != torch.float32 else ("sdpa", "explicit")
            times: dict[str, list[float]] = {kind: [] for kind in kinds}
            for r in range(args.repeats + 1):
                for kind in kinds if r % 2 == 0 else kinds[::-1]:
                    dt = run(kind, q, k, v)
                    if r:  # the first round warms up
                        times[kind].append(dt)
            med = {kind: statistics.median(ts) for kind, ts in times.items()}
            rows.append({"shape": shape, "dtype": str(dtype).removeprefix("torch."), "median_ms": {
                kind: 1e3 * m for kind, m in med.items()}, "min_max_ms": {kind: [1e3 * min(ts), 1e3 * max(ts)]
                                                                          for kind, ts in times.items()},
                "sdpa_over_explicit": med["sdpa"] / med["explicit"]})
            print(f"{rows[-1]['dtype']:>8} {shape}: " + ", ".join(f"{kind} {1e3 * m:.2f} ms" for kind, m in med.items()),
                  flush=True)
    doc = {"benchmark": "attention forward + backward", "device": args.device,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
           "torch": torch.__version__,
           "load_average_start_end": [load_start, os.getloadavg()[0]], "rows": rows}
    out = args.out or HERE / "results" / f"attention_{args.device}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
