"""Image-caption datasets: CIFAR-10 with WordNet captions (seeded per-sample caption draws, fixed eval captions,
collation), WebDataset caption shards (2 ranks x 2 loader workers, bad samples counted) and caption folders (COCO
JSON, CSV) with their bad inputs."""

from __future__ import annotations

import random

import pytest
import torch

import maezoo
from maezoo.data.robust import RobustDataset
from maezoo.data.sources import find_shared_data

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
    assert ev.caption(1234) != ev.caption(1235) and ev.caption(1234) == ev.captions[ev.targets[1234]][1234 % 20]

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
