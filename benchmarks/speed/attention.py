"""Forward + backward of one attention call at MAE's shapes: fused SDPA vs timm's explicit path (q k^T, softmax, v).

This is the measurement behind ``maezoo.core.encoder.CPU_EXPLICIT_ATTENTION_MAX_TOKENS``: the two are timed
interleaved in one process (median and min-max of ``--repeats``), per shape and dtype.

Usage::

    python benchmarks/speed/attention.py                     # writes benchmarks/speed/results/attention_<device>.json
"""

from __future__ import annotations

import argparse
import json
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
    for dtype in (torch.bfloat16, torch.float32):
        for shape in SHAPES:
            q, k, v = (torch.randn(*shape, dtype=dtype, device=args.device, requires_grad=True) for _ in range(3))
            times: dict[str, list[float]] = {"sdpa": [], "explicit": []}
            for r in range(args.repeats + 1):
                for kind in ("sdpa", "explicit") if r % 2 == 0 else ("explicit", "sdpa"):
                    dt = run(kind, q, k, v)
                    if r:  # the first round warms up
                        times[kind].append(dt)
            med = {kind: statistics.median(ts) for kind, ts in times.items()}
            rows.append({"shape": shape, "dtype": str(dtype).removeprefix("torch."), "median_ms": {
                kind: 1e3 * m for kind, m in med.items()}, "min_max_ms": {kind: [1e3 * min(ts), 1e3 * max(ts)]
                                                                          for kind, ts in times.items()},
                "sdpa_over_explicit": med["sdpa"] / med["explicit"]})
            print(f"{rows[-1]['dtype']:>8} {shape}: sdpa {1e3 * med['sdpa']:.2f} ms, explicit "
                  f"{1e3 * med['explicit']:.2f} ms ({rows[-1]['sdpa_over_explicit']:.2f}x)", flush=True)
    doc = {"benchmark": "attention forward + backward", "device": args.device,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "rows": rows}
    out = args.out or HERE / "results" / f"attention_{args.device}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
