"""MAE-paper-style reconstruction figure (figure 2): for each image, the masked input (hidden patches
greyed), the reconstruction with the visible patches pasted back, and the original, side by side.

With a ``norm_pix_loss`` model the prediction is in per-patch normalised units; the core's
:func:`~maezoo.core.reconstruct.reconstruct` maps it back with the original patch's mean and standard
deviation (as the MAE demo does), so only the patch's structure, not its brightness, is the model's guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from maezoo.core.mae import MaskedAutoencoder
from maezoo.core.reconstruct import reconstruct
from maezoo.figures import RECONSTRUCTION_COLUMNS, label_columns
from maezoo.registry import register


@torch.no_grad()
def reconstruction_grid(
    model: MaskedAutoencoder,
    images: Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``[B, C, H, W]`` normalised images -> ``[3B, C, H, W]`` rows of (masked, reconstruction+visible, original)
    in pixel space [0, 1]."""
    rec = reconstruct(model, images, generator=generator)
    tok = model.tokenizer
    masked = tok.unpatchify(rec.masked(0.0), rec.grid)
    recon = tok.unpatchify(rec.pasted, rec.grid)

    def to_pixels(x: Tensor) -> Tensor:
        if mean is not None and std is not None:
            x = x * torch.tensor(std, device=x.device).view(1, -1, 1, 1) + torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
        return x.clamp(0, 1)

    masked_px = to_pixels(masked)
    masked_px = torch.where(tok.unpatchify(rec.hidden_values().float(), rec.grid) > 0, 0.5, masked_px)
    rows = torch.stack([masked_px, to_pixels(recon), to_pixels(images)], dim=1)  # [B, 3, C, H, W]
    return rows.flatten(0, 1)


def save_reconstructions(
    model: MaskedAutoencoder,
    images: Tensor,
    path: str | Path,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
    upscale: int = 1,
) -> Path:
    """Write the reconstruction figure as a PNG (three columns per row: masked, reconstruction, original)."""
    g = torch.Generator().manual_seed(seed)
    imgs = reconstruction_grid(model, images, mean, std, generator=g)
    if upscale > 1:
        imgs = imgs.repeat_interleave(upscale, -1).repeat_interleave(upscale, -2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(imgs.cpu(), nrow=3, padding=2, pad_value=1.0), path)
    return label_columns(path, RECONSTRUCTION_COLUMNS)


@register("visualizer", "image")
def visualize_image_batch(model: MaskedAutoencoder, dataset, path: str | Path, num: int = 8, seed: int = 0) -> Path:
    """Reconstruction figure for the first ``num`` samples of a ``(image, label)`` dataset."""
    images = torch.stack([dataset[i][0] for i in range(min(num, len(dataset)))])
    images = images.to(next(model.parameters()).device)
    size = max(images.shape[-2:])
    return save_reconstructions(model, images, path, getattr(dataset, "mean", None), getattr(dataset, "std", None),
                                seed=seed, upscale=max(1, 96 // size))
