"""Time-series figure (PNG, matplotlib): masked input / reconstruction / truth for a few channels.

The reconstruction figure is registered as the ``series_patch`` visualiser (the tokenizer's name), which the
pre-training system calls after pre-training with the model and the test split. Values are shown on the
tokenizer's scale (RevIN-normalised when RevIN is on), where the model reconstructs them; a ``norm`` target's
prediction is mapped back to that scale with each patch's own statistics, and a decoder-masking subset is pasted
into the full series (the core's :func:`~maezoo.core.reconstruct.reconstruct`). Forecasts against the
truth are drawn by the forecast protocols (:func:`maezoo.eval.forecast.save_forecast_figure`, written to the run
folder).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from maezoo.core.mae import MaskedAutoencoder
from maezoo.core.reconstruct import reconstruct
from maezoo.figures import pyplot, save_figure
from maezoo.registry import register


@torch.no_grad()
def reconstruction_series(model: MaskedAutoencoder, x: Tensor, generator: torch.Generator | None = None
                          ) -> dict[str, Tensor]:
    """Truth, masked input (hidden steps NaN) and reconstruction (visible steps pasted back) per token row.

    Shapes:
        x ``[B, C, L]`` -> each ``[B', L']`` (``B' = B * C`` channel-independent; ``L'`` after crop/pad),
        plus ``hidden`` ``[B', L']`` bool
    """
    rec = reconstruct(model, x, generator=generator)
    tok = model.tokenizer

    def series(p: Tensor) -> Tensor:
        s = tok.unpatchify(p, rec.grid)
        return s.reshape(-1, s.shape[-1])

    return {"truth": series(rec.patches), "masked": series(rec.masked(float("nan"))), "recon": series(rec.pasted),
            "hidden": series(rec.hidden_values().float()) > 0}


def save_reconstruction_figure(model: MaskedAutoencoder, x: Tensor, path: str | Path, rows: int = 4, seed: int = 0
                               ) -> Path:
    """One panel per token row (a channel of a sample): truth, masked input and reconstruction."""
    plt = pyplot()
    r = reconstruction_series(model, x, torch.Generator(device=x.device).manual_seed(seed))
    n = min(rows, r["truth"].shape[0])
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.8 * n), squeeze=False)
    for i in range(n):
        ax = axes[i][0]
        t = torch.arange(r["truth"].shape[1]).numpy()
        ax.plot(t, r["truth"][i].cpu().numpy(), color="black", lw=0.8, label="truth")
        ax.plot(t, r["masked"][i].cpu().numpy(), color="tab:blue", lw=1.0, label="visible")
        rec = torch.where(r["hidden"][i], r["recon"][i], torch.full_like(r["recon"][i], float("nan")))
        ax.plot(t, rec.cpu().numpy(), color="tab:red", lw=1.0, label="reconstruction")
        ax.set_ylabel(f"row {i}", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=7, loc="upper right", ncol=3)
    return save_figure(fig, path, dpi=100)


@register("visualizer", "series_patch")
def visualize_series(model: MaskedAutoencoder, dataset, path: str | Path, num: int = 4, seed: int = 0) -> Path:
    """Reconstruction figure for the first channels of the first window of a ``(x [C, L], y)`` dataset."""
    x = dataset[0][0].unsqueeze(0).to(next(model.parameters()).device)
    return save_reconstruction_figure(model, x, path, rows=num, seed=seed)


visualize_series.filename = "reconstructions.png"  # type: ignore[attr-defined]

