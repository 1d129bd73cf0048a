"""Word-piece vocabularies through Hugging Face's ``tokenizers`` library: trained in seconds on a corpus, saved as
``tokenizer.json``, or read from a user's ``tokenizer.json`` or a BERT ``vocab.txt`` (a published BERT vocabulary
works unchanged).

Special tokens: ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (a trained vocabulary numbers them 0-4; BERT's ``vocab.txt``
has them at 0, 100, 101, 102, 103). A text is encoded as ``[CLS] pieces [SEP]``, truncated to ``max_len`` ids.

Shapes:
    encode(texts) -> one list of ids per text, each ``<= max_len`` long, ``[CLS]`` first and ``[SEP]`` last
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from maezoo.config import data_root
from maezoo.registry import register

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: prefix of a word piece that continues the previous one (BERT's word-piece convention)
CONTINUATION = "##"


class VocabError(ValueError):
    """A vocabulary file that cannot be used; the message names it and the fix."""


@register("vocab", "wordpiece")
@dataclass
class TextVocab:
    """A word-piece tokenizer (``tokenizers.Tokenizer``) with BERT's special tokens and ``[CLS] ... [SEP]``."""

    hf: object  # tokenizers.Tokenizer
    source: str = ""

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192, lowercase: bool = True, min_frequency: int = 2
              ) -> TextVocab:
        """Train a word-piece vocabulary of at most ``vocab_size`` entries on ``texts`` (streamed, any length)."""
        from tokenizers import Tokenizer, models, trainers

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        _bert_pipeline(tok, lowercase)
        trainer = trainers.WordPieceTrainer(vocab_size=int(vocab_size), min_frequency=int(min_frequency),
                                            special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix=CONTINUATION)
        tok.train_from_iterator(texts, trainer)
        return cls._finish(tok, "trained")

    @classmethod
    def cached(cls, texts: Iterable[str], key: str, vocab_size: int = 8192, lowercase: bool = True,
               given: str | Path | None = None) -> tuple[TextVocab, Path]:
        """``given`` (a ``tokenizer.json`` or ``vocab.txt``) when set; else the vocabulary trained on ``texts`` once
        and kept in ``<data root>/text_vocab/<digest>/tokenizer.json``, the digest of ``key`` (what identifies the
        corpus), ``vocab_size`` and ``lowercase``. ``texts`` is only read when nothing is cached (pass a generator
        for a large corpus). Returns the vocabulary and its file."""
        if given:
            return cls.from_file(given, lowercase=lowercase), Path(given)
        digest = hashlib.sha256(f"{key}|{vocab_size}|{lowercase}".encode()).hexdigest()[:16]
        path = data_root() / "text_vocab" / digest / "tokenizer.json"
        if path.is_file():
            return cls.from_file(path), path
        vocab = cls.train(texts, vocab_size, lowercase)
        return vocab, vocab.save(path)

    @classmethod
    def from_file(cls, path: str | Path, lowercase: bool = True) -> TextVocab:
        """A user's ``tokenizer.json`` (Hugging Face) or a BERT ``vocab.txt`` (one piece a line)."""
        from tokenizers import Tokenizer, models

        path = Path(path)
        if not path.is_file():
            raise VocabError(f"{path}: no such vocabulary file. Fix: give a tokenizer.json or a BERT vocab.txt")
        try:
            if path.suffix == ".json":
                tok = Tokenizer.from_file(str(path))
            else:
                tok = Tokenizer(models.WordPiece.from_file(str(path), unk_token="[UNK]"))
                _bert_pipeline(tok, lowercase)
        except Exception as exc:  # tokenizers raises plain Exceptions for unreadable files
            raise VocabError(f"{path}: not a readable tokenizer.json or vocab.txt ({exc}). Fix: save it with "
                             "tokenizers' Tokenizer.save(...) or give a BERT vocab.txt") from None
        missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
        if missing:
            raise VocabError(f"{path}: the vocabulary lacks the special token(s) {', '.join(missing)}. Fix: add "
                             f"them ({' '.join(SPECIAL_TOKENS)}) or train a vocabulary with maezoo")
        return cls._finish(tok, str(path))

    @classmethod
    def from_json_str(cls, text: str) -> TextVocab:
        from tokenizers import Tokenizer

        return cls._finish(Tokenizer.from_str(text), "json")

    @classmethod
    def _finish(cls, tok, source: str) -> TextVocab:
        from tokenizers import processors

        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        tok.no_truncation()
        tok.no_padding()
        return cls(tok, source)

    def save(self, path: str | Path) -> Path:
        """Write ``tokenizer.json`` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    def to_json(self) -> str:
        return self.hf.to_str()  # type: ignore[attr-defined]

    # -- ids ------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size())  # type: ignore[attr-defined]

    def id_of(self, token: str) -> int:
        return int(self.hf.token_to_id(token))  # type: ignore[attr-defined]

    @property
    def special_ids(self) -> dict[str, int]:
        """``{"pad_id": ..., "unk_id": ..., "cls_id": ..., "sep_id": ..., "mask_id": ...}``."""
        return {f"{t.strip('[]').lower()}_id": self.id_of(t) for t in SPECIAL_TOKENS}

    def continuation_mask(self) -> Tensor:
        """``[V]`` bool: ``True`` for pieces that continue a word (``##...``), for whole-word masking."""
        flags = torch.zeros(self.vocab_size, dtype=torch.bool)
        for piece, i in self.hf.get_vocab().items():  # type: ignore[attr-defined]
            if piece.startswith(CONTINUATION):
                flags[i] = True
        return flags

    def encode(self, texts: list[str], max_len: int) -> tuple[list[list[int]], int]:
        """Ids of each text (``[CLS] ... [SEP]``, at most ``max_len``) and how many texts were truncated."""
        encs = self.hf.encode_batch(texts)  # type: ignore[attr-defined]
        out, cut = [], 0
        for e in encs:
            ids = e.ids
            if len(ids) > max_len:
                ids = ids[: max_len - 1] + [ids[-1]]  # keep [SEP] last
                cut += 1
            out.append(ids)
        return out, cut

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return [self.hf.id_to_token(int(i)) or "[UNK]" for i in ids]  # type: ignore[attr-defined]


def _bert_pipeline(tok, lowercase: bool) -> None:
    from tokenizers import decoders, normalizers, pre_tokenizers

    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=CONTINUATION)


__all__ = ["CONTINUATION", "SPECIAL_TOKENS", "TextVocab", "VocabError"]
