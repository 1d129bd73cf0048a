"""BERT's embeddings as a maezoo tokenizer: padded id batches ``[CLS] pieces [SEP] [PAD]...`` -> tokens.

The ids come from a word-piece vocabulary (:mod:`maezoo.text.vocab`); this module embeds them:
``word_embeddings(id) + position_embeddings(pos) + token_type_embeddings(0)`` (names as in Hugging Face's
``BertEmbeddings``; its ``LayerNorm`` lives at the start of the encoder, :class:`~maezoo.text.models.BertEncoder`,
so that replace mode's mask token and random substitutes are normalised like any token).

The ``[CLS]`` column is the encoder's prefix token (``context["prefix_tokens"]``); the mask grid is the
``N = L - 1`` tokens after it. The context tells the core what to leave alone:
    ``padding_mask`` ``[B, N]``: ``[PAD]`` positions (never attended to, hidden or scored),
    ``unmaskable`` ``[B, N]``: ``[SEP]``/``[CLS]``/``[MASK]`` (never hidden),
    ``word_ids`` ``[B, N]``: word index per piece (whole-word masking), from the ``##`` continuation flags,
    ``pos_embed`` ``[N, D]``: position + token type (replace mode gives the mask token its position),
    ``replace_table`` ``[V, D]``: the word embeddings (BERT's 10% random tokens are uniform over the vocabulary).

Shapes:
    x ``[B, L]`` long -> tokens ``[B, L - 1, D]``, grid ``(L - 1,)``; patchify(x) -> ids ``[B, L - 1]``
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from maezoo.core.tokenizer import Tokenizer, Tokens
from maezoo.registry import register


@register("tokenizer", "text")
class TextTokenizer(Tokenizer):
    """Word, position and token-type embeddings of a padded id batch (module docstring)."""

    modality = "text"

    def __init__(
        self,
        embed_dim: int = 768,
        vocab_size: int | None = None,
        max_positions: int = 512,
        type_vocab_size: int = 2,
        pad_id: int | None = None,
        unk_id: int | None = None,
        cls_id: int | None = None,
        sep_id: int | None = None,
        mask_id: int | None = None,
        vocab_file: str | None = None,
    ) -> None:
        """``vocab_file`` (``tokenizer.json`` or BERT ``vocab.txt``) sets the vocabulary size, special ids and word
        pieces (and is kept for the run folder). Without it: ``vocab_size`` (default BERT's 30522) and the ids given,
        by default BERT's (0, 100-103) for 30522 pieces and maezoo's layout (``[PAD] [UNK] [CLS] [SEP] [MASK]`` =
        0-4, what :class:`~maezoo.text.vocab.TextVocab` trains) for any other size.
        """
        super().__init__()
        vocab = None
        if vocab_file is not None:
            from maezoo.text.vocab import TextVocab

            vocab = TextVocab.from_file(vocab_file)
            if vocab_size is not None and vocab_size != vocab.vocab_size:
                raise ValueError(f"{vocab_file} holds {vocab.vocab_size} pieces but vocab_size={vocab_size}; drop "
                                 "vocab_size (it is read from the file) or give the matching vocabulary file")
            vocab_size = vocab.vocab_size
            pad_id, unk_id, cls_id, sep_id, mask_id = (vocab.special_ids[k] for k in
                                                       ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id"))
        vocab_size = 30522 if vocab_size is None else vocab_size
        defaults = (0, 100, 101, 102, 103) if vocab_size == 30522 else (0, 1, 2, 3, 4)
        pad_id, unk_id, cls_id, sep_id, mask_id = (d if v is None else v for v, d in
                                                   zip((pad_id, unk_id, cls_id, sep_id, mask_id), defaults, strict=True))
        ids = {"pad_id": pad_id, "unk_id": unk_id, "cls_id": cls_id, "sep_id": sep_id, "mask_id": mask_id}
        bad = {k: v for k, v in ids.items() if not 0 <= int(v) < vocab_size}
        if bad:
            raise ValueError(f"special token ids {bad} are outside the vocabulary of {vocab_size}; the vocabulary "
                             "file and vocab_size disagree")
        self.embed_dim, self.target_dim = int(embed_dim), int(vocab_size)
        self.vocab_size, self.max_positions = int(vocab_size), int(max_positions)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (int(v) for v in ids.values())
        self.word_embeddings = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.position_embeddings = nn.Embedding(max_positions, embed_dim)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, embed_dim)
        for emb in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            nn.init.normal_(emb.weight, std=0.02)  # BERT's initializer_range
        with torch.no_grad():
            self.word_embeddings.weight[pad_id].zero_()
        #: ``[V]`` bool, ``True`` for ``##`` pieces (a buffer: saved with the weights)
        self.register_buffer("continuation", torch.zeros(vocab_size, dtype=torch.bool))
        if vocab is not None:
            self.continuation.copy_(vocab.continuation_mask())
            self.vocab_json = vocab.to_json()  # written beside the run's weights (run_files)
        special = torch.zeros(vocab_size, dtype=torch.bool)
        special[[self.cls_id, self.sep_id, self.mask_id, self.pad_id]] = True
        self.register_buffer("special", special, persistent=False)

    # -- checks ---------------------------------------------------------------------------------------------
    def validate(self, x: Any) -> None:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.dtype not in (torch.long, torch.int32, torch.int64):
            got = f"{type(x).__name__} {tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"the text tokenizer takes a [B, L] integer tensor of token ids (a text dataset's "
                             f"collate_fn pads them), got {got}")
        if x.shape[1] < 2:
            raise ValueError(f"a text batch needs [CLS] and at least one more id per row, got length {x.shape[1]}")
        if x.shape[1] > self.max_positions:
            raise ValueError(f"sequences of {x.shape[1]} ids exceed the model's {self.max_positions} positions; "
                             f"set the dataset's max_len <= {self.max_positions}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}) (the model's vocab_size), got "
                             f"[{int(x.min())}, {int(x.max())}]; the tokenizer.json and the model's vocab_size disagree")
        if x.numel() and not bool((x[:, 0] == self.cls_id).all()):
            raise ValueError(f"every row must start with [CLS] (id {self.cls_id}); encode texts with the "
                             "vocabulary's encode(), which adds [CLS] ... [SEP]")

    def grid(self, x: Tensor) -> tuple[int, ...]:
        return (int(x.shape[1]) - 1,)

    def mask_context(self, x: Tensor) -> dict[str, Tensor]:
        """Of the ids after ``[CLS]`` (``[B, L - 1]`` each): ``[PAD]`` (``padding_mask``: never shown, hidden or
        scored), the other special ids (``unmaskable``: never hidden) and each piece's word (``word_ids``)."""
        body = x[:, 1:]
        return {"padding_mask": body == self.pad_id, "unmaskable": self.special[body] & (body != self.pad_id),
                "word_ids": torch.cumsum((~self.continuation[body]).long(), dim=1) - 1}

    # -- embedding ------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tokens:
        length = x.shape[1]
        pos = self.position_embeddings.weight[:length] + self.token_type_embeddings.weight[0]  # [L, D]
        emb = self.word_embeddings(x)  # [B, L, D]
        ctx: dict[str, Any] = {
            "prefix_tokens": emb[:, :1] + pos[:1],
            **self.mask_context(x),
            "pos_embed": pos[1:],
            "replace_table": self.word_embeddings.weight,
        }
        return Tokens(emb[:, 1:] + pos[1:], (length - 1,), ctx)

    def patchify(self, x: Tensor) -> Tensor:
        """Targets: the ids after ``[CLS]`` (``[B, L - 1]``)."""
        return x[:, 1:]

    def unpatchify(self, patches: Tensor, grid: tuple[int, ...]) -> Tensor:
        """Ids back to a batch (``[CLS]`` put first)."""
        cls = torch.full_like(patches[:, :1], self.cls_id)
        return torch.cat([cls, patches], dim=1)

    def example_input(self, batch_size: int = 2) -> Tensor:
        n = min(8, self.max_positions)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, self.vocab_size, (batch_size, n), generator=g)
        x = torch.where(self.special[x], torch.full_like(x, self.unk_id), x)
        x[:, 0], x[:, -1] = self.cls_id, self.sep_id
        if batch_size > 1:
            x[1, -2:] = self.pad_id
            x[1, -3] = self.sep_id
        return x


__all__ = ["TextTokenizer"]
