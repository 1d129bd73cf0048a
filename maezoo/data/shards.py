"""Streaming pre-training data from WebDataset tar shards, with exact mid-epoch resume.

A shard set is a folder (or any URL prefix ``webdataset`` opens: ``pipe:``, ``http://``, ``s3://`` through the
user's tools) holding ``shard-000000.tar`` ... and ``shards.json``, the index :func:`write_shards` writes:
every shard's name and sample count. The index is what makes a stream behave like a map-style dataset in the
engine: every rank knows, before reading a byte, how many batches each epoch has, so ranks stay in step (a
short last shard never hangs a collective) and a run stopped anywhere restarts at the same sample.

The order (Shapes below): epoch ``e`` permutes the shards with ``(seed, e)``; rank ``r`` of ``W`` with ``K``
reader slots (``K = max(1, trainer.num_workers)``) gives slot ``k`` the shards at positions ``(r*K + k) mod (W*K)``
of that permutation; a slot streams its shards through a seeded shuffle buffer and cuts the stream into batches;
the rank's batch ``b`` of the epoch is slot ``b mod K``'s batch ``b div K``. An epoch has ``S = K * m`` batches
per rank, ``m`` the fewest whole batches any slot of any rank holds (the rest of a longer slot is dropped, as
``drop_last`` does; shard counts that are a multiple of ``W*K`` with equal sizes drop nothing). Loader worker
``j`` of a run resumed at batch ``start`` serves batches ``start + j + i*K``, all from slot ``(start + j) mod
K``, and skips the samples before them without decoding them.

Samples are decoded only after the shuffle; a sample that fails to decode becomes ``None`` (skipped and counted
by :func:`maezoo.data.robust.collate_counted`, like the map-style loader's), and a shard that ends early
(truncated, unreadable) counts each of its missing samples as bad. Each sample's augmentation is seeded from
``(seed, epoch, sample id)``, the id its position in the index, as for map-style datasets.

Shapes:
    ``ShardDataset.batches(rank, world, slots, batch_size, start)`` yields lists of ``batch_size`` decoded samples
    (or ``None``); ``batches_per_epoch(world, slots, batch_size) -> S``.
"""

from __future__ import annotations

import functools
import io
import json
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from maezoo.data.robust import collate_counted
from maezoo.registry import register

INDEX = "shards.json"
Decoder = Callable[[dict[str, Any]], Any]


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def encode_sample(sample: Any) -> dict[str, Any]:
    """A map-style sample as WebDataset fields: a file path -> its bytes under its extension, a tensor/array ->
    ``.npy``, a string -> ``.txt``, an int label -> ``.cls``; ``(x, y)`` pairs give both."""
    x, y = sample if isinstance(sample, tuple | list) and len(sample) == 2 else (sample, None)
    out: dict[str, Any] = {}
    if isinstance(x, str | Path) and Path(x).is_file():
        out[Path(x).suffix.lstrip(".").lower() or "bin"] = Path(x).read_bytes()
    elif isinstance(x, torch.Tensor | np.ndarray):
        buf = io.BytesIO()
        np.save(buf, x.numpy() if isinstance(x, torch.Tensor) else x, allow_pickle=False)
        out["npy"] = buf.getvalue()
    elif isinstance(x, str):
        out["txt"] = x.encode()
    else:
        raise TypeError(f"cannot write a sample of type {type(x).__name__} to a shard; a dataset gives tensors, "
                        "arrays, strings or file paths (expose `samples` as (path, label) pairs to copy raw files)")
    if y is not None:
        out["cls"] = str(int(y)).encode()
    return out


def raw_files(dataset: Any) -> list[tuple[str, int]] | None:
    """``(path, label)`` pairs of a folder dataset, so shards keep the original encoded files and augmentation still
    runs at read time: an ImageFolder's ``samples`` (also behind ``inner``/``dataset`` wrappers), a video dataset's
    ``items`` (each with ``path``, ``label`` and a zero ``offset``) or an audio dataset's ``clips`` (``path``,
    ``label``; a multi-label clip keeps its first label, as the dataset's ``targets`` do)."""
    for _ in range(4):
        samples = getattr(dataset, "samples", None)
        if isinstance(samples, list) and samples and isinstance(samples[0], tuple) and \
                isinstance(samples[0][0], str | Path):
            return [(str(p), int(y)) for p, y in samples]
        for attr in ("items", "clips"):
            entries = getattr(dataset, attr, None)
            if isinstance(entries, list) and entries and all(hasattr(e, "path") and hasattr(e, "label") and
                                                             not getattr(e, "offset", 0) for e in entries):
                return [(str(e.path), int(e.label if isinstance(e.label, int) else e.label[0])) for e in entries]
        dataset = getattr(dataset, "inner", None) or getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


def write_shards(dataset: Any, dst: str | Path, maxcount: int = 1000, prefix: str = "shard",
                 builder_kwargs: dict[str, Any] | None = None) -> Path:
    """Write every sample of a map-style ``dataset`` into tar shards of at most ``maxcount`` samples under ``dst``,
    plus the index ``shards.json``. Raw files are copied when the dataset exposes them (:func:`raw_files`), a text
    dataset's texts as ``.txt`` with its vocabulary beside the shards; the index then records how to decode them
    (:func:`maezoo.data.decoders.decode_spec`; ``builder_kwargs``: the arguments the dataset was built with)."""
    import webdataset as wds

    from maezoo.data.decoders import VOCAB_FILE, decode_spec

    if maxcount < 1:
        raise ValueError(f"maxcount must be >= 1, got {maxcount}")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    files = raw_files(dataset)
    spec = decode_spec(dataset, dict(builder_kwargs or {}), files)
    text = spec is not None and spec["kind"] == "text"
    n = len(files) if files is not None and not text else len(dataset)
    counts: list[int] = []
    with wds.ShardWriter(str(dst / f"{prefix}-%06d.tar"), maxcount=maxcount, verbose=0) as sink:
        for i in range(n):
            if text:
                fields = {"txt": dataset.text(i).encode(), "cls": str(int(dataset.labels[i])).encode()}
            else:
                fields = encode_sample(files[i] if files is not None else dataset[i])
            sink.write({"__key__": f"{i:09d}", **fields})
            if i % maxcount == 0:
                counts.append(0)
            counts[-1] += 1
    if text:
        shutil.copyfile(dataset.model_kwargs["vocab_file"], dst / VOCAB_FILE)
    index = {"format": "maezoo-shards/1", "samples": n,
             "shards": [{"name": f"{prefix}-{s:06d}.tar", "count": c} for s, c in enumerate(counts)],
             "decode": spec or {"kind": "tensor", "args": {}}}
    (dst / INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return dst / INDEX


# ------------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------------
def decode_label(sample: dict[str, Any]) -> int | None:
    return int(sample["cls"]) if "cls" in sample else None


def decode_tensor(sample: dict[str, Any]) -> Any:
    """``.npy`` -> tensor (with its ``.cls`` label when present)."""
    x = torch.from_numpy(np.load(io.BytesIO(sample["npy"]), allow_pickle=False))
    y = decode_label(sample)
    return x if y is None else (x, y)


def decode_text(sample: dict[str, Any]) -> Any:
    return sample["txt"].decode()


def decode_audio(sample: dict[str, Any]) -> Any:
    """``.wav``/``.flac``/``.ogg`` -> ``[channels, samples]`` float tensor (soundfile)."""
    import soundfile as sf

    ext = next(e for e in ("wav", "flac", "ogg") if e in sample)
    data, _ = sf.read(io.BytesIO(sample[ext]), dtype="float32", always_2d=True)
    x = torch.from_numpy(data.T.copy())
    y = decode_label(sample)
    return x if y is None else (x, y)


DECODERS: dict[str, Decoder] = {"tensor": decode_tensor, "text": decode_text, "audio": decode_audio}


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    url: str
    count: int
    first: int  # id of its first sample


def read_index(source: str | Path) -> list[Shard]:
    """The shards of a shard set: ``source`` is the folder/URL prefix holding ``shards.json`` or the index itself."""
    return _index(source)[0]


def read_decode_spec(source: str | Path) -> dict[str, Any]:
    """How the index says its samples decode: ``{"kind": "tensor" | "image" | "video" | "audio" | "text",
    "args": {...}}`` (``tensor`` for an index written before decoders were recorded)."""
    return _index(source)[1].get("decode") or {"kind": "tensor", "args": {}}


def _index(source: str | Path) -> tuple[list[Shard], dict[str, Any]]:
    src = str(source)
    index_url = src if src.endswith(".json") else src.rstrip("/") + "/" + INDEX
    base = index_url.rsplit("/", 1)[0]
    try:
        if "://" in index_url or index_url.startswith("pipe:"):
            from webdataset.gopen import gopen

            with gopen(index_url, "rb") as f:
                doc = json.loads(f.read())
        else:
            doc = json.loads(Path(index_url).read_text())
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"{index_url}: no readable shard index ({type(exc).__name__}: {exc}). Fix: write the "
                                "shards with `maezoo shard SRC DST`, which writes shards.json beside them") from exc
    shards, first = [], 0
    for s in doc["shards"]:
        shards.append(Shard(s["name"] if ":" in s["name"] else f"{base}/{s['name']}", int(s["count"]), first))
        first += int(s["count"])
    if not shards:
        raise ValueError(f"{index_url}: the shard index lists no shards")
    return shards, doc


def _raw_samples(url: str, errors: list[str]) -> Iterator[dict[str, Any]]:
    from webdataset import tariterators as t

    def handler(exc: Exception) -> bool:
        errors.append(f"{url}: {type(exc).__name__}: {exc}")
        return False  # stop this shard; its missing samples are counted as bad

    try:
        yield from t.group_by_keys(t.tar_file_expander(t.url_opener([{"url": url}], handler=handler), handler=handler),
                                   handler=handler)
    except Exception as exc:  # a damaged tar raising past webdataset's handler
        errors.append(f"{url}: {type(exc).__name__}: {exc}")


class ShardDataset(IterableDataset):
    """Shards as an engine data source (see the module docstring for the order and the resume rule)."""

    def __init__(self, source: str | Path, decode: Decoder | str = "tensor", seed: int = 0, shuffle_buffer: int = 1000,
                 shuffle: bool = True, max_warnings: int = 5) -> None:
        self.shards = read_index(source)
        if isinstance(decode, str):
            if decode not in DECODERS:
                raise ValueError(f"unknown shard decoder {decode!r}; choose from {sorted(DECODERS)} or pass a callable")
            decode = DECODERS[decode]
        self.decode, self.seed, self.buffer, self.shuffle = decode, seed, max(1, shuffle_buffer), shuffle
        self.max_warnings, self._warned = max_warnings, 0
        self._plan: tuple[int, int, int, int, int] | None = None  # rank, world, slots, batch, start

    def __len__(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        """The decoder's batch collation (text pads its ids), else the default."""
        return getattr(self.decode, "collate_fn", None)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """What the decoder tells the model builder (audio statistics, clip size, a text vocabulary)."""
        return dict(getattr(self.decode, "model_kwargs", None) or {})

    # -- order --------------------------------------------------------------------------------------
    def _epoch_shards(self, epoch: int) -> list[Shard]:
        if not self.shuffle:
            return list(self.shards)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return [self.shards[i] for i in torch.randperm(len(self.shards), generator=g).tolist()]

    def slot_shards(self, epoch: int, rank: int, world: int, slots: int, slot: int) -> list[Shard]:
        order, readers = self._epoch_shards(epoch), world * slots
        return [s for i, s in enumerate(order) if i % readers == rank * slots + slot]

    def batches_per_epoch(self, world: int, slots: int, batch_size: int) -> int:
        """``S``: batches per rank and epoch, the same on every rank."""
        readers = world * slots
        if len(self.shards) < readers:
            raise ValueError(f"{len(self.shards)} shard(s) for {world} rank(s) x {slots} loader worker(s): every "
                             "reader needs at least one shard. Write more, smaller shards (`maezoo shard --maxcount`) "
                             "or lower trainer.num_workers")
        # shard sizes of every slot under the worst permutation are not known in advance: use the epoch-0 split,
        # which every epoch shares when shard sizes are equal (the common case), and the smallest slot otherwise
        sizes = sorted(s.count for s in self.shards)
        per_slot = sum(sizes[: len(self.shards) // readers])  # the fewest samples any slot can hold
        m = per_slot // batch_size
        if m < 1:
            raise ValueError(f"each loader slot holds at least {per_slot} samples, fewer than trainer.batch_size="
                             f"{batch_size}; lower the batch size or trainer.num_workers, or write fewer, larger shards")
        return slots * m

    def _stream(self, epoch: int, rank: int, world: int, slots: int, slot: int) -> Iterator[tuple[int, Any]]:
        """``(sample id, raw sample or None)`` of one slot's epoch, after the shuffle buffer (nothing decoded)."""
        rng = random.Random((self.seed * 1_000_003 + epoch) * 65_537 + rank * 257 + slot)
        buf: list[tuple[int, Any]] = []

        def raw() -> Iterator[tuple[int, Any]]:
            for shard in self.slot_shards(epoch, rank, world, slots, slot):
                errors: list[str] = []
                got = 0
                for sample in _raw_samples(shard.url, errors):
                    if got >= shard.count:
                        break
                    yield shard.first + got, sample
                    got += 1
                if got < shard.count:
                    self._warn(f"shard {shard.url} ended after {got} of {shard.count} samples"
                               + (f" ({errors[0]})" if errors else "") + "; the rest count as bad samples")
                    for i in range(got, shard.count):
                        yield shard.first + i, None

        for item in raw():
            if not self.shuffle or self.buffer <= 1:
                yield item
                continue
            buf.append(item)
            if len(buf) >= self.buffer:
                j = rng.randrange(len(buf))
                buf[j], buf[-1] = buf[-1], buf[j]
                yield buf.pop()
        while buf:
            j = rng.randrange(len(buf))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()

    def _decode(self, sid: int, raw: Any, epoch: int) -> Any:
        if raw is None:
            return None
        seed = (self.seed * 7_919 + epoch) * 1_000_003 + sid  # as the map-style sampler seeds a sample
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            return self.decode(raw)
        except Exception as exc:  # corrupt sample: skipped and counted by collate_counted
            self._warn(f"skipping sample {raw.get('__key__', sid)} of {raw.get('__url__', '?')}: "
                       f"{type(exc).__name__}: {exc}")
            return None

    def _warn(self, msg: str) -> None:
        if self._warned < self.max_warnings:
            self._warned += 1
            warnings.warn(msg, stacklevel=3)

    def batches(self, rank: int, world: int, slots: int, batch_size: int, start: int = 0,
                worker: int = 0) -> Iterator[list[Any]]:
        """Forever, the rank's batches ``start + worker + i*slots`` (``i = 0, 1, ...``; ``slots`` loader workers,
        or one process serving every batch when ``slots`` is 1). They all come from slot ``(start + worker) mod
        slots``, since an epoch's batch count is a multiple of ``slots``."""
        per_epoch = self.batches_per_epoch(world, slots, batch_size)
        m = per_epoch // slots
        b = start + worker
        while True:
            epoch, p = divmod(b, per_epoch)
            slot, q = p % slots, p // slots
            stream = self._stream(epoch, rank, world, slots, slot)
            for _ in range(q * batch_size):  # the batches before ``start``: read, never decoded
                next(stream)
            for _ in range(q, m):
                raw = [next(stream) for _ in range(batch_size)]
                yield [self._decode(sid, s, epoch) for sid, s in raw]
                b += slots

    # -- the engine's loader ---------------------------------------------------------------------------
    def configure(self, rank: int, world: int, batch_size: int, start: int, slots: int) -> None:
        self._plan = (rank, world, slots, batch_size, start)

    def __iter__(self) -> Iterator[list[Any]]:
        if self._plan is None:
            raise RuntimeError("ShardDataset.configure(...) first (the engine does it through make_loader)")
        rank, world, slots, bs, start = self._plan
        info = get_worker_info()
        workers = 1 if info is None else info.num_workers
        if workers != slots and not (info is None and slots == 1):
            raise RuntimeError(f"{workers} loader worker(s) for {slots} slot(s): build the loader with make_loader")
        return self.batches(rank, world, slots, bs, start, 0 if info is None else info.id)

    def make_loader(self, rank: int, world: int, batch_size: int, start: int, num_workers: int,
                    pin_memory: bool = False, collate: Callable[[list[Any]], Any] | None = None) -> DataLoader:
        """The DataLoader the engine iterates: ``(batch or None, bad count)`` per micro-batch from ``start`` on.
        Loader worker ``j`` serves batches ``start + j + i*num_workers``; the DataLoader takes its workers in
        turn, so the batches arrive in order."""
        slots = max(1, num_workers)
        self.configure(rank, world, batch_size, start, slots)
        return DataLoader(self, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                          collate_fn=functools.partial(collate_counted, collate=collate),
                          persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)


@register("dataset", "shards")
def shards(split: str = "train", transform: str = "pretrain", source: str = "", decoder: str = "auto",
           shuffle_buffer: int = 1000, seed: int = 0, args: dict[str, Any] | None = None) -> ShardDataset:
    """WebDataset shards written by ``maezoo shard`` (``source``: the folder or URL prefix holding ``shards.json``;
    ``{split}`` in it is replaced by the split). ``decoder``: ``auto`` (what the index records), ``tensor``
    (``.npy`` [+ ``.cls``]), ``waveform`` (``.wav``/``.flac``/``.ogg`` as ``[channels, samples]``), ``text_raw``
    (``.txt`` as a string), or ``image``/``video``/``audio``/``text`` (:mod:`maezoo.data.decoders`: the folder
    datasets' samples, ``transform`` applied at reading); ``args`` override the index's decoder arguments (e.g.
    ``{image_size: 224}``)."""
    from maezoo.data.decoders import FOLDER_DECODERS

    if not source:
        raise ValueError("data.args.source is required: the folder or URL prefix of the shards (with shards.json)")
    src = source.replace("{split}", split)
    spec = read_decode_spec(src)
    kind = spec["kind"] if decoder == "auto" else decoder
    if kind in FOLDER_DECODERS:
        extra = {"source": src} if kind == "text" else {}
        recorded = spec["args"] if spec["kind"] == kind else {}
        try:
            decode: Decoder | str = FOLDER_DECODERS[kind](split=split, transform=transform, **extra,
                                                          **{**recorded, **(args or {})})
        except TypeError as exc:
            raise ValueError(f"shards decoder {kind!r}: {exc}; check data.args.args") from None
    else:
        decode = {"waveform": "audio", "text_raw": "text"}.get(kind, kind)
    return ShardDataset(src, decode, seed=seed, shuffle_buffer=shuffle_buffer)


__all__ = ["DECODERS", "ShardDataset", "read_decode_spec", "read_index", "write_shards"]
