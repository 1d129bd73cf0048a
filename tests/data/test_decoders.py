"""Streaming decoders: ``maezoo shard`` writes a folder dataset's files (images, video clips, audio clips, texts) into
shards, and the ``shards`` dataset reads them back as the tensors the folder dataset gives (its augmentations
included, under the same per-sample seed); a corrupt member is skipped and counted."""

from __future__ import annotations

import argparse
import io
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import maezoo
from maezoo.data.shards import ShardDataset, _raw_samples, read_decode_spec, read_index

SEED = 0


def _shard(src: str, dst: Path, *args: str, split: str = "train", maxcount: int = 4) -> Path:
    from maezoo.shard_cmd import add_parser, main

    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers(dest="cmd"))
    argv = ["shard", src, str(dst), "--split", split, "--maxcount", str(maxcount)]
    for a in args:
        argv += ["--arg", a]
    assert main(ap.parse_args(argv)) == 0
    return dst


def _read(ds: ShardDataset) -> list[tuple[int, object]]:
    """Every sample of the shard set in writing order: (id, decoded under the map-style sampler's seed of epoch 0)."""
    out = []
    for shard in ds.shards:
        for k, raw in enumerate(_raw_samples(shard.url, [])):
            out.append((shard.first + k, ds._decode(shard.first + k, raw, 0)))
    return out


def _folder_item(folder_ds, i: int):
    seed = (SEED * 7_919 + 0) * 1_000_003 + i  # what the Trainer's sampler and RobustDataset seed sample i with
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return folder_ds[i]


def _check(folder_ds, shard_ds, atol: float = 0.0) -> None:
    got = _read(shard_ds)
    assert len(got) == len(folder_ds)
    for i, (x, y) in got:
        ref_x, ref_y = _folder_item(folder_ds, i)
        assert y == ref_y
        assert x.shape == ref_x.shape and x.dtype == ref_x.dtype
        assert torch.allclose(x, ref_x, atol=atol, rtol=0) if atol else torch.equal(x, ref_x), f"sample {i}"


# -- images ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i, fmt in enumerate(("PNG", "JPEG", "WEBP")):
                arr = rng.integers(0, 255, (20 + 3 * i, 24, 3), dtype=np.uint8)
                arr[..., c] = 255  # the class shows in a channel
                Image.fromarray(arr).save(root / split / cls / f"{i}.{fmt.lower()}", format=fmt)
    return root


@pytest.mark.parametrize("transform", ["eval", "pretrain"])
def test_image_shards_read_back_as_image_folder(tmp_path, image_root, transform):
    args = [f"root={image_root}", "image_size=16"]
    dst = _shard("image_folder", tmp_path / "img", *args)
    spec = read_decode_spec(dst)
    assert spec["kind"] == "image" and spec["args"]["image_size"] == 16
    assert {p.suffix for p in _members(dst)} >= {".png", ".jpeg", ".webp", ".cls"}  # the files, as they were
    folder = maezoo.build("dataset", "image_folder", split="train", transform=transform, root=str(image_root),
                          image_size=16)
    _check(folder, maezoo.build("dataset", "shards", split="train", transform=transform, source=str(dst), seed=SEED))


def test_cifar_layout_reads_back_with_its_statistics(tmp_path, image_root, monkeypatch):
    """``cifar10`` is torchvision's ImageFolder under CIFAR-10's statistics: shards carry them to the reader."""
    from maezoo.image import data as image_data

    monkeypatch.setattr(image_data, "cifar10_folder", lambda root=None, download=True: image_root)
    dst = _shard("cifar10", tmp_path / "c10", "image_size=16")
    assert read_decode_spec(dst)["args"]["mean"] == pytest.approx(list(image_data.CIFAR10_MEAN))
    folder = maezoo.build("dataset", "cifar10", split="train", transform="pretrain", image_size=16)
    _check(folder, maezoo.build("dataset", "shards", transform="pretrain", source=str(dst), seed=SEED))


# -- video -----------------------------------------------------------------------------------------------------
def test_video_shards_read_back_as_the_video_dataset(tmp_path):
    from maezoo.video.io import write_mp4

    root = tmp_path / "videos"
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("left", "right"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                write_mp4(root / split / cls / f"{i}.mp4", rng.integers(0, 255, (12, 24, 32, 3), dtype=np.uint8))
    args = [f"root={root}", "num_frames=4", "frame_stride=2", "img_size=16"]
    dst = _shard("video", tmp_path / "vid", *args)
    assert read_decode_spec(dst)["kind"] == "video"
    for transform in ("eval", "pretrain"):
        folder = maezoo.build("dataset", "video", split="train", transform=transform, root=str(root), num_frames=4,
                              frame_stride=2, img_size=16)
        shards = maezoo.build("dataset", "shards", transform=transform, source=str(dst), seed=SEED)
        _check(folder, shards)
        assert shards.model_kwargs == folder.model_kwargs


# -- audio -----------------------------------------------------------------------------------------------------
def test_audio_shards_read_back_as_audio_folder(tmp_path):
    import soundfile as sf

    root = tmp_path / "audio"
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        for c, cls in enumerate(("low", "high")):
            (root / split / cls).mkdir(parents=True)
            for i, fmt in enumerate(("wav", "flac")):
                t = np.arange(8000 + 1000 * i) / 16000
                wave = 0.3 * np.sin(2 * np.pi * (300 + 900 * c) * t) + 0.01 * rng.standard_normal(t.size)
                sf.write(root / split / cls / f"{i}.{fmt}", wave.astype(np.float32), 16000)
    args = [f"root={root}", "target_frames=32", "mel_bins=16", "patch_frames=16"]
    dst = _shard("audio_folder", tmp_path / "aud", *args)
    spec = read_decode_spec(dst)
    folder = maezoo.build("dataset", "audio_folder", split="train", transform="pretrain", root=str(root),
                          target_frames=32, mel_bins=16)
    assert spec["kind"] == "audio" and spec["args"]["norm_stats"] == pytest.approx(list(folder.stats))
    shards = maezoo.build("dataset", "shards", transform="pretrain", source=str(dst), seed=SEED)
    # the tokenizer computes the filterbanks batched, the dataset one clip at a time: equal within float rounding
    _check(folder, shards, atol=1e-4)
    assert shards.model_kwargs == {k: folder.model_kwargs[k] for k in ("target_frames", "mel_bins")} | {
        "norm_mean": folder.stats[0], "norm_std": folder.stats[1]}


# -- text ------------------------------------------------------------------------------------------------------
def test_text_shards_read_back_as_text_lines(tmp_path):
    corpus = tmp_path / "corpus.txt"
    words = "the cat sat on a mat while dogs ran over hills and rivers under grey skies".split()
    rng = random.Random(3)
    corpus.write_text("\n".join(" ".join(rng.choices(words, k=rng.randint(3, 30))) for _ in range(40)) + "\n")
    dst = _shard("text_lines", tmp_path / "txt", f"path={corpus}", "max_len=16", "vocab_size=60")
    assert read_decode_spec(dst) == {"kind": "text", "args": {"max_len": 16, "vocab": "tokenizer.json"}}
    folder = maezoo.build("dataset", "text_lines", split="train", path=str(corpus), max_len=16, vocab_size=60)
    shards = maezoo.build("dataset", "shards", source=str(dst), seed=SEED)
    _check(folder, shards)
    ids, labels = shards.collate_fn([shards.decode(r) for _, r in zip(range(3), _raw_samples(shards.shards[0].url, []))])
    assert ids.shape[0] == 3 and labels.tolist() == [0, 0, 0]
    assert Path(shards.model_kwargs["vocab_file"]).read_text() == Path(folder.model_kwargs["vocab_file"]).read_text()


# -- corrupt members --------------------------------------------------------------------------------------------
def _members(folder: Path) -> list[Path]:
    out = []
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as tf:
            out += [Path(m.name) for m in tf.getmembers()]
    return out


def test_a_corrupt_image_is_skipped_and_counted(tmp_path, image_root):
    dst = _shard("image_folder", tmp_path / "img", f"root={image_root}", "image_size=16", maxcount=6)
    shard0 = dst / "shard-000000.tar"
    with tarfile.open(shard0) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(shard0, "w") as tf:
        for m, data in members:
            if m.name.startswith("000000002."):
                data = b"\x89PNG but not an image"
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data))
    ds = maezoo.build("dataset", "shards", transform="eval", source=str(dst), seed=SEED)
    assert len(read_index(dst)) == 1 and len(ds) == 6
    it = iter(ds.make_loader(0, 1, 3, 0, 0))
    with pytest.warns(UserWarning, match="skipping sample 000000002"):
        seen = [next(it) for _ in range(ds.batches_per_epoch(1, 1, 3))]
    assert sum(bad for _, bad, _ in seen) == 1
    assert sum(len(batch[0]) for batch, _, _ in seen) == 5
