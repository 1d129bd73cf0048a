"""Spectrogram reconstruction figure (Audio-MAE Fig. 1 style): for each clip the masked input (hidden patches
blank), the reconstruction with the visible patches pasted back, and the original, side by side.

With a ``norm_pix_loss`` model the prediction is in per-patch normalised units; the core's
:func:`~maezoo.core.reconstruct.reconstruct` maps it back with the original patch's mean and standard deviation,
as the MAE demo does.
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
def reconstruction_rows(model: MaskedAutoencoder, fbanks: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``[B, T, F]`` normalised filterbanks -> ``[B, 3, T, F]`` (masked with NaN where hidden, reconstruction, original)."""
    rec = reconstruct(model, fbanks, generator=generator)
    tok = model.tokenizer
    masked = tok.unpatchify(rec.masked(float("nan")), rec.grid)
    recon = tok.unpatchify(rec.pasted, rec.grid)
    return torch.stack([masked, recon, fbanks.float()], dim=1)


def save_spectrograms(model: MaskedAutoencoder, fbanks: Tensor, path: str | Path, seed: int = 0,
                      titles: list[str] | None = None) -> Path:
    """Write the masked / reconstructed / original spectrograms of ``fbanks`` ``[B, T, F]`` as one PNG."""
    plt = pyplot()

    rows = reconstruction_rows(model, fbanks, torch.Generator(device=fbanks.device).manual_seed(seed)).cpu()
    lo, hi = float(fbanks.min()), float(fbanks.max())
    b = rows.shape[0]
    fig, axes = plt.subplots(b, 3, figsize=(9, 1.6 * b + 0.4), squeeze=False)
    for i in range(b):
        for j, name in enumerate(("masked", "reconstruction", "original")):
            ax = axes[i][j]
            ax.imshow(rows[i, j].T.numpy(), origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0 and titles:
                ax.set_ylabel(titles[i], fontsize=8)
    fig.supxlabel("time (frames)", fontsize=8)
    fig.supylabel("mel bin", fontsize=8)
    return save_figure(fig, path, dpi=100)


@register("visualizer", "audio")
def visualize_audio_batch(model: MaskedAutoencoder, dataset, path: str | Path, num: int = 8, seed: int = 0) -> Path:
    """Reconstruction figure for the first ``num`` clips of an ``(fbank, label)`` dataset."""
    n = min(num, len(dataset))
    fbanks = torch.stack([dataset[i][0] for i in range(n)]).to(next(model.parameters()).device)
    classes = getattr(dataset, "classes", None)
    labels = [dataset[i][1] for i in range(n)]
    titles = [str(classes[y]) if classes and isinstance(y, int) else "" for y in labels]
    return save_spectrograms(model, fbanks, path, seed=seed, titles=titles)
