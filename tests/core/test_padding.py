"""Core: variable-length batches with padding (ragged masks), vocabulary substitutes and masked-only heads.

A tiny id tokenizer (pad id 0, an id per token, learned embedding) stands in for a text tokenizer, so these
tests check the core alone: padding is never hidden nor scored, attention ignores padded keys, the loss is the
cross-entropy over exactly the hidden real tokens, and mean pooling averages real tokens only.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maezoo.core import MaskedAutoencoder, RandomMasking, ReplaceRule, Tokenizer, Tokens, ViTEncoder
from maezoo.core.masking import (
    REPLACE_KEEP,
    REPLACE_MASK,
    REPLACE_RANDOM,
    Mask,
    WholeWordMasking,
    apply_replace_rule,
    draw_replace_rule,
    ragged_count,
)

V, D, PAD = 50, 16, 0


class IdTokenizer(Tokenizer):
    """``[B, N]`` ids (0 = padding) -> embedded tokens; the padding in ``context``; targets are the ids."""

    def __init__(self, table: bool = False) -> None:
        super().__init__()
        self.embed_dim, self.target_dim = D, V
        self.emb = nn.Embedding(V, D)
        self.table = table

    def grid(self, x: Tensor) -> tuple[int, ...]:
        return (x.shape[1],)

    def mask_context(self, x: Tensor) -> dict[str, Tensor]:
        return {"padding_mask": x == PAD}

    def forward(self, x: Tensor) -> Tokens:
        ctx: dict[str, Any] = dict(self.mask_context(x))
        if self.table:
            ctx["replace_table"] = self.emb.weight
        return Tokens(self.emb(x), self.grid(x), ctx)

    def patchify(self, x: Tensor) -> Tensor:
        return x


class Head(nn.Module):
    """A linear vocabulary head on every token (``predicts = "masked"``: only the hidden rows)."""

    def __init__(self, masked_only: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(D, V)
        if masked_only:
            self.predicts = "masked"

    def forward(self, latent: Tensor, mask: Mask, grid: tuple[int, ...], context: dict[str, Any]) -> Tensor:
        x = latent[:, 1:]
        if getattr(self, "predicts", "all") == "masked":
            x = torch.gather(x, 1, mask.ids_masked.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return self.proj(x)


def batch(lengths: list[int], n: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, V, (len(lengths), n), generator=g)
    for i, length in enumerate(lengths):
        x[i, length:] = PAD
    return x


def model(ratio: float = 0.5, masked_only: bool = False, rule: ReplaceRule | None = None, table: bool = False,
          masking: Any = None) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(IdTokenizer(table), ViTEncoder(D, 1, 2), Head(masked_only), masking or RandomMasking(ratio),
                             target="raw", loss="ce", mask_mode="replace", replace=rule)


def test_ragged_mask_never_hides_padding_and_counts_follow_each_length():
    lengths = [10, 3, 0, 7]
    pad = batch(lengths, 10) == PAD
    for seed in range(20):
        m = RandomMasking(0.3)(4, (10,), generator=torch.Generator().manual_seed(seed), exclude=pad)
        assert not (m.mask & pad).any()
        assert m.mask.sum(1).tolist() == [3, 1, 0, 2]  # max(1, floor(0.3 n + 0.5)), 0 for an empty row
        assert m.ragged and m.ids_masked.shape == (4, ragged_count(10, 0.3))
        hidden = torch.gather(m.mask, 1, m.ids_masked)
        assert torch.equal(hidden, m.masked_valid)  # valid slots name hidden tokens, fillers visible ones
        perm = torch.cat([m.ids_keep, m.ids_masked], 1)
        assert torch.equal(torch.gather(perm, 1, m.ids_restore), torch.arange(10).expand(4, 10))


def test_strategy_without_padding_support_names_the_fix():
    from maezoo.core import TubeMasking

    with pytest.raises(ValueError, match="random' or 'whole_word"):
        TubeMasking(0.5)(2, (1, 2, 2), exclude=torch.zeros(2, 4, dtype=torch.bool))


def test_loss_is_cross_entropy_over_exactly_the_hidden_real_tokens():
    x = batch([12, 5, 9], 12)
    m = model(0.4).train()
    g = torch.Generator().manual_seed(3)
    out = m(x, generator=g)
    assert not (out.mask.mask & (x == PAD)).any()
    # recompute: encoder on the same replaced input, CE on the hidden positions only
    logits = out.pred  # [B, N, V] from the all-token head
    sel = out.mask.mask
    expected = F.cross_entropy(logits[sel], x[sel])
    torch.testing.assert_close(out.loss, expected)
    assert int(sel.sum()) == sum(ragged_count(n, 0.4) for n in (12, 5, 9))


def test_masked_only_head_gives_the_same_loss_as_the_full_head():
    x = batch([12, 5, 9], 12)
    full, part = model(0.4), model(0.4, masked_only=True)
    part.load_state_dict(full.state_dict())
    a = full.train()(x, generator=torch.Generator().manual_seed(1))
    b = part.train()(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.loss, b.loss)
    assert b.pred.shape == (3, a.mask.ids_masked.shape[1], V)
    assert torch.equal(b.target, torch.gather(x, 1, a.mask.ids_masked))


def test_padding_is_not_attended_and_not_pooled():
    m = model().eval()
    x = batch([6, 4], 6)
    longer = torch.cat([x, torch.zeros(2, 5, dtype=torch.long)], 1)  # more padding changes nothing
    torch.testing.assert_close(m.encode(x, "mean"), m.encode(longer, "mean"))
    torch.testing.assert_close(m.encode(x, "cls"), m.encode(longer, "cls"))
    feats = m.encode(x, "none")  # [B, N, D]
    torch.testing.assert_close(m.encode(x, "mean")[1], feats[1, :4].mean(0))


def test_replace_rule_fillers_stay_and_table_substitutes_come_from_the_table():
    x = batch([8, 3], 8)
    pad = x == PAD
    mask = RandomMasking(0.5)(2, (8,), generator=torch.Generator().manual_seed(0), exclude=pad)
    tokens = torch.randn(2, 8, D)
    table = torch.randn(V, D) + 100.0  # far from every token: a substitute is recognisable
    rule = ReplaceRule(mask=0.0, random=0.5, keep=0.5)
    out, kind = apply_replace_rule(tokens, mask, torch.zeros(D), rule, torch.Generator().manual_seed(1), table=table)
    assert torch.equal(out[~mask.mask], tokens[~mask.mask])  # padding and visible tokens untouched
    assert (kind[~mask.masked_valid] == REPLACE_KEEP).all()
    rows = torch.gather(out, 1, mask.ids_masked.unsqueeze(-1).expand(-1, -1, D))
    random_rows = rows[(kind == REPLACE_RANDOM) & mask.masked_valid]
    assert random_rows.numel() and (random_rows.mean(-1) > 50).all()


def test_bert_80_10_10_proportions_over_many_draws():
    b, n = 64, 64
    x = batch([n - (i % 20) for i in range(b)], n)
    pad = x == PAD
    counts = torch.zeros(3)
    selected, real = 0, 0
    rule = ReplaceRule(mask=0.8, random=0.1, keep=0.1)
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        mask = RandomMasking(0.15)(b, (n,), generator=g, exclude=pad)
        kind, _ = draw_replace_rule(mask, rule, V, g)
        valid = mask.masked_valid
        counts += torch.stack([((kind == k) & valid).sum() for k in (REPLACE_MASK, REPLACE_RANDOM, REPLACE_KEEP)])
        selected += int(valid.sum())
        real += int((~pad).sum())
    share = counts / counts.sum()
    torch.testing.assert_close(share, torch.tensor([0.8, 0.1, 0.1]), atol=0.01, rtol=0)
    assert abs(selected / real - 0.15) < 0.005


def test_whole_word_masking_hides_whole_words_within_budget():
    n = 12
    words = torch.tensor([[0, 0, 1, 2, 2, 2, 3, 4, 4, 5, -1, -1]] * 32)
    pad = words < 0
    for seed in range(5):
        m = WholeWordMasking(0.4)(32, (n,), generator=torch.Generator().manual_seed(seed), exclude=pad, groups=words)
        assert not (m.mask & pad).any()
        assert (m.mask.sum(1) <= ragged_count(10, 0.4)).all() and (m.mask.sum(1) > 0).all()
        for row, w in zip(m.mask, words):
            for word in range(6):
                pieces = row[w == word]
                assert pieces.all() or not pieces.any()  # a word is hidden whole or not at all


def test_drop_mode_refuses_a_ragged_mask():
    m = MaskedAutoencoder(IdTokenizer(), ViTEncoder(D, 1, 2), Head(), RandomMasking(0.5), target="raw", loss="ce")
    with pytest.raises(ValueError, match="mask_mode='replace'"):
        m(batch([4, 2], 4))


def test_vocabulary_table_substitutes_in_the_model():
    m = model(0.5, rule=ReplaceRule(mask=0.8, random=0.1, keep=0.1), table=True).train()
    out = m(batch([10, 6], 10), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and m.tokenizer.emb.weight.grad is not None
