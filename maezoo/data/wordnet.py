"""Princeton WordNet 3.0's database files (``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``): where they
come from and one parser of their lines, shared by every modality that reads WordNet.

The folder ``<data root>/wordnet`` is read as it is, else extracted once from the read-only
``shared/data/wordnet/wordnet-3.0-data.tar.xz``, else downloaded from Princeton (``WordNet-3.0.tar.gz``, whose
``dict/`` becomes the folder). Only the data files are needed: a synset is looked up by its offset, which is stable
within WordNet 3.0 (the shared copy holds no ``index.*`` files, so libraries that need them, such as nltk's
``WordNetCorpusReader``, cannot read it).

A data line (``wndb(5WN)``)::

    offset lex_filenum ss_type w_cnt(hex) [word lex_id]... p_cnt [symbol offset pos source/target]... [frames] | gloss

Pointer symbols used here: ``@`` hypernym, ``~`` hyponym, ``~i`` instance hyponym. Licence header lines start with
two spaces and are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from maezoo.config import data_root
from maezoo.data.sources import dataset_file_error, download_or_explain, extract_archive, prepared_folder

WORDNET_TAR = "wordnet/wordnet-3.0-data.tar.xz"
WORDNET_URL = "https://wordnetcode.princeton.edu/3.0/WordNet-3.0.tar.gz"
WORDNET_POS = ("noun", "verb", "adj", "adv")
#: lexicographer files in WordNet 3.0 (``lexnames(5WN)``: 0-44)
NUM_LEXFILES = 45
DATA_LINE_FIX = "replace the file with WordNet 3.0's data files"


@dataclass
class WordNetEntry:
    """One synset of a data file. ``lemmas`` as written (``_`` for spaces, adjective markers such as ``(a)``
    removed); ``pointers``: ``(symbol, offset, pos)`` triples."""

    pos: str  # the data file's suffix: noun, verb, adj, adv
    offset: str
    lexfile: int
    lemmas: list[str]
    gloss: str
    pointers: list[tuple[str, str, str]] = field(default_factory=list)

    def related(self, symbol: str) -> list[str]:
        """Offsets of the synsets this one points to with ``symbol`` (e.g. ``~`` for hyponyms)."""
        return [off for sym, off, _ in self.pointers if sym == symbol]

    @property
    def definition(self) -> str:
        """The gloss without its quoted example sentences."""
        return self.gloss.split('; "')[0].split(' "')[0].strip().rstrip(";").strip()

    def words(self) -> list[str]:
        """The lemmas with spaces instead of underscores."""
        return [w.replace("_", " ") for w in self.lemmas]


def _layout(folder: Path) -> Path:
    missing = [p for p in WORDNET_POS if not (folder / f"data.{p}").is_file()]
    if missing:
        raise ValueError(f"no data.{', data.'.join(missing)} (WordNet's database files)")
    return folder


def wordnet_folder(root: str | Path | None = None) -> Path:
    """The folder holding ``data.noun`` etc.: ``<root or data root>/wordnet``, extracted or downloaded if absent."""
    return prepared_folder(Path(root) if root else data_root(), "wordnet", "WordNet", _layout, WORDNET_TAR,
                           _download, pick=lambda tmp: _layout(tmp / "wordnet"))


def _download(base: Path, folder: Path) -> Path:
    """Princeton's WordNet-3.0.tar.gz; its ``dict/`` becomes ``<base>/wordnet``."""
    import urllib.request

    base.mkdir(parents=True, exist_ok=True)
    archive = base / ".WordNet-3.0.tar.gz"
    download_or_explain("WordNet 3.0", folder, WORDNET_URL, lambda: urllib.request.urlretrieve(WORDNET_URL, archive))
    try:
        return extract_archive(archive, folder, "delete it and run again to download it afresh",
                               pick=lambda tmp: _layout(next(tmp.glob("*/dict"))))
    finally:
        archive.unlink(missing_ok=True)


def parse_data_line(line: str, pos: str) -> WordNetEntry:
    """One data line as a :class:`WordNetEntry`; ``ValueError("what is wrong")`` when it is not one."""
    head, sep, gloss = line.partition(" | ")
    f = head.split()
    if not sep or len(f) < 4 or not f[1].isdigit() or int(f[1]) >= NUM_LEXFILES:
        raise ValueError("not a WordNet data line (offset lex_filenum ss_type w_cnt word lex_id ... | gloss)")
    try:
        n_words = int(f[3], 16)
        lemmas = [f[4 + 2 * k].split("(")[0] for k in range(n_words)]
        at = 4 + 2 * n_words
        n_ptr = int(f[at])
        pointers = [(f[at + 1 + 4 * k], f[at + 2 + 4 * k], f[at + 3 + 4 * k]) for k in range(n_ptr)]
    except (ValueError, IndexError):
        raise ValueError("a data line whose word or pointer counts do not match its fields") from None
    return WordNetEntry(pos, f[0], int(f[1]), lemmas, gloss.strip(), pointers)


class SynsetLines(Mapping[str, WordNetEntry]):
    """``offset -> WordNetEntry`` over one data file, each line parsed only when looked up (for walks over a few
    synsets, such as a class's hyponyms, without parsing the whole file)."""

    def __init__(self, folder: Path, pos: str) -> None:
        self.path, self.pos = folder / f"data.{pos}", pos
        with open(self.path, encoding="utf-8") as fh:
            self.lines = {ln[:8]: (n, ln) for n, ln in enumerate(fh, 1) if ln.strip() and not ln.startswith("  ")}

    def __getitem__(self, offset: str) -> WordNetEntry:
        n, line = self.lines[offset]
        try:
            return parse_data_line(line, self.pos)
        except ValueError as exc:
            raise dataset_file_error(f"{self.path}:{n}", str(exc), DATA_LINE_FIX) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.lines)

    def __len__(self) -> int:
        return len(self.lines)


def read_entries(folder: Path, pos: str) -> Iterator[WordNetEntry]:
    """Every synset of ``folder/data.<pos>``; a malformed line raises :class:`DatasetFileError` naming file:line."""
    path = folder / f"data.{pos}"
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.startswith("  ") or not line.strip():
                continue
            try:
                yield parse_data_line(line, pos)
            except ValueError as exc:
                raise dataset_file_error(f"{path}:{n}", str(exc), DATA_LINE_FIX) from None


__all__ = ["WORDNET_POS", "WORDNET_TAR", "WORDNET_URL", "SynsetLines", "WordNetEntry", "parse_data_line", "read_entries",
           "wordnet_folder"]
