"""VideoMAE reconstruction figures: PNG strips and an animated GIF.

For each clip three labelled rows of frames: the masked input (hidden tubelets grey), the reconstruction
with the visible tubelets pasted back, and the original. With VideoMAE's normalised target the prediction
is mapped back with each tubelet's own per-channel mean and std (as the VideoMAE demo does; the core's
:func:`~maezoo.core.reconstruct.reconstruct`), so only its structure is the model's guess. The figure shows
the full decoder output (decoder masking is switched off while drawing it). The GIF plays the same three
panels side by side, one clip per row.

Shapes:
    reconstruction_strips(model, clips [B, C, T, H, W]) -> [B, 3, T, C, H, W] pixels in [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw
from torch import Tensor

from maezoo.core.mae import MaskedAutoencoder
from maezoo.core.reconstruct import reconstruct
from maezoo.registry import register

ROWS = ("masked", "reconstruction", "original")


@torch.no_grad()
def reconstruction_strips(model: MaskedAutoencoder, clips: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``[B, C, T, H, W]`` normalised clips -> ``[B, 3, T, C, H, W]`` (masked, reconstruction, original) in [0, 1]."""
    rec = reconstruct(model, clips, generator=generator, decoder_masking=False)  # patches in pixels
    tok = model.tokenizer
    rows = [tok.unpatchify(v, rec.grid) for v in (rec.masked(0.5), rec.pasted, rec.patches)]  # [B, C, T, H, W] each
    if getattr(tok, "mean", None) is None:  # pixels in normalised units: stretch each clip to [0, 1]
        lo = rows[2].amin(dim=(1, 2, 3, 4), keepdim=True)
        hi = rows[2].amax(dim=(1, 2, 3, 4), keepdim=True)
        rows = [(r - lo) / (hi - lo + 1e-6) for r in rows]
    return torch.stack(rows, dim=1).clamp(0, 1).permute(0, 1, 3, 2, 4, 5)


def _to_uint8(x: Tensor) -> np.ndarray:
    """``[..., C, H, W]`` in [0, 1] -> ``[..., H, W, 3]`` uint8."""
    x = x if x.shape[-3] == 3 else x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    return (x.movedim(-3, -1) * 255).round().to(torch.uint8).cpu().numpy()


def save_strips(strips: Tensor, png: str | Path, gif: str | Path | None = None, upscale: int = 1, fps: int = 4) -> Path:
    """Write the PNG (rows labelled, frames left to right) and optionally the GIF of ``[B, 3, T, C, H, W]`` strips."""
    if upscale > 1:
        strips = strips.repeat_interleave(upscale, -1).repeat_interleave(upscale, -2)
    b, r, t, c, h, w = strips.shape
    pad, label_w = 2, 110
    img = np.full((b * r * (h + pad) + b * 4 * pad, label_w + t * (w + pad), 3), 255, np.uint8)
    frames = _to_uint8(strips)  # [B, 3, T, H, W, 3]
    canvas = Image.new("RGB", (img.shape[1], img.shape[0]), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(b):
        for j in range(r):
            top = i * (r * (h + pad) + 4 * pad) + j * (h + pad)
            draw.text((4, top + h // 2 - 5), f"clip {i}: {ROWS[j]}", fill=(0, 0, 0))
            for k in range(t):
                canvas.paste(Image.fromarray(frames[i, j, k]), (label_w + k * (w + pad), top))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(png)
    if gif is not None:
        panels = rearrange(torch.from_numpy(frames), "b r t h w c -> t (b h) (r w) c").numpy()
        ims = [Image.fromarray(f) for f in panels]
        ims[0].save(gif, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
    return png


@register("visualizer", "video")
def visualize_video_batch(model: MaskedAutoencoder, dataset, path: str | Path, num: int = 4, seed: int = 0) -> Path:
    """Reconstruction strips (PNG) and an animated GIF beside it for the first ``num`` clips of a dataset."""
    clips = [dataset[i][0] for i in range(min(num, len(dataset)))]
    x = torch.stack([c[0] if c.dim() == 5 else c for c in clips])  # the first view of a multi-view sample
    x = x.to(next(model.parameters()).device)
    strips = reconstruction_strips(model, x, generator=torch.Generator().manual_seed(seed))
    path = Path(path)
    return save_strips(strips, path, path.with_suffix(".gif"), upscale=max(1, 64 // max(x.shape[-2:])))


visualize_video_batch.filename = "reconstructions.png"  # type: ignore[attr-defined]
