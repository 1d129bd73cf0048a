"""Users' image-caption pairs: WebDataset shards as img2dataset writes them, and a folder with a captions file.

* ``caption_shards``: tar shards holding ``<key>.jpg`` (or ``.png``/``.webp``/``.jpeg``) + ``<key>.txt`` [+
  ``<key>.json``, ``<key>.cls``], the layout img2dataset writes for CC3M, CC12M, LAION or COCO (``--output_format
  webdataset``). ``source``: a folder of ``*.tar`` shards, a brace pattern (``/data/cc3m/{00000..00331}.tar``,
  ``https://host/cc/{000..099}.tar``, anything webdataset opens) or a folder/URL prefix with a ``shards.json``
  (``maezoo shard``'s index). Without ``shards.json`` the sample count of each shard is read from img2dataset's
  ``<shard>_stats.json`` (``successes``) beside it, else counted by reading the shard once; the index is cached in
  ``<data root>/caption_shards/<digest>/shards.json``. Reading is :class:`maezoo.data.shards.ShardDataset`'s:
  shards split across ranks and loader workers, a seeded shuffle buffer, exact resume, the same number of batches
  on every rank. Labels: ``<key>.cls`` when present, else -1.
* ``caption_folder``: ``root/images/`` and a captions file: COCO-style ``captions_<split>*.json`` (``images`` with
  ``id``/``file_name``, ``annotations`` with ``image_id``/``caption``; images under ``images/`` or
  ``images/<train2017 ...>/``) or a CSV with a header ``file,caption[,label]`` (``<split>.csv``,
  ``captions_<split>.csv``); one file for all splits (``captions*.json``, ``captions.csv``) holds out the images
  with ``crc32(file name) % 10 == 0`` as the test split. Several captions per image: pre-training draws one per
  sample and epoch, evaluation takes the first. An optional ``label`` column gives ``num_classes``/``targets``.

Both skip and count a sample without an image or a caption, with an empty caption or an unreadable image (shards:
in the loader's bad-sample count, with a warning naming the sample; folder: missing files and empty captions when
indexed, one line to stderr, unreadable images when loaded). The vocabulary: ``vocab_file`` (``tokenizer.json`` or
a BERT ``vocab.txt``), else trained on the training captions (shards: the first ``vocab_captions``) and cached.

Shapes:
    sample ``({"image": [3, image_size, image_size], "text": [L_i]}, label)`` (see :mod:`maezoo.multimodal.data`)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from maezoo.config import data_root
from maezoo.data.shards import INDEX, ShardDataset
from maezoo.data.sources import dataset_file_error
from maezoo.multimodal.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CaptionCodec,
    Sample,
    caption_vocab,
    check_transform,
    draw,
    image_transform,
)
from maezoo.registry import register

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


# -- shards ---------------------------------------------------------------------------------------------------
def _is_url(s: str) -> bool:
    return "://" in s or s.startswith("pipe:") or s.startswith("file:")


def _open(url: str):
    from webdataset.gopen import gopen

    return gopen(url, "rb")


def _tar_members(url: str) -> Iterator[tuple[str, str, bytes | None]]:
    """``(key, extension, payload)`` of a tar's files in order (``payload`` only for ``.txt``)."""
    with _open(url) as fh, tarfile.open(fileobj=fh, mode="r|*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            folder, _, base = m.name.rpartition("/")
            stem, dot, ext = base.partition(".")
            if not dot:
                continue
            data = tf.extractfile(m).read() if ext.lower() == "txt" else None  # type: ignore[union-attr]
            yield f"{folder}/{stem}" if folder else stem, ext.lower(), data


def count_samples(url: str) -> int:
    """Samples in a shard: img2dataset's ``_stats.json`` ``successes`` when beside it, else keys counted (as
    webdataset groups them: a new sample when the key changes)."""
    stats = url[: -len(".tar")] + "_stats.json" if url.endswith(".tar") else None
    if stats:
        try:
            with _open(stats) as fh:
                return int(json.loads(fh.read())["successes"])
        except Exception:  # no stats file (or not img2dataset's): count
            pass
    n, last = 0, None
    for key, _, _ in _tar_members(url):
        if key != last:
            n, last = n + 1, key
    return n


def shard_urls(source: str) -> list[str]:
    """The shards of ``source``: a folder's ``*.tar`` (sorted), or a brace pattern / single tar, local or URL."""
    from webdataset.shardlists import expand_urls

    p = Path(source).expanduser()
    if not _is_url(source) and p.is_dir():
        found = sorted(p.glob("*.tar"))
        if not found:
            raise dataset_file_error(p, "the folder holds no .tar shard and no shards.json",
                                     "point data.args.source at img2dataset's output folder (NNNNN.tar files) or "
                                     "a brace pattern such as /data/cc3m/{00000..00331}.tar")
        return [f"file:{f.resolve()}" for f in found]
    urls = list(expand_urls(source))
    out = []
    for u in urls:
        if _is_url(u):
            out.append(u)
        elif Path(u).expanduser().is_file():
            out.append(f"file:{Path(u).expanduser().resolve()}")
        else:
            raise dataset_file_error(u, "no such shard", "check data.args.source (a folder of .tar shards, a brace "
                                     "pattern of them, or a folder with shards.json)")
    return out


def shard_index(source: str) -> str:
    """A ``shards.json`` for ``source``: its own when it has one, else one written to the data root (cached by the
    shards' names, sizes and modification times)."""
    src = str(source)
    if src.endswith(".json"):
        return src
    own = src.rstrip("/") + "/" + INDEX
    if (not _is_url(src) and Path(own).is_file()) or (_is_url(src) and _url_exists(own)):
        return own
    urls = shard_urls(src)
    key = "|".join(u + _stamp(u) for u in urls)
    path = data_root() / "caption_shards" / hashlib.sha256(key.encode()).hexdigest()[:16] / INDEX
    if path.is_file():
        return str(path)
    print(f"caption_shards: indexing {len(urls)} shard(s) of {src} once (sample counts from img2dataset's "
          f"_stats.json, else counted); cached in {path}", file=sys.stderr, flush=True)
    shards = [{"name": u, "count": count_samples(u)} for u in urls]
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": "maezoo-shards/1", "samples": sum(s["count"] for s in shards), "shards": shards}
    tmp = path.with_name(f".{INDEX}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return str(path)


def _stamp(url: str) -> str:
    if url.startswith("file:"):
        st = Path(url[5:]).stat()
        return f":{st.st_size}:{st.st_mtime_ns}"
    return ""


def _url_exists(url: str) -> bool:
    if url.startswith("file:"):
        return Path(url[5:]).is_file()
    try:
        with _open(url):
            return True
    except Exception:
        return False


def first_captions(urls: list[str], n: int) -> Iterator[str]:
    """The first ``n`` non-empty captions (``.txt``) of the shards, in order."""
    seen = 0
    for url in urls:
        for _, ext, data in _tar_members(url):
            if ext == "txt" and data is not None:
                text = data.decode("utf-8", errors="replace").strip()
                if text:
                    yield text
                    seen += 1
                    if seen >= n:
                        return


class PairDecoder:
    """A shard sample's fields -> ``({"image", "text"}, label)``; raises (so the sample is skipped and counted) on a
    missing image or caption, an empty caption or an unreadable image."""

    def __init__(self, transform: Any, codec: CaptionCodec) -> None:
        self.transform, self.codec = transform, codec
        self.model_kwargs = codec.model_kwargs  # what ShardDataset passes to the model builder (the vocabulary)
        self.collate_fn = codec.collate  # and its batch collation (pads the captions)

    def __call__(self, sample: dict[str, Any]) -> Sample:
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            raise ValueError(f"no image ({', '.join('.' + e for e in IMAGE_EXTS)})")
        if "txt" not in sample:
            raise ValueError("no caption (.txt)")
        text = sample["txt"].decode("utf-8", errors="replace").strip()
        if not text:
            raise ValueError("empty caption")
        image = _read_image(io.BytesIO(sample[ext]), f".{ext}")
        label = int(sample["cls"]) if "cls" in sample else -1
        where = f"{sample.get('__key__', '?')} of {sample.get('__url__', '?')}"
        return {"image": self.transform(image), "text": self.codec.encode(text, where)}, label


def _read_image(src: Any, what: str) -> Image.Image:
    try:
        with Image.open(src) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ValueError(f"unreadable image{' ' + what if what else ''} ({type(exc).__name__}: {exc})") from None


class CaptionShards(ShardDataset):
    """:class:`ShardDataset` of image-caption pairs (its ``collate_fn`` and ``model_kwargs`` are the decoder's)."""

    def __init__(self, index: str, decoder: PairDecoder, seed: int, shuffle_buffer: int, shuffle: bool,
                 num_classes: int) -> None:
        super().__init__(index, decoder, seed=seed, shuffle_buffer=shuffle_buffer, shuffle=shuffle)
        self.codec = decoder.codec
        self.mean, self.std, self.in_chans = IMAGENET_MEAN, IMAGENET_STD, 3
        if num_classes > 0:
            self.num_classes = num_classes


def _shard_text(source: str, max_len: int, vocab_file: str | None, vocab_size: int, vocab_captions: int
                ) -> tuple[str, CaptionCodec]:
    if not source:
        raise ValueError("caption_shards needs data.args.source: a folder of img2dataset .tar shards, a brace pattern "
                         "of them, or a folder/URL prefix with shards.json")
    index = shard_index(source)
    urls = [s["name"] for s in json.loads(_read_text(index))["shards"]]
    if vocab_file:
        vocab, vfile = caption_vocab([], "", vocab_size, vocab_file)
    else:
        base = index.rsplit("/", 1)[0]
        urls = [u if ":" in u else f"{base}/{u}" for u in urls]
        vocab, vfile = caption_vocab(first_captions(urls, int(vocab_captions)),
                                     f"shards|{'|'.join(urls)}|{vocab_captions}", vocab_size, None)
    return index, CaptionCodec(vocab, vfile, max_len, "caption_shards")


def _read_text(path_or_url: str) -> str:
    if _is_url(path_or_url) and not path_or_url.startswith("file:"):
        with _open(path_or_url) as fh:
            return fh.read().decode()
    return Path(path_or_url.removeprefix("file:")).read_text()


@register("dataset", "caption_shards")
def caption_shards(split: str = "train", transform: str = "pretrain", source: str = "", image_size: int = 224,
                   max_len: int = 64, vocab_file: str | None = None, vocab_size: int = 8192,
                   vocab_captions: int = 100_000, shuffle_buffer: int = 1000, seed: int = 0, num_classes: int = 0
                   ) -> CaptionShards:
    """Image-caption WebDataset shards (img2dataset's layout; module docstring). ``{split}`` in ``source`` is
    replaced by the split."""
    check_transform(transform, "caption_shards")
    index, codec = _shard_text(source.replace("{split}", split), max_len, vocab_file, vocab_size, vocab_captions)
    decoder = PairDecoder(image_transform(transform, image_size), codec)
    return CaptionShards(index, decoder, seed, shuffle_buffer, transform == "pretrain", num_classes)


def _caption_shards_model_kwargs(source: str = "", max_len: int = 64, vocab_file: str | None = None,
                                 vocab_size: int = 8192, vocab_captions: int = 100_000, **_: Any) -> dict[str, Any]:
    src = source.replace("{split}", "train")
    return _shard_text(src, max_len, vocab_file, vocab_size, vocab_captions)[1].model_kwargs


caption_shards.model_kwargs = _caption_shards_model_kwargs  # type: ignore[attr-defined]


# -- folder ---------------------------------------------------------------------------------------------------
LAYOUT_FIX = ("put images in ROOT/images/ and their captions in ROOT/captions_<split>.json (COCO: images + annotations) "
              "or ROOT/<split>.csv (header file,caption[,label]), or give data.args.captions")
Rows = dict[str, tuple[list[str], str | None]]  # file name -> (captions, label)


def _captions_files(root: Path, split: str, captions: str | None) -> tuple[Path, bool]:
    """The captions file of ``split`` and whether it holds every split (then a fixed tenth is the test split)."""
    if captions:
        p = Path(captions.replace("{split}", split)).expanduser()
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise dataset_file_error(p, "no such captions file", LAYOUT_FIX)
        return p, "{split}" not in captions
    names = ["val", "test"] if split == "test" else [split]
    for name in names:
        found = sorted(root.glob(f"captions_{name}*.json")) + [root / f"{name}.csv", root / f"captions_{name}.csv"]
        for f in found:
            if f.is_file():
                return f, False
    for f in sorted(root.glob("captions*.json")) + [root / "captions.csv"]:
        if f.is_file():
            return f, True
    raise dataset_file_error(root, f"no captions file for split {split!r}", LAYOUT_FIX)


def _read_coco(path: Path) -> Rows:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        files = {im["id"]: im["file_name"] for im in doc["images"]}
        anns = [(a["image_id"], a["caption"]) for a in doc["annotations"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise dataset_file_error(path, f"not a COCO captions file ({type(exc).__name__}: {exc})",
                                 'write {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}'
                                 ) from None
    rows: Rows = {f: ([], None) for f in files.values()}
    for image_id, caption in anns:
        if image_id in files:
            rows[files[image_id]][0].append(str(caption))
    return rows


def _read_csv(path: Path) -> Rows:
    rows: Rows = {}
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
            raise dataset_file_error(path, f"the header is {reader.fieldnames}, without the columns file and caption",
                                     "make the first line file,caption (or file,caption,label)")
        for n, row in enumerate(reader, 2):
            caps, label = rows.setdefault(row["file"], ([], row.get("label")))
            if row.get("label") != label:
                raise dataset_file_error(f"{path}:{n}", f"{row['file']} has two labels ({label!r}, {row.get('label')!r})",
                                         "give each image one label")
            caps.append(row["caption"] or "")
    return rows


def _image_dir(root: Path, images: str | None, captions_file: Path) -> list[Path]:
    base = Path(images).expanduser() if images else root / "images"
    # COCO keeps images/train2017/...: captions_train2017.json -> images/train2017
    sub = base / captions_file.stem.removeprefix("captions_")
    return [base, sub] if sub.is_dir() else [base]


def _index(root: Path, split: str, captions: str | None, images: str | None
           ) -> tuple[list[tuple[Path, list[str], str | None]], dict[str, int], Path]:
    """``(image path, non-empty captions, label)`` of ``split``, counts of what was skipped, the captions file."""
    cfile, shared = _captions_files(root, split, captions)
    rows = _read_csv(cfile) if cfile.suffix.lower() == ".csv" else _read_coco(cfile)
    dirs = _image_dir(root, images, cfile)
    out, skipped = [], {"missing image": 0, "empty caption": 0, "no caption": 0}
    for name, (caps, label) in rows.items():
        if shared and (zlib.crc32(Path(name).name.encode()) % 10 == 0) != (split == "test"):
            continue
        path = next((d / name for d in dirs if (d / name).is_file()), None)
        kept = [c.strip() for c in caps if c.strip()]
        skipped["empty caption"] += len(caps) - len(kept)
        if path is None:
            skipped["missing image"] += 1
        elif not kept:
            skipped["no caption"] += 1
        else:
            out.append((path, kept, label))
    if not out:
        raise dataset_file_error(cfile, f"no image of split {split!r} with a caption and an existing file (looked "
                                 f"in {', '.join(map(str, dirs))})", LAYOUT_FIX)
    if any(skipped.values()):
        print(f"caption_folder: {cfile}: skipped " + ", ".join(f"{v} {k}" for k, v in skipped.items() if v),
              file=sys.stderr, flush=True)
    return out, skipped, cfile


def _class_names(labels: list[str | None]) -> list[str]:
    return sorted({lab for lab in labels if lab is not None}, key=lambda v: (not v.isdigit(), v.zfill(12)))


class CaptionFolderData(Dataset):
    """Images with one or more captions each (module docstring)."""

    def __init__(self, items: list[tuple[Path, list[str], str | None]], classes: list[str], codec: CaptionCodec,
                 transform: Any, kind: str, skipped: dict[str, int]) -> None:
        self.items, self.codec, self.transform, self.kind = items, codec, transform, kind
        self.skipped_at_index, self.skipped = skipped, 0
        self.model_kwargs = codec.model_kwargs
        self.mean, self.std, self.in_chans = IMAGENET_MEAN, IMAGENET_STD, 3
        index = {c: k for k, c in enumerate(classes)}
        self.labels = [index[lab] if lab is not None else -1 for _, _, lab in items]
        if classes:
            self.classes, self.num_classes, self.targets = classes, len(classes), self.labels

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> Sample:
        path, caps, _ = self.items[i]
        try:
            image = _read_image(path, "")
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}; delete or replace the file") from None
        text = caps[draw(len(caps), i, self.kind)]
        return {"image": self.transform(image), "text": self.codec.encode(text, str(path))}, self.labels[i]

    def __getitem__(self, i: int) -> Sample:
        if self.kind == "pretrain":
            return self.load(i)  # the Trainer skips and counts a bad sample
        for step in range(len(self.items)):
            try:
                return self.load((i + step) % len(self.items))
            except ValueError as exc:
                self.skipped += 1
                if self.skipped <= 5:
                    warnings.warn(f"skipping {exc}", stacklevel=2)
        raise ValueError("caption_folder: no readable image in the dataset; check the files")

    def caption(self, i: int) -> str:
        return self.items[i][1][0]

    def collate_fn(self, batch: list[Sample]) -> Any:
        return self.codec.collate(batch)


def _folder_text(items: list[tuple[Path, list[str], str | None]], cfile: Path, max_len: int, vocab_file: str | None,
                 vocab_size: int) -> CaptionCodec:
    """The codec whose vocabulary is ``vocab_file`` or trained on the training captions ``items``."""
    st = cfile.stat()
    vocab, vfile = caption_vocab((c for _, caps, _ in items for c in caps),
                                 f"folder|{cfile.resolve()}|{st.st_size}|{st.st_mtime_ns}", vocab_size, vocab_file)
    return CaptionCodec(vocab, vfile, max_len, "caption_folder")


def _folder_root(root: str) -> Path:
    if not root:
        raise ValueError("caption_folder needs data.args.root: a folder with images/ and a captions file")
    p = Path(root).expanduser()
    if not p.is_dir():
        raise dataset_file_error(p, "no such folder", "give data.args.root, a folder with images/ and a captions file")
    return p


@register("dataset", "caption_folder")
def caption_folder(split: str = "train", transform: str = "pretrain", root: str = "", captions: str | None = None,
                   images: str | None = None, image_size: int = 224, max_len: int = 64, vocab_file: str | None = None,
                   vocab_size: int = 8192) -> CaptionFolderData:
    """Images and a captions file (COCO JSON or CSV; module docstring)."""
    check_transform(transform, "caption_folder")
    if split not in ("train", "test"):
        raise ValueError(f"caption_folder split must be 'train' or 'test', got {split!r}")
    base = _folder_root(root)
    train, skipped, cfile = _index(base, "train", captions, images)
    codec = _folder_text(train, cfile, max_len, vocab_file, vocab_size)
    items, skipped, _ = (train, skipped, cfile) if split == "train" else _index(base, split, captions, images)
    classes = _class_names([lab for _, _, lab in train + items])
    return CaptionFolderData(items, classes, codec, image_transform(transform, image_size), transform, skipped)


def _caption_folder_model_kwargs(root: str = "", captions: str | None = None, images: str | None = None,
                                 max_len: int = 64, vocab_file: str | None = None, vocab_size: int = 8192,
                                 **_: Any) -> dict[str, Any]:
    train, _, cfile = _index(_folder_root(root), "train", captions, images)
    return _folder_text(train, cfile, max_len, vocab_file, vocab_size).model_kwargs


caption_folder.model_kwargs = _caption_folder_model_kwargs  # type: ignore[attr-defined]

__all__ = ["CaptionFolderData", "CaptionShards", "PairDecoder", "caption_folder", "caption_shards", "shard_index"]
