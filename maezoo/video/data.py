"""Video datasets: a folder (``<class>/xxx.mp4``) or a list file, frame sampling, crops and a decoded-clip cache.

Registered datasets (builders ``(split, transform, **args)`` returning ``(clip [C, T, H, W] float, label)``):

* ``video``: any videos you bring. ``root`` holds ``<split>/<class>/*.mp4`` (or ``<class>/*.mp4`` for every
  split), or ``train_list``/``test_list`` name list files in the forms VideoMAE and Kinetics/SSv2 users have:
  ``path label`` (space- or comma-separated), or VideoMAE V2's pre-training form ``path 0 -1`` (offset and
  label; ``-1`` = unlabelled). List paths are relative to ``root`` (or absolute).
* ``moving_digits``: the generated set of :mod:`maezoo.video.moving_digits` (real H.264 files).

Sampling: ``sampling="random"`` picks a random clip of ``num_frames`` frames ``frame_stride`` apart (the
centre clip for ``eval``); ``"segments"`` splits the video into ``num_frames`` equal segments and takes one
frame of each (random in training, the middle for ``eval``), as VideoMAE does for SSv2.
Transforms: ``pretrain``/``finetune`` = VideoMAE's multi-scale crop (scales 1, .875, .75, .66 of the short
side) resized to ``img_size`` (+ horizontal flip if ``flip``); ``eval`` = short side to ``img_size`` and a centre
crop. ``test_clips x test_crops > 1`` makes every ``test`` sample a stack ``[V, C, T, H, W]`` of views (clips
evenly spaced in time x crops along the long side) for the finetune protocol's ``views = V``.

Decoded-clip cache (``cache=True``): each video is decoded once, its short side resized to ``cache_size``
(default ``img_size``; larger to keep crops sharp), and stored as a uint8 ``.npy`` under
``<data root>/video_cache/``; samples then read frames from a memory map. Building it (once, in the
constructor) also finds the unreadable, 0-byte and too-short files, which are skipped and counted
(``dataset.skipped``); without the cache a bad file raises :class:`~maezoo.video.io.VideoReadError` when
loaded, which the Trainer's robust loader skips and counts.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from maezoo.config import data_root
from maezoo.registry import register
from maezoo.video.io import Backend, VideoReadError, read_clip, read_frames, read_video

Sampling = Literal["random", "segments"]
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
KINETICS_MEAN, KINETICS_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # VideoMAE normalises with ImageNet's
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)
#: grey-level mean and std (0-1 scale) of the generated moving-digits clips, measured on 50 test clips at 32 px
MOVING_DIGITS_MEAN, MOVING_DIGITS_STD = (0.081,), (0.207,)


@dataclass
class VideoItem:
    """One entry of a dataset: a file, its label (-1: unlabelled) and the first frame to use."""

    path: Path
    label: int
    offset: int = 0


def parse_list_file(list_file: str | Path, root: str | Path | None = None) -> list[VideoItem]:
    """Read ``path label`` / ``path,label`` / ``path offset label`` (V2: ``path 0 -1``) lines.

    Raises ``ValueError`` naming the file, line and the accepted forms for any other line.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"list file {list_file} not found; give train_list/test_list as a path to a text file")
    base = Path(root) if root is not None else list_file.parent
    items = []
    for no, line in enumerate(list_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            if len(parts) == 1:
                path, offset, label = parts[0], 0, -1
            elif len(parts) == 2:
                path, offset, label = parts[0], 0, int(parts[1])
            elif len(parts) == 3:
                path, offset, label = parts[0], int(parts[1]), int(parts[2])
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{list_file}:{no}: cannot read {line!r}; a list line is 'path label', 'path,label' or "
                "'path offset label' (VideoMAE V2: 'path 0 -1'), with integer labels"
            ) from None
        p = Path(path)
        items.append(VideoItem(p if p.is_absolute() else base / p, label, max(0, offset)))
    if not items:
        raise ValueError(f"list file {list_file} lists no videos")
    return items


def scan_folder(folder: str | Path) -> tuple[list[VideoItem], list[str]]:
    """``<class>/xxx.<video ext>`` under ``folder``: items labelled by sorted class name, and the class names."""
    folder = Path(folder)
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    items = [VideoItem(f, c) for c, name in enumerate(classes) for f in sorted((folder / name).iterdir())
             if f.suffix.lower() in VIDEO_EXTS]
    if not items:
        raise ValueError(f"{folder} holds no <class>/*.mp4 videos; use the layout <split>/<class>/xxx.mp4 or a list file")
    return items, classes


# -- frame sampling --------------------------------------------------------------------------------------------

def clip_indices(num_available: int, num_frames: int, stride: int, sampling: Sampling, train: bool,
                 clip: int = 0, num_clips: int = 1, rng: random.Random | None = None) -> list[int]:
    """Frame indices of one clip of a video of ``num_available`` frames.

    ``random``: ``num_frames`` frames ``stride`` apart from a random start (``train``) or, for clip ``clip`` of
    ``num_clips`` evenly spaced clips, from that clip's start. ``segments``: one frame per equal segment.
    A video shorter than the clip gets indices past its end, which the reader reports as a clear error.
    """
    rng = rng or random
    if sampling == "segments":
        seg = num_available / num_frames
        if train:
            return [min(num_available - 1, int(seg * i + rng.random() * seg)) for i in range(num_frames)]
        shift = (clip + 0.5) / num_clips
        return [min(num_available - 1, int(seg * (i + shift))) for i in range(num_frames)]
    span = (num_frames - 1) * stride + 1
    room = num_available - span
    if room < 0:
        return [i * stride for i in range(num_frames)]  # past the end: the reader names the short video
    if train:
        start = rng.randint(0, room)
    else:
        start = round(room * (clip + 0.5) / num_clips) if num_clips > 1 else room // 2
    return [start + i * stride for i in range(num_frames)]


# -- spatial transforms on [T, C, H, W] float tensors ----------------------------------------------------------

def resize_short(x: Tensor, size: int) -> Tensor:
    """Resize ``[T, C, H, W]`` so the short side is ``size`` (bilinear, antialiased)."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    s = size / min(h, w)
    return F.interpolate(x, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bilinear",
                         align_corners=False, antialias=True)


def multi_scale_crop(x: Tensor, size: int, rng: random.Random, scales: Sequence[float] = MULTI_SCALES,
                     max_distort: int = 1) -> Tensor:
    """VideoMAE's ``GroupMultiScaleCrop``: a crop whose sides are scales of the short side (aspect distortion
    of at most ``max_distort`` steps), at a random position, resized to ``size x size``."""
    h, w = x.shape[-2:]
    base = min(h, w)
    sides = [int(base * s) for s in scales]
    pairs = [(sh, sw) for i, sh in enumerate(sides) for j, sw in enumerate(sides) if abs(i - j) <= max_distort]
    ch, cw = rng.choice(pairs)
    top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
    crop = x[..., top:top + ch, left:left + cw]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def spatial_crops(x: Tensor, size: int, num: int) -> list[Tensor]:
    """``num`` crops of ``size x size`` evenly spaced along the long side (1: centre; 3: the usual 3-crop test)."""
    h, w = x.shape[-2:]
    out = []
    for k in range(num):
        frac = 0.5 if num == 1 else k / (num - 1)
        top = round((h - size) * (frac if h > w else 0.5))
        left = round((w - size) * (frac if w >= h else 0.5))
        out.append(x[..., top:top + size, left:left + size])
    return out


# -- the dataset --------------------------------------------------------------------------------------------

class VideoClips(Dataset):
    """Clips of videos as normalised ``[C, T, H, W]`` float tensors with their labels (see the module docstring).

    Attributes the recipes and protocols read: ``num_classes``, ``targets``, ``mean``/``std``, ``in_chans``,
    ``model_kwargs`` (clip size and normalisation for the VideoMAE builders), ``skipped`` (path: reason).
    """

    def __init__(
        self,
        items: list[VideoItem],
        num_classes: int,
        train: bool,
        transform: str,
        num_frames: int = 16,
        frame_stride: int = 4,
        sampling: Sampling = "random",
        img_size: int = 224,
        in_chans: int = 3,
        flip: bool = False,
        test_clips: int = 1,
        test_crops: int = 1,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        cache: bool = False,
        cache_size: int | None = None,
        cache_dir: str | Path | None = None,
        backend: Backend = "auto",
        classes: Sequence[str] | None = None,
    ) -> None:
        if transform not in ("pretrain", "finetune", "eval"):
            raise ValueError(f"unknown transform {transform!r}; use 'pretrain', 'finetune' or 'eval'")
        if sampling not in ("random", "segments"):
            raise ValueError(f"sampling must be 'random' or 'segments', got {sampling!r}")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 3 (RGB) or 1 (grey), got {in_chans}")
        if num_frames < 1 or frame_stride < 1 or test_clips < 1 or test_crops < 1:
            raise ValueError("num_frames, frame_stride, test_clips and test_crops must be >= 1")
        self.items, self.num_classes, self.train, self.transform = list(items), int(num_classes), train, transform
        self.num_frames, self.frame_stride, self.sampling = int(num_frames), int(frame_stride), sampling
        self.img_size, self.in_chans, self.flip = int(img_size), int(in_chans), bool(flip)
        self.views = (int(test_clips), int(test_crops)) if transform == "eval" and not train else (1, 1)
        self.mean, self.std = channel_stats(mean, in_chans), channel_stats(std, in_chans)
        self.backend: Backend = backend
        self.classes = list(classes) if classes is not None else None
        self.skipped: dict[str, str] = {}
        self.cache_size = int(cache_size or img_size)
        self._cache_paths: list[Path] | None = None
        if cache:
            self._build_cache(Path(cache_dir) if cache_dir else data_root() / "video_cache")
        self.model_kwargs = clip_model_kwargs(in_chans, num_frames, img_size, mean, std)

    # -- cache ----------------------------------------------------------------------------------------------
    def _cache_key(self, item: VideoItem) -> str:
        st = item.path.stat()
        key = f"{item.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.cache_size}|{self.in_chans}"
        return hashlib.sha1(key.encode()).hexdigest()[:20]

    def _build_cache(self, cache_dir: Path) -> None:
        """Decode every video once into ``cache_dir/<key>.npy`` (uint8 ``[T, H, W, C]``); drop and count bad ones."""
        cache_dir.mkdir(parents=True, exist_ok=True)
        need = self._min_frames()
        kept, paths = [], []
        for item in self.items:
            try:
                if not item.path.is_file() or item.path.stat().st_size == 0:
                    read_frames(item.path, [0], self.backend)  # raises the clear error
                target = cache_dir / f"{self._cache_key(item)}.npy"
                if not target.is_file():
                    frames = self._decode_all(item)
                    tmp = target.with_name(f".{target.stem}.{random.getrandbits(32):08x}.tmp.npy")
                    np.save(tmp, frames)
                    tmp.replace(target)
                n = np.load(target, mmap_mode="r").shape[0] - item.offset
                if n < need:
                    raise VideoReadError(f"{item.path}: the video has {n} usable frame(s) but a clip needs {need}. "
                                         "Fix: sample fewer frames or a smaller frame_stride, or remove the short video")
            except VideoReadError as exc:
                self.skipped[str(item.path)] = str(exc)
                continue
            kept.append(item)
            paths.append(target)
        if self.skipped:
            warnings.warn(f"skipped {len(self.skipped)} of {len(self.items)} video(s) (unreadable, empty or too short); "
                          f"first: {next(iter(self.skipped.values()))}", stacklevel=3)
        if not kept:
            raise VideoReadError(f"no usable video among {len(self.items)}; first problem: {next(iter(self.skipped.values()))}")
        self.items, self._cache_paths = kept, paths

    def _min_frames(self) -> int:
        return self.num_frames if self.sampling == "segments" else (self.num_frames - 1) * self.frame_stride + 1

    def _decode_all(self, item: VideoItem) -> np.ndarray:
        frames = torch.from_numpy(read_video(item.path, self.backend)).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
        frames = self._channels(frames.float())
        frames = resize_short(frames, self.cache_size).round().clamp(0, 255).to(torch.uint8)
        return frames.permute(0, 2, 3, 1).contiguous().numpy()

    def _channels(self, x: Tensor) -> Tensor:
        return x.mean(dim=1, keepdim=True) if self.in_chans == 1 else x

    # -- loading --------------------------------------------------------------------------------------------
    def _frames(self, i: int, clip: int, num_clips: int, rng: random.Random) -> Tensor:
        """``[T, C, H, W]`` float pixels (0-255) of clip ``clip`` of video ``i``."""
        item, train = self.items[i], self.train and self.transform != "eval"

        def pick(n: int) -> list[int]:
            idx = clip_indices(n - item.offset, self.num_frames, self.frame_stride, self.sampling, train, clip,
                               num_clips, rng)
            return [item.offset + j for j in idx]

        if self._cache_paths is not None:
            arr = np.load(self._cache_paths[i], mmap_mode="r")  # [N, H, W, C] uint8, already resized and grey/RGB
            return torch.from_numpy(np.ascontiguousarray(arr[pick(arr.shape[0])])).permute(0, 3, 1, 2).float()
        frames = read_clip(item.path, pick, self.backend)
        return self._channels(torch.from_numpy(frames).permute(0, 3, 1, 2).float())

    def _normalise(self, x: Tensor) -> Tensor:
        """``[T, C, H, W]`` pixels 0-255 -> ``[C, T, H, W]`` normalised."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return ((x / 255.0 - mean) / std).permute(1, 0, 2, 3).contiguous()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        label = self.items[i].label
        rng = random.Random(random.getrandbits(64)) if self.train or self.transform != "eval" else random.Random(i)
        if self.transform != "eval":
            x = multi_scale_crop(self._frames(i, 0, 1, rng), self.img_size, rng)
            if self.flip and rng.random() < 0.5:
                x = x.flip(-1)
            return self._normalise(x), label
        clips, crops = self.views
        views = []
        for c in range(clips):
            frames = resize_short(self._frames(i, c, clips, rng), self.img_size)
            views += [self._normalise(v) for v in spatial_crops(frames, self.img_size, crops)]
        return (views[0] if len(views) == 1 else torch.stack(views)), label

    @property
    def targets(self) -> list[int]:
        return [it.label for it in self.items]


def _split_items(root: Path | None, split: str, list_file: str | None) -> tuple[list[VideoItem], list[str] | None]:
    if list_file:
        return parse_list_file(list_file, root), None
    if root is None:
        raise ValueError("the video dataset needs root=<folder> (with <split>/<class>/*.mp4 or <class>/*.mp4) "
                         "or train_list/test_list list files")
    folder = root / split if (root / split).is_dir() else root
    return scan_folder(folder)


def channel_stats(values: Sequence[float], in_chans: int) -> tuple[float, ...]:
    """Per-channel normalisation values for ``in_chans`` channels (grey: the mean of the RGB values)."""
    return tuple(float(v) for v in values)[:in_chans] if in_chans == 3 else (float(np.mean(values)),)


def clip_model_kwargs(in_chans: int, num_frames: int, img_size: int, mean: Sequence[float],
                      std: Sequence[float]) -> dict[str, Any]:
    """What a clip dataset passes to the VideoMAE builders: clip size and the input normalisation."""
    return {"in_chans": int(in_chans), "num_frames": int(num_frames), "img_size": int(img_size),
            "pixel_mean": list(channel_stats(mean, in_chans)), "pixel_std": list(channel_stats(std, in_chans))}


@register("dataset", "video")
def video(
    split: str = "train",
    transform: str = "eval",
    root: str | None = None,
    train_list: str | None = None,
    test_list: str | None = None,
    num_classes: int | None = None,
    num_frames: int = 16,
    frame_stride: int = 4,
    sampling: Sampling = "random",
    img_size: int = 224,
    in_chans: int = 3,
    flip: bool = False,
    test_clips: int = 1,
    test_crops: int = 1,
    cache: bool = False,
    cache_size: int | None = None,
    backend: Backend = "auto",
) -> VideoClips:
    """Videos you bring: a ``<split>/<class>/*.mp4`` folder or list files (see the module docstring).

    ``num_classes`` defaults to the folder's classes or ``max(label) + 1`` of the list; ``split`` ``val`` reads
    the test list/folder.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"video split must be 'train', 'val' or 'test', got {split!r}")
    base = Path(root).expanduser() if root else None
    list_file = train_list if split == "train" else test_list
    items, classes = _split_items(base, "train" if split == "train" else "test", list_file)
    n = num_classes or (len(classes) if classes else max(1, max(it.label for it in items) + 1))
    return VideoClips(items, n, split == "train", transform, num_frames, frame_stride, sampling, img_size, in_chans,
                      flip, test_clips, test_crops, cache=cache, cache_size=cache_size, backend=backend, classes=classes)


@register("dataset", "moving_digits")
def moving_digits(
    split: str = "train",
    transform: str = "eval",
    train_per_class: int = 150,
    test_per_class: int = 50,
    seed: int = 0,
    img_size: int = 32,
    num_frames: int = 16,
    frame_stride: int = 1,
    cache: bool = True,
    backend: Backend = "auto",
    root: str | None = None,
) -> VideoClips:
    """The generated moving-digits set (4 motion-direction classes, see :mod:`maezoo.video.moving_digits`), grey,
    frames resized from 64 to ``img_size``; decoded clips cached by default."""
    from maezoo.video.moving_digits import DIRECTIONS, moving_digits_folder

    if split not in ("train", "val", "test"):
        raise ValueError(f"moving_digits split must be 'train', 'val' or 'test', got {split!r}")
    folder = moving_digits_folder(train_per_class, test_per_class, seed, root)
    items, classes = scan_folder(folder / ("train" if split == "train" else "test"))
    return VideoClips(items, len(DIRECTIONS), split == "train", transform, num_frames, frame_stride, "random", img_size,
                      1, False, mean=MOVING_DIGITS_MEAN, std=MOVING_DIGITS_STD, cache=cache, backend=backend,
                      classes=classes)


def _video_model_kwargs(num_frames: int, img_size: int, in_chans: int, **_: Any) -> dict[str, Any]:
    return clip_model_kwargs(in_chans, num_frames, img_size, KINETICS_MEAN, KINETICS_STD)


def _moving_digits_model_kwargs(num_frames: int, img_size: int, **_: Any) -> dict[str, Any]:
    return clip_model_kwargs(1, num_frames, img_size, MOVING_DIGITS_MEAN, MOVING_DIGITS_STD)


# the model arguments each builder's datasets carry, from its arguments alone (no clip is read)
video.model_kwargs = _video_model_kwargs  # type: ignore[attr-defined]
moving_digits.model_kwargs = _moving_digits_model_kwargs  # type: ignore[attr-defined]
