"""Image datasets and the MAE augmentations.

Datasets are registered by name and return ``(image [C, H, W] float, label)`` pairs, with
``mean``/``std``/``num_classes``/``in_chans`` attributes so recipes and the visualiser can undo the
normalisation.

* ``cifar10``: CIFAR-10 as an ImageFolder (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) under the data
  root; extracted from ``shared/data/cifar10/cifar10-jpg.tar`` when that copy exists, otherwise
  torchvision downloads the official archive.
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), upsampled.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import datasets, transforms
from torchvision.transforms import InterpolationMode

from maezoo.config import data_root
from maezoo.data.sources import SHARED_COPY_FIX, dataset_file_error, download_or_explain, prepared_folder
from maezoo.registry import register

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def mae_pretrain_transform(size: int, mean, std, min_scale: float = 0.2) -> transforms.Compose:
    """MAE pre-training augmentation: RandomResizedCrop(scale 0.2-1, bicubic) + horizontal flip."""
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def finetune_transform(size: int, mean, std) -> transforms.Compose:
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def eval_transform(size: int, mean, std) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize(size, interpolation=InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


TRANSFORMS = {"pretrain": mae_pretrain_transform, "finetune": finetune_transform, "eval": eval_transform}


def _transform(kind: str, size: int, mean, std):
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transform {kind!r}; use one of {sorted(TRANSFORMS)}")
    return TRANSFORMS[kind](size, mean, std)


CIFAR10_TAR = "cifar10/cifar10-jpg.tar"


def _cifar_layout(folder: Path) -> Path:
    """``folder`` if it holds ``train/<class>/`` and ``test/<class>/`` with the same non-empty classes."""
    for split in ("train", "test"):
        if not (folder / split).is_dir():
            raise ValueError(f"no {split}/ folder; expected the ImageFolder layout train/<class>/*.jpg and test/<class>/*.jpg")
    classes: dict[str, list[str]] = {}
    for split in ("train", "test"):
        classes[split] = sorted(d.name for d in (folder / split).iterdir() if d.is_dir() and any(d.iterdir()))
        if not classes[split]:
            raise ValueError(f"{split}/ holds no class folders with images")
    if classes["train"] != classes["test"]:
        raise ValueError(f"train/ and test/ hold different classes ({classes['train']} vs {classes['test']})")
    return folder


def cifar10_folder(root: str | Path | None = None, download: bool = True) -> Path:
    """The CIFAR-10 ImageFolder root (with ``train/`` and ``test/``), preparing it if needed.

    An unusable archive or folder raises :class:`DatasetFileError` (a ``ValueError``) naming it and the fix.
    """
    base = Path(root) if root else data_root()

    def fetch(base: Path, folder: Path) -> Path:
        if not download:
            raise FileNotFoundError(
                f"CIFAR-10 not found under {folder}; set MAEZOO_DATA to a folder holding cifar10/train and "
                "cifar10/test, or allow the download")
        return _download_cifar10_as_folder(base)

    fix = f"{SHARED_COPY_FIX}; or set MAEZOO_DATA to a folder already holding cifar10/train and cifar10/test"
    return prepared_folder(base, "cifar10", "CIFAR-10", _cifar_layout, CIFAR10_TAR, fetch, pick=_cifar_layout, fix=fix,
                           stale_fix="delete this folder and run again to prepare it afresh")


def _download_cifar10_as_folder(base: Path) -> Path:
    """Fetch the official archive with torchvision and write it out as PNG files in ImageFolder layout.

    The PNG files are written into a temporary folder that is renamed into place only when complete (and
    removed on failure).
    """
    raw = base / "cifar10-official"
    folder = base / "cifar10"
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=".cifar10.tmp-"))
    try:
        for split, train in (("train", True), ("test", False)):
            try:
                ds = download_or_explain("CIFAR-10", base / "cifar10", datasets.CIFAR10.url,
                                         lambda t=train: datasets.CIFAR10(raw, train=t, download=True))
            except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
                raise dataset_file_error(raw, f"the downloaded CIFAR-10 files are unusable ({exc})",
                                         "delete this folder and run again to download them afresh") from exc
            counts: dict[int, int] = {}
            for img, y in ds:
                d = tmp / split / ds.classes[y]
                d.mkdir(parents=True, exist_ok=True)
                counts[y] = counts.get(y, 0) + 1
                img.save(d / f"{counts[y] - 1:04d}.png")
        tmp.replace(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


class LabelledImages(Dataset):
    """An ImageFolder with the normalisation constants attached."""

    def __init__(self, inner: Dataset, mean, std, num_classes: int, in_chans: int) -> None:
        self.inner, self.mean, self.std = inner, tuple(mean), tuple(std)
        self.num_classes, self.in_chans = num_classes, in_chans

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        return self.inner[i]

    @property
    def targets(self) -> list[int]:
        return list(getattr(self.inner, "targets", []))


@register("dataset", "cifar10")
def cifar10(split: str = "train", transform: str = "pretrain", image_size: int = 32, root: str | None = None) -> LabelledImages:
    if split not in ("train", "test"):
        raise ValueError(f"cifar10 split must be 'train' or 'test', got {split!r}")
    folder = cifar10_folder(root)
    ds = datasets.ImageFolder(folder / split, transform=_transform(transform, image_size, CIFAR10_MEAN, CIFAR10_STD))
    return LabelledImages(ds, CIFAR10_MEAN, CIFAR10_STD, num_classes=10, in_chans=3)


class TensorImages(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, num_classes: int, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform
        self.mean, self.std, self.num_classes, self.in_chans = tuple(mean), tuple(std), num_classes, images.shape[1]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()


def _digit_shift(x: torch.Tensor, max_shift: int = 1) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (zero fill) and nothing else: digits are not flip-invariant."""
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


@register("dataset", "digits")
def digits(split: str = "train", transform: str = "eval", image_size: int = 16, test_size: int = 497, seed: int = 0) -> TensorImages:
    """scikit-learn's 8x8 digits (shipped with the package), upsampled bilinearly to ``image_size``.

    A fixed stratified split: 1,300 train / 497 test images by default.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target)
    idx_train, idx_test = train_test_split(torch.arange(len(y)).numpy(), test_size=test_size, stratify=y.numpy(), random_state=seed)
    idx = torch.as_tensor(idx_train if split == "train" else idx_test)
    mean, std = float(x[idx_train].mean()), float(x[idx_train].std())
    x = (x - mean) / std
    tf = (lambda t: _digit_shift(t, max(1, image_size // 16))) if transform in ("pretrain", "finetune") else None
    return TensorImages(x[idx], y[idx], (mean,), (std,), num_classes=10, transform=tf)


def _no_model_kwargs(**_: Any) -> dict[str, Any]:
    return {}


# image datasets pass nothing to the model builder (its image size and channels are set in model.args)
cifar10.model_kwargs = _no_model_kwargs  # type: ignore[attr-defined]
digits.model_kwargs = _no_model_kwargs  # type: ignore[attr-defined]
