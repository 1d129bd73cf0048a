"""Text datasets: WordNet glosses (45 lexicographer-file classes) and users' own text, as padded id batches.

Every builder returns a :class:`TextSamples` of ``(ids [L], label)`` pairs (``collate_fn`` pads a batch with
``[PAD]``), with ``num_classes``, ``targets``, ``classes``, ``vocab`` and ``model_kwargs`` (the vocabulary file,
which the ``mae`` system passes to the model builder). Texts are encoded lazily (``[CLS] pieces [SEP]``, at most
``max_len`` ids; longer texts are truncated, and the first one is reported once).

The vocabulary: ``tokenizer=<tokenizer.json or vocab.txt>`` uses a given one; without it a word-piece vocabulary
of ``vocab_size`` pieces is trained on the training split (seconds) and cached under
``<data root>/text_vocab/<key>/tokenizer.json``; the run folder gets its own copy beside the weights.

* ``wordnet``: Princeton WordNet 3.0 (``data.noun/verb/adj/adv``), one sample per synset: its gloss (definition
  and example sentences) labelled with its lexicographer file (0-44, ``lexnames(5WN)``). Fixed split by synset:
  a synset is in the test split when ``crc32("<pos>:<offset>") % 10 == 0`` (about 10%; ``pos`` is the data file's
  suffix, ``offset`` the 8-digit synset offset). Read from the data root, else extracted from
  ``shared/data/wordnet/wordnet-3.0-data.tar.xz``, else downloaded from Princeton.
* ``text_lines``: plain text, one document a line, from a file or a folder of ``.txt`` files (label 0).
* ``text_jsonl``: JSON Lines with a ``text`` field and an optional ``label`` (a class name or number).
  Both stream: only byte offsets (and labels) are kept in memory, so a corpus larger than memory works. The test
  split is ``test_path`` or, without one, the lines with ``crc32(line) % 10 == 0``. Empty lines are skipped; a
  file that is not UTF-8 or a JSON line without ``text`` stops with the file, line and fix; an empty corpus too.

Shapes:
    sample: ``(ids [L] long, label int)``, ``L <= max_len``; a collated batch ``(ids [B, L_max], labels [B])``
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from maezoo.data.sources import dataset_file_error
from maezoo.data.wordnet import WORDNET_POS, read_entries, wordnet_folder
from maezoo.registry import register
from maezoo.text.vocab import TextVocab

#: WordNet's lexicographer files, numbered as in ``lexnames(5WN)``
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()
UTF8_FIX = "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8) or drop the file"


# -- texts ----------------------------------------------------------------------------------------------------
class Texts(Sequence[str]):
    """Random access to texts: in memory (a list) or by byte offset into files (streaming corpora)."""

    def __init__(self, items: list[str] | None = None, refs: list[tuple[int, int]] | None = None,
                 files: list[Path] | None = None, jsonl: bool = False) -> None:
        self.items, self.refs, self.files, self.jsonl = items, refs or [], files or [], jsonl
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.items) if self.items is not None else len(self.refs)

    def __getitem__(self, i):  # type: ignore[override]
        if self.items is not None:
            return self.items[i]
        f, off = self.refs[i]
        h = self._handles.get(f)
        if h is None:
            h = self._handles[f] = open(self.files[f], "rb")  # noqa: SIM115  (kept open for random access)
        h.seek(off)
        line = h.readline().decode("utf-8")
        return json.loads(line)["text"] if self.jsonl else line.strip()

    def where(self, i: int) -> str:
        if self.items is not None:
            return f"text {i}"
        f, off = self.refs[i]
        return f"{self.files[f]} (byte {off})"

    def __getstate__(self) -> dict[str, Any]:  # loader workers open their own handles
        return {**self.__dict__, "_handles": {}}


class TextSamples(Dataset):
    """``(ids, label)`` pairs encoded on access (module docstring)."""

    def __init__(self, texts: Texts, labels: list[int], classes: Sequence[str], vocab: TextVocab, vocab_file: Path,
                 max_len: int, name: str) -> None:
        self.texts, self.labels, self.classes, self.vocab = texts, labels, list(classes), vocab
        self.max_len, self.name = int(max_len), name
        self.num_classes = len(self.classes)
        self.pad_id = vocab.id_of("[PAD]")
        self.model_kwargs = {"vocab_file": str(vocab_file)}
        self._told = False

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def targets(self) -> list[int]:
        return self.labels

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        ids, cut = self.vocab.encode([self.texts[i]], self.max_len)
        if cut and not self._told:
            self._told = True
            print(f"{self.name}: texts longer than max_len={self.max_len} ids are truncated (the first: "
                  f"{self.texts.where(i)}); raise data.args.max_len to keep more", file=sys.stderr, flush=True)
        return torch.tensor(ids[0], dtype=torch.long), self.labels[i]

    def collate_fn(self, batch: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
        return pad_batch([b[0] for b in batch], self.pad_id), torch.tensor([int(b[1]) for b in batch])

    def text(self, i: int) -> str:
        return self.texts[i]


def pad_batch(seqs: list[Tensor], pad_id: int) -> Tensor:
    """``[B, max length]`` ids, shorter rows filled with ``pad_id``."""
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id)


# -- vocabulary -----------------------------------------------------------------------------------------------
def corpus_vocab(texts: Texts, key: str, vocab_size: int, lowercase: bool, tokenizer: str | None
                 ) -> tuple[TextVocab, Path]:
    """The given vocabulary file, or one trained on ``texts`` and cached under the data root by ``key``."""
    return TextVocab.cached((texts[i] for i in range(len(texts))), key, vocab_size, lowercase, given=tokenizer)


# -- WordNet --------------------------------------------------------------------------------------------------
@dataclass
class Synset:
    pos: str
    offset: str
    lexfile: int
    gloss: str

    @property
    def in_test(self) -> bool:
        return zlib.crc32(f"{self.pos}:{self.offset}".encode()) % 10 == 0


def read_wordnet(folder: Path) -> list[Synset]:
    """Every synset of the four data files (:mod:`maezoo.data.wordnet` parses the lines)."""
    return [Synset(e.pos, e.offset, e.lexfile, e.gloss) for pos in WORDNET_POS for e in read_entries(folder, pos)]


@register("dataset", "wordnet")
def wordnet(split: str = "train", transform: str = "eval", max_len: int = 64, vocab_size: int = 8192,
            lowercase: bool = True, tokenizer: str | None = None, root: str | None = None) -> TextSamples:
    """WordNet 3.0 glosses -> lexicographer file (45 classes); see the module docstring for the split."""
    folder = wordnet_folder(root)
    synsets = read_wordnet(folder)
    pick = [s for s in synsets if s.in_test == (split == "test")]
    train = Texts([s.gloss for s in synsets if not s.in_test])
    vocab, vfile = corpus_vocab(train, f"wordnet3.0|{len(synsets)}", vocab_size, lowercase, tokenizer)
    return TextSamples(Texts([s.gloss for s in pick]), [s.lexfile for s in pick], LEXNAMES, vocab, vfile,
                       _check_max_len(max_len), "wordnet")


def _wordnet_model_kwargs(max_len: int = 64, vocab_size: int = 8192, lowercase: bool = True,
                          tokenizer: str | None = None, root: str | None = None, **_: Any) -> dict[str, Any]:
    return wordnet("train", "eval", max_len, vocab_size, lowercase, tokenizer, root).model_kwargs


wordnet.model_kwargs = _wordnet_model_kwargs  # type: ignore[attr-defined]


# -- users' text ----------------------------------------------------------------------------------------------
def _files(path: str | Path, suffix: str) -> list[Path]:
    p = Path(path).expanduser()
    if p.is_dir():
        found = sorted(q for q in p.rglob(f"*{suffix}") if q.is_file())
        if not found:
            raise dataset_file_error(p, f"the folder holds no {suffix} file", f"put {suffix} files in it")
        return found
    if not p.is_file():
        raise dataset_file_error(p, "no such file or folder", "give an existing file or folder in data.args.path")
    return [p]


def scan_lines(files: list[Path], jsonl: bool) -> Iterator[tuple[int, int, bytes, Any]]:
    """``(file index, byte offset, raw line, label)`` of every non-empty line, checked for UTF-8 (and JSON)."""
    for fi, path in enumerate(files):
        with open(path, "rb") as f:
            off, n = 0, 0
            for raw in f:
                n += 1
                start, off = off, off + len(raw)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise dataset_file_error(f"{path}:{n}", f"not UTF-8 text ({exc.reason} at byte "
                                             f"{exc.start} of the line)", UTF8_FIX) from None
                if not line.strip():
                    continue
                label = None
                if jsonl:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise dataset_file_error(f"{path}:{n}", f"not a JSON line ({exc.msg})",
                                                 'write one JSON object a line, e.g. {"text": "...", "label": "x"}') from None
                    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                        raise dataset_file_error(f"{path}:{n}", "the JSON line has no string field 'text'",
                                                 'give every line a "text" field')
                    label = row.get("label")
                yield fi, start, raw, label


def _user_split(path: str, test_path: str | None, split: str, jsonl: bool
                ) -> tuple[Texts, list[Any], Texts, str]:
    """Texts and raw labels of ``split`` and the training texts (for the vocabulary), plus a cache key."""
    suffix = ".jsonl" if jsonl else ".txt"
    files = _files(path, suffix)
    test_files = _files(test_path, suffix) if test_path else []

    def collect(fs: list[Path], keep) -> tuple[Texts, list[Any]]:
        refs, labels = [], []
        for fi, off, raw, label in scan_lines(fs, jsonl):
            if keep(raw):
                refs.append((fi, off))
                labels.append(label)
        return Texts(refs=refs, files=fs, jsonl=jsonl), labels

    in_test = (lambda raw: zlib.crc32(raw.strip()) % 10 == 0) if not test_path else (lambda raw: False)
    train, train_labels = collect(files, lambda raw: not in_test(raw))
    if len(train) == 0:
        raise dataset_file_error(path, "the corpus is empty (no non-empty line in the training split)",
                                 "give a file with one document a line")
    key = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    if split == "train":
        return train, train_labels, train, key
    if test_path:
        test, test_labels = collect(test_files, lambda raw: True)
    else:
        test, test_labels = collect(files, in_test)
    if len(test) == 0:
        raise dataset_file_error(test_path or path, "the test split is empty",
                                 "give data.args.test_path, or more lines (a tenth of them are held out)")
    return test, test_labels, train, key


def _classes(train_labels: list[Any], classes_file: str | None) -> list[str]:
    if classes_file:
        names = [ln.strip() for ln in Path(classes_file).read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not names:
            raise dataset_file_error(classes_file, "the class list is empty", "write one class name a line")
        return names
    return sorted({str(x) for x in train_labels if x is not None}) or ["text"]


def _label_ids(labels: list[Any], classes: list[str], texts: Texts, where: str) -> list[int]:
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for i, lab in enumerate(labels):
        if lab is None:
            out.append(0)
            continue
        if str(lab) not in index:
            raise dataset_file_error(texts.where(i), f"label {lab!r} is not one of the {len(classes)} known classes "
                                     f"({', '.join(classes[:8])}{' ...' if len(classes) > 8 else ''})",
                                     f"fix the label, or list it in {where}")
        out.append(index[str(lab)])
    return out


def _check_max_len(max_len: int) -> int:
    if int(max_len) < 3:
        raise ValueError(f"max_len must be >= 3 ([CLS], a piece, [SEP]), got {max_len}")
    return int(max_len)


def _user_dataset(split: str, path: str, test_path: str | None, jsonl: bool, max_len: int, vocab_size: int,
                  lowercase: bool, tokenizer: str | None, classes: str | None, name: str) -> TextSamples:
    if not path:
        raise ValueError(f"{name} needs data.args.path: a {'.jsonl' if jsonl else '.txt'} file or a folder of them")
    texts, raw_labels, train, key = _user_split(path, test_path, split, jsonl)
    vocab, vfile = corpus_vocab(train, key, vocab_size, lowercase, tokenizer)
    if jsonl:
        train_labels = raw_labels if split == "train" else _user_split(path, test_path, "train", jsonl)[1]
        names = _classes(train_labels, classes)
        where = classes or "the training split (or give data.args.classes, a file with one class a line)"
        labels = _label_ids(raw_labels, names, texts, where)
    else:
        names, labels = ["text"], [0] * len(texts)
    return TextSamples(texts, labels, names, vocab, vfile, _check_max_len(max_len), name)


@register("dataset", "text_lines")
def text_lines(split: str = "train", transform: str = "eval", path: str = "", test_path: str | None = None,
               max_len: int = 128, vocab_size: int = 8192, lowercase: bool = True, tokenizer: str | None = None
               ) -> TextSamples:
    """Plain text, one document a line: a ``.txt`` file or a folder of them (module docstring)."""
    return _user_dataset(split, path, test_path, False, max_len, vocab_size, lowercase, tokenizer, None, "text_lines")


@register("dataset", "text_jsonl")
def text_jsonl(split: str = "train", transform: str = "eval", path: str = "", test_path: str | None = None,
               max_len: int = 128, vocab_size: int = 8192, lowercase: bool = True, tokenizer: str | None = None,
               classes: str | None = None) -> TextSamples:
    """JSON Lines with ``text`` and an optional ``label``; ``classes``: a file with one class name a line."""
    return _user_dataset(split, path, test_path, True, max_len, vocab_size, lowercase, tokenizer, classes,
                         "text_jsonl")


__all__ = ["LEXNAMES", "TextSamples", "Texts", "pad_batch", "read_wordnet", "text_jsonl", "text_lines", "wordnet",
           "wordnet_folder"]
