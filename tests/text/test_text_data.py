"""Vocabularies (train, save, reload from tokenizer.json or vocab.txt, size mismatch) and the text datasets:
WordNet's fixed split and users' plain text / JSON Lines with their bad inputs."""

from __future__ import annotations

import json
import zlib

import pytest
import torch

import maezoo
from maezoo.data.sources import DatasetFileError, find_shared_data
from maezoo.text.data import LEXNAMES, Synset, read_wordnet, text_jsonl, text_lines, wordnet_folder
from maezoo.text.vocab import SPECIAL_TOKENS, TextVocab, VocabError

CORPUS = [
    "a domesticated carnivorous mammal that typically has a long snout",
    "move fast by using one's feet, with one foot off the ground at any given time",
    "an instrument of punishment consisting of a whip",
    "the act of running; traveling on foot at a fast pace",
    "a large natural stream of water larger than a creek",
] * 8


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    return tmp_path


def test_vocab_trains_saves_and_reloads_the_same(tmp_path):
    vocab = TextVocab.train(CORPUS, vocab_size=200)
    assert [vocab.id_of(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids, cut = vocab.encode(CORPUS[:2], max_len=64)
    assert cut == 0 and ids[0][0] == 2 and ids[0][-1] == 3
    again = TextVocab.from_file(vocab.save(tmp_path / "tokenizer.json"))
    assert again.encode(CORPUS[:2], 64)[0] == ids and again.vocab_size == vocab.vocab_size
    short, cut = vocab.encode(CORPUS[:1], max_len=5)
    assert cut == 1 and len(short[0]) == 5 and short[0][-1] == 3  # truncated, [SEP] kept last


def test_bert_vocab_txt_loads_with_berts_ids(tmp_path):
    pieces = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat",
                                                                  "##s", "sat"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(pieces) + "\n")
    vocab = TextVocab.from_file(path)
    assert vocab.special_ids == {"pad_id": 0, "unk_id": 100, "cls_id": 101, "sep_id": 102, "mask_id": 103}
    assert vocab.encode(["The cats sat"], 16)[0][0] == [101, 104, 105, 106, 107, 102]
    assert bool(vocab.continuation_mask()[106]) and not bool(vocab.continuation_mask()[105])


def test_vocab_errors_name_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("the\ncat\n")
    with pytest.raises(VocabError, match="lacks the special token"):
        TextVocab.from_file(bad)
    with pytest.raises(VocabError, match="no such vocabulary file"):
        TextVocab.from_file(tmp_path / "missing.json")
    good = TextVocab.train(CORPUS, vocab_size=200).save(tmp_path / "tokenizer.json")
    with pytest.raises(ValueError, match="holds .* pieces but model vocab_size=999"):
        maezoo.create_model("bert_tiny", vocab_file=str(good), vocab_size=999)


def test_text_lines_split_folder_and_vocab_cache(data_root):
    folder = data_root / "corpus"
    folder.mkdir()
    lines = [f"document number {i} talks about topic {i % 7}" for i in range(200)]
    (folder / "a.txt").write_text("\n".join(lines[:120]) + "\n\n")
    (folder / "b.txt").write_text("\n".join(lines[120:]) + "\n")
    train, test = text_lines("train", path=str(folder), vocab_size=120), text_lines("test", path=str(folder), vocab_size=120)
    held = {ln for ln in lines if zlib.crc32(ln.encode()) % 10 == 0}
    assert len(test) == len(held) and len(train) + len(test) == 200
    assert {test.text(i) for i in range(len(test))} == held
    x, y = train.collate_fn([train[0], train[1]])
    assert x.dtype == torch.long and x[0, 0] == 2 and y.tolist() == [0, 0]
    assert train.model_kwargs == test.model_kwargs  # one vocabulary, trained on the training split, cached


def test_text_jsonl_labels_and_unknown_class(data_root):
    train = data_root / "train.jsonl"
    test = data_root / "test.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": ["animal", "motion"][i % 2]}) + "\n"
                             for i, t in enumerate(CORPUS)))
    test.write_text(json.dumps({"text": "a fast river", "label": "motion"}) + "\n")
    ds = text_jsonl("test", path=str(train), test_path=str(test), vocab_size=150)
    assert ds.classes == ["animal", "motion"] and ds.targets == [1]
    test.write_text(json.dumps({"text": "a fast river", "label": "plant"}) + "\n")
    with pytest.raises(DatasetFileError, match="label 'plant' is not one of the 2 known classes"):
        text_jsonl("test", path=str(train), test_path=str(test), vocab_size=150)
    test.write_text(json.dumps({"txt": "no text field"}) + "\n")
    with pytest.raises(DatasetFileError, match=r"test.jsonl:1: the JSON line has no string field 'text'"):
        text_jsonl("test", path=str(train), test_path=str(test), vocab_size=150)


def test_empty_and_non_utf8_corpora_are_refused(data_root):
    empty = data_root / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DatasetFileError, match="the corpus is empty"):
        text_lines("train", path=str(empty))
    latin = data_root / "latin.txt"
    latin.write_bytes("caf\u00e9 au lait\n".encode() + "na\u00efve\n".encode("latin-1"))
    with pytest.raises(DatasetFileError, match=r"latin.txt:2: not UTF-8 text.*iconv"):
        text_lines("train", path=str(latin))


def test_overlong_lines_are_truncated_and_said_once(data_root, capsys):
    path = data_root / "long.txt"
    path.write_text("\n".join([" ".join(["word"] * 100)] * 30) + "\n")
    ds = text_lines("train", path=str(path), max_len=16, vocab_size=60)
    assert all(len(ds[i][0]) == 16 for i in range(len(ds)))
    assert capsys.readouterr().err.count("truncated") == 1


@pytest.mark.skipif(find_shared_data("wordnet/wordnet-3.0-data.tar.xz") is None, reason="no shared WordNet copy")
def test_wordnet_split_is_fixed_by_synset_and_labels_are_lexnames(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path))
    synsets = read_wordnet(wordnet_folder())
    assert len(synsets) == 117659 and len(LEXNAMES) == 45
    assert {s.lexfile for s in synsets} == set(range(45))
    test = [s for s in synsets if s.in_test]
    assert len(test) == 12045  # crc32("<pos>:<offset>") % 10 == 0
    assert Synset("noun", "00001740", 3, "x").in_test == (zlib.crc32(b"noun:00001740") % 10 == 0)
    entity = next(s for s in synsets if s.pos == "noun" and s.offset == "00001740")
    assert entity.lexfile == LEXNAMES.index("noun.Tops") and entity.gloss.startswith("that which is perceived")
    assert not any(tmp_path.glob("**/.wordnet.tmp-*"))  # extracted atomically
