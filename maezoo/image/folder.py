"""``image_folder``: your own images, as a torchvision ``ImageFolder`` tree or a ``path label`` list file.

Layouts (``root``):
    ``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg`` (or ``val/``): the given split;
    ``root/<class>/*.jpg``: a fixed, stratified hold-out of ``test_fraction`` of each class is the test split;
    ``train_list``/``test_list``: text files of ``relative/or/absolute/path label`` lines (paths relative to the
    list file), labels as integers or names.
Any size and channel count: images are converted to ``in_chans`` (1: grey, 3: RGB, 4: RGBA) and cropped or
resized to ``image_size`` by the MAE paper's augmentations (pre-training: RandomResizedCrop(0.2, 1) + flip;
fine-tuning: RandomResizedCrop(0.5, 1) + flip; evaluation: resize + centre crop). An unreadable image raises an
error naming the file; pre-training (the Trainer) skips and counts such samples, evaluation replaces one by the
next readable image and counts it in ``skipped``.

Shapes: a sample is ``(image [in_chans, image_size, image_size] float, label int)``.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from maezoo.image.data import _transform
from maezoo.registry import register

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MODES = {1: "L", 3: "RGB", 4: "RGBA"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ImageFolderData(Dataset):
    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], transform, in_chans: int, mean, std,
                 kind: str) -> None:
        self.samples, self.classes, self.transform, self.kind = samples, classes, transform, kind
        self.mode = MODES[in_chans]
        self.in_chans, self.num_classes, self.mean, self.std = in_chans, len(classes), tuple(mean), tuple(std)
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [y for _, y in self.samples]

    def load(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert(self.mode)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable image ({type(exc).__name__}: {exc}); delete or replace the file") from None
        return self.transform(img), label

    def __getitem__(self, i: int):
        if self.kind == "pretrain":
            return self.load(i)  # the Trainer skips and counts a bad sample
        for step in range(len(self.samples)):
            try:
                return self.load((i + step) % len(self.samples))
            except ValueError as exc:
                self.skipped += 1
                if self.skipped <= 5:
                    warnings.warn(f"skipping {exc}", stacklevel=2)
        raise ValueError("no readable image in the dataset; check the files")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def _tree(folder: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and _list_images(d))
    samples = [(p, c) for c, name in enumerate(classes) for p in _list_images(folder / name)]
    return samples, classes


def _read_list(path: Path) -> tuple[list[tuple[Path, str]], None]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'path label', got {line!r}")
        p = Path(parts[0])
        rows.append((p if p.is_absolute() else path.parent / p, parts[1]))
    return rows, None


def _held_out(path: Path, fraction: float) -> bool:
    return zlib.crc32(str(path.name).encode()) % 1000 < fraction * 1000


def _samples(root: Path | None, split: str, train_list: str | None, test_list: str | None,
             test_fraction: float) -> tuple[list[tuple[Path, int]], list[str]]:
    if train_list or test_list:
        if not (train_list and test_list):
            raise ValueError("image_folder: give both train_list and test_list ('path label' files)")
        both = {s: _read_list(Path(f))[0] for s, f in (("train", train_list), ("test", test_list))}
        names = sorted({lab for rows in both.values() for _, lab in rows}, key=lambda v: (not v.isdigit(), v.zfill(12)))
        index = {n: i for i, n in enumerate(names)}
        return [(p, index[lab]) for p, lab in both[split]], names
    if root is None:
        raise ValueError("image_folder needs data.args.root (an ImageFolder tree) or train_list + test_list")
    if not root.is_dir():
        raise ValueError(f"image_folder: {root} is not a folder; expected root/<class>/*.jpg or root/train|test/<class>/")
    sub = {"train": root / "train", "test": next((root / s for s in ("test", "val") if (root / s).is_dir()), None)}
    if sub["train"].is_dir() and sub["test"] is not None:
        return _tree(sub["train"] if split == "train" else sub["test"])
    samples, classes = _tree(root)
    keep = [(p, y) for p, y in samples if _held_out(p, test_fraction) == (split == "test")]
    return keep, classes


@register("dataset", "image_folder")
def image_folder(split: str = "train", transform: str = "pretrain", root: str | None = None, image_size: int = 224,
                 in_chans: int = 3, train_list: str | None = None, test_list: str | None = None,
                 test_fraction: float = 0.2, mean: list[float] | None = None,
                 std: list[float] | None = None) -> ImageFolderData:
    """Your own images (see the module docstring for the layouts)."""
    if split not in ("train", "test"):
        raise ValueError(f"image_folder split must be 'train' or 'test', got {split!r}")
    if in_chans not in MODES:
        raise ValueError(f"image_folder in_chans must be one of {sorted(MODES)} (grey, RGB, RGBA), got {in_chans}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"image_folder test_fraction must be in (0, 1), got {test_fraction}")
    samples, classes = _samples(Path(root) if root else None, split, train_list, test_list, test_fraction)
    if not samples:
        where = root or f"{train_list} / {test_list}"
        raise ValueError(f"image_folder: no images for split {split!r} in {where}; expected root/<class>/*.jpg, "
                         f"root/train|test/<class>/*.jpg or 'path label' list files, with extensions "
                         f"{', '.join(EXTENSIONS)}")
    mean = tuple(mean) if mean else (IMAGENET_MEAN if in_chans == 3 else (0.5,) * in_chans)
    std = tuple(std) if std else (IMAGENET_STD if in_chans == 3 else (0.5,) * in_chans)
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"image_folder: mean/std need {in_chans} values (one per channel), got {len(mean)}/{len(std)}")
    return ImageFolderData(samples, classes, _transform(transform, image_size, mean, std), in_chans, mean, std, transform)
