"""Image-caption datasets: CIFAR-10 with WordNet captions (seeded per-sample caption draws, fixed eval captions,
collation), WebDataset caption shards (2 ranks x 2 loader workers, bad samples counted) and caption folders (COCO
JSON, CSV) with their bad inputs."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch
from caption_shards import _jpeg, _pair, _tar

import maezoo
from maezoo.data.robust import RobustDataset
from maezoo.data.sources import DatasetFileError, find_shared_data

HAS_WORDNET = find_shared_data("wordnet/wordnet-3.0-data.tar.xz") is not None
HAS_CIFAR = find_shared_data("cifar10/cifar10-jpg.tar") is not None
needs_wordnet = pytest.mark.skipif(not HAS_WORDNET, reason="no shared WordNet copy")
needs_cifar = pytest.mark.skipif(not (HAS_WORDNET and HAS_CIFAR), reason="no shared WordNet / CIFAR-10 copy")


# ---------------------------------------------------------------- CIFAR-10 + WordNet captions
@needs_wordnet
def test_wordnet_captions_name_each_class_and_differ():
    from maezoo.data.wordnet import wordnet_folder
    from maezoo.multimodal.captions import CIFAR10_SYNSETS, class_captions

    caps = class_captions(wordnet_folder(), 40)
    assert len(caps) == 10 and all(30 <= len(c) <= 40 for c in caps), [len(c) for c in caps]
    for (cls, (_, lemma)), c in zip(CIFAR10_SYNSETS.items(), caps, strict=True):
        assert len(set(c)) == len(c)
        assert c[0] == f"a photo of {'an' if lemma[0] in 'aeiou' else 'a'} {lemma}.", (cls, c[0])
        assert sum(lemma in x for x in c) >= len(c) // 2  # the captions carry the class
    assert "a small image of a puppy, a kind of dog." in caps[5]  # a hyponym of dog.n.01
    assert any("feline mammal usually having thick soft fur" in x for x in caps[3])  # cat.n.01's gloss


@needs_cifar
def test_cifar10_captions_samples_draws_and_collation():
    ds = maezoo.build("dataset", "cifar10_captions", split="test", transform="pretrain", captions_per_class=20)
    assert len(ds) == 10_000 and ds.num_classes == 10 and len(ds.targets) == 10_000
    assert ds.model_kwargs == maezoo.get("dataset", "cifar10_captions").model_kwargs(captions_per_class=20)
    vocab = maezoo.get("vocab", "wordpiece").from_file(ds.model_kwargs["vocab_file"])
    ids = vocab.special_ids

    robust = RobustDataset(ds)
    (x, y), (x2, _) = robust[(1234, 77)], robust[(1234, 77)]  # same (index, seed): the same crop and caption
    assert torch.equal(x["image"], x2["image"]) and torch.equal(x["text"], x2["text"])
    assert x["image"].shape == (3, 32, 32) and x["text"].dtype == torch.long and y == ds.targets[1234]
    assert x["text"][0] == ids["cls_id"] and x["text"][-1] == ids["sep_id"] and len(x["text"]) <= 24
    drawn = {tuple(robust[(1234, s)][0]["text"].tolist()) for s in range(12)}
    assert len(drawn) > 3  # a different phrasing per epoch seed

    ev = maezoo.build("dataset", "cifar10_captions", split="test", transform="eval", captions_per_class=20)
    random.seed(1)
    a = ev[1234][0]["text"]
    random.seed(2)
    assert torch.equal(a, ev[1234][0]["text"])  # eval: fixed caption per index
    assert a.tolist() == vocab.encode([ev.caption(1234)], 24)[0][0]
    assert ev.caption(1234) != ev.caption(1235) and ev.caption(1234) == ev.captions[ev.targets[1234]][1234 % 4]
    train = maezoo.build("dataset", "cifar10_captions", split="train", transform="eval", captions_per_class=20)
    for k in range(10):  # every 5th phrasing is held out: test captions are never seen in pre-training
        assert len(ev.captions[k]) == 4 and len(train.captions[k]) == 16
        assert not set(ev.captions[k]) & set(train.captions[k])

    batch, labels = ev.collate_fn([ev[i] for i in (0, 1000, 5000)])
    imgs, text = batch["image"], batch["text"]
    assert imgs.shape == (3, 3, 32, 32) and text.shape[0] == 3 and labels.tolist() == [ev.targets[i] for i in (0, 1000, 5000)]
    lengths = [len(ev[i][0]["text"]) for i in (0, 1000, 5000)]
    for row, n in zip(text, lengths, strict=True):
        assert (row[n:] == ids["pad_id"]).all() and row[n - 1] == ids["sep_id"]


def test_cifar10_captions_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown transform 'strong'"):
        maezoo.build("dataset", "cifar10_captions", transform="strong")
    with pytest.raises(ValueError, match="captions_per_class must be in 1..1000"):
        maezoo.build("dataset", "cifar10_captions", captions_per_class=0)
    with pytest.raises(ValueError, match="test_every must be 0"):
        maezoo.build("dataset", "cifar10_captions", test_every=1)


# ---------------------------------------------------------------- WebDataset shards (img2dataset layout)
def test_caption_shards_two_ranks_two_workers_no_duplicates_no_losses(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    folder = tmp_path / "c3m"
    folder.mkdir()
    for s in range(4):
        _tar(folder / f"{s:05d}.tar", [_pair(8 * s + j) for j in range(8)])
    (folder / "00000_stats.json").write_text(json.dumps({"successes": 8, "failed_to_download": 2}))
    ds = maezoo.build("dataset", "caption_shards", source=str(folder), image_size=8, max_len=12, vocab_size=60,
                      shuffle_buffer=4)
    assert len(ds) == 32 and Path(ds.model_kwargs["vocab_file"]).is_file()
    seen = []
    for rank in (0, 1):
        loader = ds.make_loader(rank, 2, 2, 0, num_workers=2, collate=ds.collate_fn)
        it = iter(loader)
        for _ in range(ds.batches_per_epoch(2, 2, 2)):
            (batch, labels), bad, good = next(it)
            assert bad == 0 and good == 2
            assert batch["image"].shape == (2, 3, 8, 8) and batch["text"].dtype == torch.long
            seen += labels.tolist()
        del it, loader
    assert sorted(seen) == list(range(32)), "every pair exactly once across 2 ranks x 2 workers"


def test_caption_shards_skip_and_count_bad_pairs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    good = [_pair(i) for i in range(4)]
    good[3]["txt"] = b" ".join([b"word"] * 40)  # longer than max_len: truncated, noted once
    corrupt = {**_pair(4), "jpg": _jpeg(4)[:40]}
    no_caption = {k: v for k, v in _pair(5).items() if k != "txt"}
    empty = {**_pair(6), "txt": b"  \n"}
    no_image = {k: v for k, v in _pair(7).items() if k != "jpg"}
    shard = _tar(tmp_path / "00000.tar", [good[0], corrupt, good[1], no_caption, empty, good[2], no_image, good[3]])
    ds = maezoo.build("dataset", "caption_shards", source=str(shard), image_size=8, max_len=8, vocab_size=60,
                      shuffle_buffer=1, transform="eval")
    with pytest.warns(UserWarning) as caught:
        out = list(itertools.islice(iter(ds.make_loader(0, 1, 4, 0, num_workers=0, collate=ds.collate_fn)), 2))
    assert sum(o[1] for o in out) == 4 and sum(o[2] for o in out) == 4  # 4 skipped and counted, 4 kept
    assert sorted(lab for o in out for lab in o[0][1].tolist()) == [0, 1, 2, 3]
    said = " ".join(str(w.message) for w in caught)
    for why in ("unreadable image", "no caption (.txt)", "empty caption", "no image"):
        assert why in said, why
    assert all(len(t) <= 8 for o in out for t in o[0][0]["text"])
    assert capsys.readouterr().err.count("truncated") == 1


def test_caption_shards_bad_source_names_it_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match="needs data.args.source"):
        maezoo.build("dataset", "caption_shards")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFileError, match=r"empty: the folder holds no \.tar shard.*Fix: point data.args.source"):
        maezoo.build("dataset", "caption_shards", source=str(tmp_path / "empty"))
    _tar(tmp_path / "00006.tar", [_pair(0)])
    with pytest.raises(DatasetFileError, match=r"00007\.tar: no such shard"):
        maezoo.build("dataset", "caption_shards", source=str(tmp_path / "{00006..00007}.tar"))


# ---------------------------------------------------------------- caption folders
def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(names):
        (folder / n).write_bytes(_jpeg(k, size=12))


def test_caption_folder_coco_json_several_captions_and_skips(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    root = tmp_path / "coco"
    _images(root / "images" / "train2017", [f"{i:012d}.jpg" for i in range(6)])
    (root / "images" / "train2017" / "000000000005.jpg").write_bytes(b"not a jpeg")
    images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(8)]  # 6 and 7: no file
    anns = [{"image_id": i, "caption": f"a cat number {i} sits, take {t}"} for i in range(8) for t in range(3)]
    anns += [{"image_id": 4, "caption": "  "}]  # empty: skipped
    (root / "captions_train2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    ds = maezoo.build("dataset", "caption_folder", root=str(root), image_size=8, max_len=16, vocab_size=80)
    assert "2 missing image, 1 empty caption" in capsys.readouterr().err
    assert len(ds) == 6 and not hasattr(ds, "num_classes") and ds.caption(1) == "a cat number 1 sits, take 0"
    drawn = {tuple(RobustDataset(ds)[(1, s)][0]["text"].tolist()) for s in range(10)}
    assert len(drawn) > 1  # one of the image's three captions per epoch
    with pytest.warns(UserWarning, match="unreadable image"):
        assert RobustDataset(ds)[(5, 0)] is None  # unreadable image: skipped (the Trainer counts it)
    with pytest.raises(ValueError, match=r"000000000005\.jpg: unreadable image.*delete or replace the file"):
        ds[5]
    (x, y) = ds[0]
    assert y == -1 and x["image"].shape == (3, 8, 8)
    batch, labels = ds.collate_fn([ds[0], ds[1]])
    assert batch["text"].shape[0] == 2 and labels.tolist() == [-1, -1]


def test_caption_folder_csv_labels_split_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    root = tmp_path / "pets"
    names = [f"img{i}.jpg" for i in range(40)]
    _images(root / "images", names)
    lines = ["file,caption,label"] + [f"{n},a photo of a {'cat' if i % 2 else 'dog'},{'cat' if i % 2 else 'dog'}"
                                      for i, n in enumerate(names)]
    lines += ["img0.jpg,a dog lying on the grass,dog"]
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    train = maezoo.build("dataset", "caption_folder", root=str(root), transform="eval", image_size=8, vocab_size=60)
    test = maezoo.build("dataset", "caption_folder", split="test", root=str(root), transform="eval", image_size=8,
                        vocab_size=60)
    assert len(train) + len(test) == 40 and len(test) > 0 and train.model_kwargs == test.model_kwargs
    assert train.classes == ["cat", "dog"] and train.num_classes == 2
    assert {train.caption(i) for i in range(len(train))} <= {"a photo of a cat", "a photo of a dog"}
    assert [train[i][1] for i in range(4)] == train.targets[:4]

    (root / "captions.csv").write_text("name,text\nimg0.jpg,a dog\n")
    with pytest.raises(DatasetFileError, match=r"captions\.csv: the header .* Fix: make the first line file,caption"):
        maezoo.build("dataset", "caption_folder", root=str(root))
    (root / "captions.csv").unlink()
    with pytest.raises(DatasetFileError, match=r"pets: no captions file for split 'train'. Fix: put images in"):
        maezoo.build("dataset", "caption_folder", root=str(root))
    (root / "captions_train.json").write_text('{"images": []}')
    with pytest.raises(DatasetFileError, match=r"captions_train\.json: not a COCO captions file \(KeyError"):
        maezoo.build("dataset", "caption_folder", root=str(root))
