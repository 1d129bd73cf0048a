"""Image-caption pairs for multimodal masked autoencoders (M3AE): CIFAR-10 with WordNet captions, WebDataset shards
in img2dataset's layout, and a folder of images with a captions file.

Every dataset gives ``({"image": [3, H, W] float, "text": [L_i] long}, label)`` samples, ``text`` being
``[CLS] pieces [SEP]`` word-piece ids (at most ``max_len``; a longer caption is cut, ``[SEP]`` kept, and the first
one is reported once), ``label`` -1 where the data has none. ``collate_fn`` stacks the images and right-pads the
texts with ``[PAD]``; ``model_kwargs`` is ``{"vocab_file": <tokenizer.json>}``. The word-piece vocabulary is the
text modality's (``maezoo.registry.get("vocab", "wordpiece")``), trained on the captions and cached in the data root
(or a given ``vocab_file``).

* ``cifar10_captions``: CIFAR-10's images (the registered ``cifar10`` dataset and its augmentations) with captions
  built from WordNet 3.0 (:mod:`maezoo.multimodal.captions`): each class's lemmas, gloss and hyponyms in a few
  templates, ``captions_per_class`` phrasings per class. **These captions carry the class name** (or a kind of the
  class): a model pre-trained on them learns from paired text, but the text gives the label away, so its
  image-probe gains show that the machinery uses paired text, not how it would fare on web captions.
  Pre-training draws one phrasing per sample and epoch (seeded by ``(seed, epoch, index)`` like the image
  augmentation, so a resumed run draws the same); ``eval``/``finetune`` give sample ``i`` the fixed phrasing
  ``i mod n`` of its class. Every 5th phrasing of a class (``test_every``) belongs to the test split only, so test
  captions (text probes, retrieval) are phrasings that pre-training and the vocabulary never saw.
* ``caption_shards`` and ``caption_folder``: users' pairs (:mod:`maezoo.multimodal.pairs`).

Shapes:
    sample ``({"image": [3, H, W], "text": [L_i]}, label)``; a collated batch
    ``({"image": [B, 3, H, W], "text": [B, L_max]}, labels [B])``
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from maezoo.data.wordnet import wordnet_folder
from maezoo.multimodal.captions import CIFAR10_SYNSETS, class_captions
from maezoo.registry import build, get, register

TRANSFORMS = ("pretrain", "finetune", "eval")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
Sample = tuple[dict[str, Tensor], int]


# -- text ----------------------------------------------------------------------------------------------------
def caption_vocab(texts: Iterable[str], key: str, vocab_size: int, vocab_file: str | None) -> tuple[Any, Path]:
    """The word-piece vocabulary (``TextVocab``, through the registry): ``vocab_file`` when given, else trained on
    ``texts`` once and cached in the data root under ``key`` (what identifies the caption corpus)."""
    vocab_cls = get("vocab", "wordpiece")
    return vocab_cls.cached(texts, f"captions|{key}", vocab_size, True, given=vocab_file)


def corpus_key(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


class CaptionCodec:
    """Captions -> ``[CLS] pieces [SEP]`` ids (at most ``max_len``) and the batch collation; says once when a
    caption is cut."""

    def __init__(self, vocab: Any, vocab_file: Path, max_len: int, name: str) -> None:
        if int(max_len) < 3:
            raise ValueError(f"{name}: max_len must be >= 3 ([CLS], a piece, [SEP]), got {max_len}")
        self.vocab, self.max_len, self.name = vocab, int(max_len), name
        self.pad_id = vocab.id_of("[PAD]")
        self.model_kwargs = {"vocab_file": str(vocab_file)}
        self._told = False

    def encode(self, text: str, where: str = "") -> Tensor:
        ids, cut = self.vocab.encode([text], self.max_len)
        if cut:
            self.note_cut(where or repr(text[:60]))
        return torch.tensor(ids[0], dtype=torch.long)

    def note_cut(self, where: str) -> None:
        if not self._told:
            self._told = True
            print(f"{self.name}: captions longer than max_len={self.max_len} ids are truncated, [SEP] kept (the "
                  f"first: {where}); raise data.args.max_len to keep more", file=sys.stderr, flush=True)

    def collate(self, batch: list[Sample]) -> tuple[dict[str, Tensor], Tensor]:
        images = torch.stack([b[0]["image"] for b in batch])
        text = torch.nn.utils.rnn.pad_sequence([b[0]["text"] for b in batch], batch_first=True,
                                               padding_value=self.pad_id)
        return {"image": images, "text": text}, torch.tensor([int(b[1]) for b in batch], dtype=torch.long)


def check_transform(transform: str, name: str) -> str:
    if transform not in TRANSFORMS:
        raise ValueError(f"{name}: unknown transform {transform!r}; use one of {', '.join(TRANSFORMS)}")
    return transform


def image_transform(kind: str, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> transforms.Compose:
    """The MAE paper's augmentations for images of any size: pre-training RandomResizedCrop(0.2-1, bicubic) + flip,
    fine-tuning RandomResizedCrop(0.5-1) + flip, evaluation resize + centre crop; then normalised."""
    if kind == "eval":
        head = [transforms.Resize(size, interpolation=InterpolationMode.BICUBIC), transforms.CenterCrop(size)]
    else:
        scale = (0.2, 1.0) if kind == "pretrain" else (0.5, 1.0)
        head = [transforms.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BICUBIC),
                transforms.RandomHorizontalFlip()]
    return transforms.Compose([*head, transforms.ToTensor(), transforms.Normalize(mean, std)])


def draw(n: int, i: int, transform: str) -> int:
    """Which of ``n`` captions sample ``i`` gets: drawn from Python's ``random`` in pre-training (the engine seeds it
    per sample from ``(seed, epoch, index)``, and image augmentation draws from torch's generator, so the two never
    shift each other), the fixed ``i mod n`` otherwise."""
    return random.randrange(n) if transform == "pretrain" else i % n


# -- CIFAR-10 with WordNet captions --------------------------------------------------------------------------------
class CaptionedCifar(Dataset):
    """CIFAR-10 images (the registered ``cifar10`` dataset) with per-class WordNet captions (module docstring)."""

    def __init__(self, images: Any, captions: list[list[str]], codec: CaptionCodec, transform: str) -> None:
        self.images, self.captions, self.codec, self.transform = images, captions, codec, transform
        self.classes = list(CIFAR10_SYNSETS)
        self.num_classes = len(self.classes)
        self.mean, self.std, self.in_chans = images.mean, images.std, images.in_chans
        self.model_kwargs = codec.model_kwargs
        self.ids = [[codec.encode(c, f"class {self.classes[k]}: {c!r}") for c in caps] for k, caps in enumerate(captions)]
        self._targets = list(images.targets)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def targets(self) -> list[int]:
        return self._targets

    def __getitem__(self, i: int) -> Sample:
        image, label = self.images[i]
        ids = self.ids[label]
        return {"image": image, "text": ids[draw(len(ids), i, self.transform)]}, int(label)

    def caption(self, i: int) -> str:
        caps = self.captions[self._targets[i]]
        return caps[i % len(caps)]

    def collate_fn(self, batch: list[Sample]) -> tuple[dict[str, Tensor], Tensor]:
        return self.codec.collate(batch)


def split_captions(captions: list[list[str]], split: str, test_every: int) -> list[list[str]]:
    """Each class's phrasings of ``split``: every ``test_every``-th (the 5th, 10th ... with 5) is held out for the
    test split, so test captions are phrasings pre-training never saw; ``0`` shares them all. A class keeps at
    least one phrasing on each side."""
    if test_every == 0:
        return captions
    out = []
    for caps in captions:
        test = [c for j, c in enumerate(caps) if j % test_every == test_every - 1] or caps[-1:]
        train = [c for c in caps if c not in test] or caps[:1]
        out.append(test if split == "test" else train)
    return out


def _cifar_text(max_len: int, vocab_size: int, captions_per_class: int, vocab_file: str | None,
                root: str | None, test_every: int) -> tuple[list[list[str]], list[list[str]], CaptionCodec]:
    if not 1 <= int(captions_per_class) <= 1000:
        raise ValueError(f"cifar10_captions: captions_per_class must be in 1..1000, got {captions_per_class}")
    if not 0 <= int(test_every) <= 1000 or int(test_every) == 1:
        raise ValueError(f"cifar10_captions: test_every must be 0 (no held-out phrasings) or 2..1000, got {test_every}")
    captions = class_captions(wordnet_folder(root), int(captions_per_class))
    train = split_captions(captions, "train", int(test_every))
    corpus = [c for caps in train for c in caps]  # the vocabulary never sees a held-out phrasing
    vocab, vfile = caption_vocab(corpus, f"cifar10-wordnet|{corpus_key(corpus)}", vocab_size, vocab_file)
    return captions, train, CaptionCodec(vocab, vfile, max_len, "cifar10_captions")


@register("dataset", "cifar10_captions")
def cifar10_captions(split: str = "train", transform: str = "pretrain", image_size: int = 32, max_len: int = 24,
                     vocab_size: int = 1024, captions_per_class: int = 40, test_every: int = 5,
                     vocab_file: str | None = None, root: str | None = None) -> CaptionedCifar:
    """CIFAR-10 images with WordNet captions that carry the class (module docstring); ``test_every``: hold out
    every n-th phrasing of a class for the test split (:func:`split_captions`)."""
    check_transform(transform, "cifar10_captions")
    captions, _, codec = _cifar_text(max_len, vocab_size, captions_per_class, vocab_file, root, test_every)
    images = build("dataset", "cifar10", split=split, transform=transform, image_size=image_size, root=root)
    return CaptionedCifar(images, split_captions(captions, split, int(test_every)), codec, transform)


def _cifar10_captions_model_kwargs(max_len: int = 24, vocab_size: int = 1024, captions_per_class: int = 40,
                                   test_every: int = 5, vocab_file: str | None = None, root: str | None = None,
                                   **_: Any) -> dict[str, Any]:
    return _cifar_text(max_len, vocab_size, captions_per_class, vocab_file, root, test_every)[2].model_kwargs


cifar10_captions.model_kwargs = _cifar10_captions_model_kwargs  # type: ignore[attr-defined]

__all__ = ["CaptionCodec", "CaptionedCifar", "caption_vocab", "cifar10_captions", "image_transform"]
