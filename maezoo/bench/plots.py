"""PNG plots of a suite's records: pre-training loss curves, and downstream score against pre-training steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maezoo.figures import pyplot, save_figure


def plot_loss_curves(records: list[dict[str, Any]], path: Path) -> Path:
    """One panel per entry (loss scales differ between modalities): pre-training loss against steps."""
    plt = pyplot()
    curves = [(r["method"], ds, c["loss"]) for r in records for ds, c in (r.get("curves") or {}).items() if c.get("loss")]
    n = max(1, len(curves))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (method, ds, pts) in zip(axes.flat, curves, strict=False):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
        ax.set_title(f"{method} · {ds}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    return save_figure(fig, path, dpi=110)


def plot_score_vs_steps(records: list[dict[str, Any]], path: Path) -> Path | None:
    """The k-NN monitor's top-1 during pre-training, for the entries that ran it; None when none did."""
    series = []
    for r in records:
        for ds, c in (r.get("curves") or {}).items():
            for metric, pts in (c.get("monitor") or {}).items():
                if pts and metric.endswith("top1"):
                    series.append((f"{r['method']} · {ds}", pts))
    if not series:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for label, pts in series:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2, label=label)
    ax.set_xlabel("pre-training step")
    ax.set_ylabel("k-NN top-1 (monitor subset)")
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110)
