"""Decoders that turn a shard's files back into the samples the registered folder datasets give.

``maezoo shard`` copies a folder dataset's files into the shards as they are (``.jpg``/``.png``/``.webp``, ``.mp4``,
``.wav``/``.flac``, ``.txt``, with ``.cls`` labels) and writes into ``shards.json`` how to decode them
(``"decode": {"kind": ..., "args": {...}}``, :func:`decode_spec`). The reader then runs the modality's own code,
reached through the registry (``maezoo.data`` imports no modality):

* ``image``: the ``image_folder`` dataset, built once per process over a one-file folder whose file each
  sample's bytes replace: the same PIL conversion and the same MAE augmentations (``pretrain``, ``finetune``,
  ``eval``) as ``image_folder`` and ``cifar10`` (whose transform is ``image_folder``'s with CIFAR-10's
  statistics, recorded at writing);
* ``video``: the ``video`` dataset the same way (decord, or PyAV where decord is missing; ``cache`` off):
  the same frame sampling, multi-scale crops and normalisation;
* ``audio``: soundfile (channels averaged), then the registered ``audio`` tokenizer's ``features`` (resample to
  16 kHz, Kaldi filterbank, pad or crop to ``target_frames``, normalise with the dataset's statistics recorded
  at writing): the ``audio_folder`` inputs within float rounding (``features`` computes the filterbanks
  batched); augmentations of fine-tuning (SpecAugment, mixup) are not applied to a stream;
* ``text``: the registered ``wordpiece`` vocabulary (``tokenizer.json`` written beside the shards): ``[CLS]
  pieces [SEP]`` ids up to ``max_len``, padded per batch, as ``text_lines``/``text_jsonl``/``wordnet`` give.

A decoder raises on a corrupt member; :class:`~maezoo.data.shards.ShardDataset` skips and counts the sample.

Shapes: ``image`` ``([C, S, S], label)``; ``video`` ``([C, T, S, S], label)``; ``audio`` ``([target_frames,
mel_bins], label)``; ``text`` ``([L] long, label)``.
"""

from __future__ import annotations

import atexit
import inspect
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from maezoo.registry import build, get

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm")
VIDEO_EXTS = ("mp4", "avi", "mkv", "webm", "mov", "m4v")
AUDIO_EXTS = ("wav", "flac", "ogg")
#: the file of the vocabulary ``maezoo shard`` writes beside text shards
VOCAB_FILE = "tokenizer.json"


def _member(sample: dict[str, Any], exts: tuple[str, ...], what: str) -> tuple[str, bytes]:
    for ext in exts:
        if ext in sample:
            return ext, sample[ext]
    have = sorted(k for k in sample if not k.startswith("__"))
    raise ValueError(f"no {what} file ({', '.join(exts)}) in sample {sample.get('__key__', '?')} (it holds {have})")


def _label(sample: dict[str, Any]) -> int:
    return int(sample["cls"]) if "cls" in sample else 0


class _OneFile:
    """A registered folder dataset over a one-file folder of this process; each sample's bytes replace the file."""

    def __init__(self, dataset: str, kwargs: dict[str, Any], split: str, ext: str) -> None:
        self.dataset, self.kwargs, self.split, self.ext = dataset, kwargs, split, ext
        self._pid, self._ds, self._file = -1, None, Path()

    def __getstate__(self) -> dict[str, Any]:  # a loader worker builds its own
        return {**self.__dict__, "_pid": -1, "_ds": None}

    def _build(self) -> None:
        base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
        root = Path(tempfile.mkdtemp(prefix="maezoo-shard-", dir=base))
        atexit.register(shutil.rmtree, root, True)
        for split in ("train", "test"):
            (root / split / "c").mkdir(parents=True)
            (root / split / "c" / f"sample.{self.ext}").write_bytes(b"")
        self._file = root / self.split / "c" / f"sample.{self.ext}"
        self._ds = build("dataset", self.dataset, **{**self.kwargs, "root": str(root), "split": self.split})
        self._pid = os.getpid()

    def __call__(self, data: bytes) -> Any:
        if self._pid != os.getpid():
            self._build()
        self._file.write_bytes(data)
        return self._ds[0][0]  # type: ignore[index]

    @property
    def dataset_object(self) -> Any:
        if self._pid != os.getpid():
            self._build()
        return self._ds


def _split(split: str) -> str:
    return "train" if split == "train" else "test"


class ImageDecoder:
    """``.jpg``/``.png``/``.webp``/... -> ``image_folder``'s tensor (``transform``: its augmentations)."""

    kind = "image"

    def __init__(self, split: str = "train", transform: str = "pretrain", image_size: int = 224, in_chans: int = 3,
                 mean: list[float] | None = None, std: list[float] | None = None) -> None:
        kwargs = {"transform": transform, "image_size": image_size, "in_chans": in_chans, "mean": mean, "std": std}
        self.one = _OneFile("image_folder", kwargs, _split(split), "png")

    def __call__(self, sample: dict[str, Any]) -> Any:
        _, data = _member(sample, IMAGE_EXTS, "image")
        return self.one(data), _label(sample)


class VideoDecoder:
    """``.mp4``/... -> the ``video`` dataset's clip (its sampling, crops and normalisation)."""

    kind = "video"

    def __init__(self, split: str = "train", transform: str = "pretrain", mean: list[float] | None = None,
                 std: list[float] | None = None, **video_args: Any) -> None:
        known = inspect.signature(get("dataset", "video")).parameters
        unknown = sorted(set(video_args) - set(known))
        if unknown:
            raise ValueError(f"video shards: unknown argument(s) {unknown}; the video dataset takes "
                             f"{sorted(k for k in known if k not in ('split', 'root'))}")
        kwargs = {**video_args, "transform": transform, "cache": False}
        self.one = _OneFile("video", kwargs, _split(split), "mp4")
        self.mean, self.std = mean, std

    def _dataset(self) -> Any:
        ds = self.one.dataset_object
        if self.mean is not None and self.std is not None:  # a source with its own statistics (moving digits)
            ds.mean, ds.std = tuple(self.mean), tuple(self.std)
            ds.model_kwargs = {**ds.model_kwargs, "pixel_mean": list(self.mean), "pixel_std": list(self.std)}
        return ds

    def __call__(self, sample: dict[str, Any]) -> Any:
        _, data = _member(sample, VIDEO_EXTS, "video")
        self._dataset()
        return self.one(data), _label(sample)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return dict(self._dataset().model_kwargs)


class AudioDecoder:
    """``.wav``/``.flac``/``.ogg`` -> normalised filterbanks through the ``audio`` tokenizer's ``features``."""

    kind = "audio"

    def __init__(self, split: str = "train", transform: str = "pretrain", target_frames: int = 1024,
                 mel_bins: int = 128, norm_stats: list[float] | None = None) -> None:
        del split, transform  # no augmentation on a stream (module docstring)
        stats = {} if norm_stats is None else {"norm_mean": float(norm_stats[0]), "norm_std": float(norm_stats[1])}
        self.args = {"target_frames": int(target_frames), "mel_bins": int(mel_bins), **stats}
        self._tok = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tok": None}

    def __call__(self, sample: dict[str, Any]) -> Any:
        import soundfile as sf

        ext, data = _member(sample, AUDIO_EXTS, "audio")
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        if wave.shape[0] == 0 or not bool(torch.isfinite(torch.from_numpy(wave)).all()) or not wave.any():
            raise ValueError(f"{sample.get('__key__', '?')}.{ext}: empty, silent or non-finite audio")
        if self._tok is None:  # its tiny projection is never used; built aside so no sample's draws move
            with torch.random.fork_rng(devices=[]):
                self._tok = build("tokenizer", "audio", embed_dim=4, patch_size=1, **self.args)
        mono = torch.from_numpy(wave.mean(axis=1)).unsqueeze(0)
        return self._tok.features(mono, int(rate))[0], _label(sample)  # type: ignore[attr-defined]

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return dict(self.args)


class TextDecoder:
    """``.txt`` -> word-piece ids through the registered ``wordpiece`` vocabulary; ``collate_fn`` pads a batch."""

    kind = "text"

    def __init__(self, split: str = "train", transform: str = "pretrain", source: str = "", max_len: int = 128,
                 vocab: str = VOCAB_FILE) -> None:
        del split, transform
        self.max_len = int(max_len)
        self.vocab_file = _local_file(vocab if "/" in vocab or ":" in vocab else f"{source.rstrip('/')}/{vocab}")
        self.vocab = get("vocab", "wordpiece").from_file(self.vocab_file)
        self.pad_id = self.vocab.id_of("[PAD]")

    def __call__(self, sample: dict[str, Any]) -> Any:
        _, data = _member(sample, ("txt",), "text")
        ids, _ = self.vocab.encode([data.decode("utf-8")], self.max_len)
        return torch.tensor(ids[0], dtype=torch.long), _label(sample)

    def collate_fn(self, batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.nn.utils.rnn.pad_sequence([b[0] for b in batch], batch_first=True, padding_value=self.pad_id)
        return ids, torch.tensor([int(b[1]) for b in batch])

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return {"vocab_file": self.vocab_file}


def _local_file(url: str) -> str:
    """A local path for ``url`` (a remote file is copied into a temporary folder once)."""
    if "://" not in url and not url.startswith("pipe:"):
        return url
    from webdataset.gopen import gopen

    folder = Path(tempfile.mkdtemp(prefix="maezoo-vocab-"))
    atexit.register(shutil.rmtree, folder, True)
    with gopen(url, "rb") as f:
        (folder / Path(url).name).write_bytes(f.read())
    return str(folder / Path(url).name)


FOLDER_DECODERS = {"image": ImageDecoder, "video": VideoDecoder, "audio": AudioDecoder, "text": TextDecoder}


# ------------------------------------------------------------------------------------------------
# what the writer records
# ------------------------------------------------------------------------------------------------
def decode_spec(dataset: Any, builder_kwargs: dict[str, Any], files: list[tuple[str, int]] | None
                ) -> dict[str, Any] | None:
    """``{"kind", "args"}`` for ``shards.json``: how the reader turns this dataset's copied files back into its
    samples (``None``: the dataset's samples are written as tensors)."""
    if _is_text(dataset):
        return {"kind": "text", "args": {"max_len": int(dataset.max_len), "vocab": VOCAB_FILE}}
    if not files:
        return None
    ext = Path(files[0][0]).suffix.lstrip(".").lower()
    if ext in IMAGE_EXTS:
        return {"kind": "image", "args": {
            "image_size": int(builder_kwargs.get("image_size", 224)), "in_chans": int(getattr(dataset, "in_chans", 3)),
            "mean": [float(v) for v in dataset.mean], "std": [float(v) for v in dataset.std]}}
    if ext in VIDEO_EXTS:
        clips, crops = getattr(dataset, "views", (1, 1))
        return {"kind": "video", "args": {
            "num_frames": dataset.num_frames, "frame_stride": dataset.frame_stride, "sampling": dataset.sampling,
            "img_size": dataset.img_size, "in_chans": dataset.in_chans, "flip": dataset.flip, "test_clips": clips,
            "test_crops": crops, "mean": list(dataset.mean), "std": list(dataset.std)}}
    if ext in AUDIO_EXTS:
        mk = dataset.model_kwargs
        if getattr(dataset, "clip_norm", False) or getattr(dataset, "pad", "zero") != "zero":
            raise ValueError("audio shards decode zero-padded filterbanks without per-clip normalisation; write them "
                             "from a dataset with pad=zero and clip_norm=false")
        return {"kind": "audio", "args": {"target_frames": mk["target_frames"], "mel_bins": mk["mel_bins"],
                                          "norm_stats": [mk["norm_mean"], mk["norm_std"]]}}
    return None


def _is_text(dataset: Any) -> bool:
    return callable(getattr(dataset, "text", None)) and hasattr(dataset, "vocab") and hasattr(dataset, "max_len")


__all__ = ["FOLDER_DECODERS", "AudioDecoder", "ImageDecoder", "TextDecoder", "VideoDecoder", "decode_spec"]
