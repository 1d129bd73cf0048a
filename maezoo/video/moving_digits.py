"""A "moving digits" video set made from scikit-learn's bundled handwritten digits, written as H.264 mp4.

Moving-MNIST conventions: a 64 x 64 canvas, two digits (the 8 x 8 scans upsampled to 24 x 24) bouncing off the
borders at 2-6 px/frame, 16 frames. The label needs time: both digits start moving in the same diagonal
direction (class 0..3 = right-down, left-down, right-up, left-up; each digit has its own speed), so no single
frame tells the class, only the motion does. Train and test use disjoint digit scans.

The files are generated once under ``<data root>/moving_digits/<config>/{train,test}/<class>/NNNN.mp4`` (a
folder the video dataset reads like any ``class/xxx.mp4`` folder); generation is deterministic in ``seed``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from maezoo.config import data_root

DIRECTIONS = ("right-down", "left-down", "right-up", "left-up")
CANVAS, DIGIT, FRAMES = 64, 24, 16


def _digit_images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits upsampled to ``DIGIT`` px (bilinear via PIL), ``[N, DIGIT, DIGIT]`` float in [0, 1], split."""
    from PIL import Image
    from sklearn.datasets import load_digits

    imgs = load_digits().images / 16.0
    up = np.stack([np.asarray(Image.fromarray((im * 255).astype(np.uint8)).resize((DIGIT, DIGIT), Image.BILINEAR))
                   for im in imgs]).astype(np.float32) / 255.0
    order = np.random.default_rng(seed).permutation(len(up))
    cut = int(0.7 * len(up))
    return up[order[:cut]], up[order[cut:]]


def render_clip(digits: np.ndarray, direction: int, rng: np.random.Generator, frames: int = FRAMES,
                canvas: int = CANVAS) -> np.ndarray:
    """Two digits bouncing from a shared diagonal start direction; ``[frames, canvas, canvas]`` uint8."""
    sx, sy = (1, 1) if direction == 0 else (-1, 1) if direction == 1 else (1, -1) if direction == 2 else (-1, -1)
    out = np.zeros((frames, canvas, canvas), np.float32)
    room = canvas - digits.shape[-1]
    for d in digits:
        pos = rng.uniform(0, room, size=2)
        vel = np.array([sx * rng.uniform(2, 6), sy * rng.uniform(2, 6)])
        for t in range(frames):
            x, y = int(round(pos[0])), int(round(pos[1]))
            s = d.shape[-1]
            out[t, y:y + s, x:x + s] = np.maximum(out[t, y:y + s, x:x + s], d)
            pos = pos + vel
            for a in range(2):  # bounce off the borders
                if pos[a] < 0:
                    pos[a], vel[a] = -pos[a], -vel[a]
                elif pos[a] > room:
                    pos[a], vel[a] = 2 * room - pos[a], -vel[a]
    return (out * 255).round().astype(np.uint8)


def moving_digits_folder(train_per_class: int = 150, test_per_class: int = 50, seed: int = 0,
                         root: str | Path | None = None) -> Path:
    """The folder of the set (generated on first use): ``train/<class>/*.mp4`` and ``test/<class>/*.mp4``."""
    from maezoo.video.io import write_mp4

    base = (Path(root) if root else data_root()) / "moving_digits"
    name = f"n{train_per_class}-{test_per_class}_s{seed}_{CANVAS}px_{FRAMES}f"
    folder = base / name
    if (folder / "meta.json").is_file():
        return folder
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".{name}.tmp-"))
    try:
        pools = _digit_images(seed)
        for split, per_class, pool, split_seed in (("train", train_per_class, pools[0], seed),
                                                   ("test", test_per_class, pools[1], seed + 10_000)):
            rng = np.random.default_rng(split_seed)
            for c, cname in enumerate(DIRECTIONS):
                for i in range(per_class):
                    pick = pool[rng.choice(len(pool), size=2, replace=False)]
                    clip = render_clip(pick, c, rng)
                    write_mp4(tmp / split / f"{c}_{cname}" / f"{i:04d}.mp4", np.repeat(clip[..., None], 3, axis=-1))
        meta = {"classes": list(DIRECTIONS), "canvas": CANVAS, "digit": DIGIT, "frames": FRAMES, "seed": seed,
                "speed_px_per_frame": [2, 6], "train_per_class": train_per_class, "test_per_class": test_per_class,
                "source": "sklearn.datasets.load_digits (UCI optical handwritten digits), upsampled 8->24 px"}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if (folder / "meta.json").is_file():  # another process finished first
            return folder
        if folder.exists():  # an incomplete earlier attempt
            shutil.rmtree(folder)
        try:
            tmp.replace(folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
