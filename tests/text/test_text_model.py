"""The BERT model on the core: 80/10/10 over many draws, padding never selected nor scored, the loss equals the
cross-entropy over exactly the selected pieces, whole-word masking, the tied head and the presets' shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import maezoo
from maezoo.core.masking import REPLACE_KEEP, REPLACE_MASK, REPLACE_RANDOM, draw_replace_rule
from maezoo.text.models import bert

V = 97


def tiny(**kw):
    torch.manual_seed(0)
    args = {"vocab_size": V, "max_positions": 40, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32,
            "dropout": 0.0, **kw}
    return bert(**args)


def ids(lengths: list[int], n: int, seed: int = 0) -> torch.Tensor:
    """``[CLS] random pieces [SEP] [PAD]...`` rows (special ids 0-4, as maezoo trains vocabularies)."""
    m = tiny()
    tok = m.tokenizer
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, V, (len(lengths), n), generator=g)
    x = torch.where(tok.special[x], torch.full_like(x, tok.unk_id), x)
    for i, length in enumerate(lengths):
        x[i, 0], x[i, length - 1] = tok.cls_id, tok.sep_id
        x[i, length:] = tok.pad_id
    return x


def test_special_ids_follow_the_vocabulary_layout():
    with torch.device("meta"):
        assert bert(embed_dim=16, depth=1, num_heads=2, mlp_dim=32).tokenizer.cls_id == 101  # BERT's vocab.txt
        assert bert(vocab_size=50, embed_dim=16, depth=1, num_heads=2, mlp_dim=32).tokenizer.cls_id == 2  # trained


def test_padding_and_specials_never_selected_and_loss_is_ce_on_selected():
    m = tiny(mask_ratio=0.3).train()
    x = ids([30, 12, 5, 30], 30)
    out = m(x, generator=torch.Generator().manual_seed(0))
    body = x[:, 1:]
    assert not (out.mask.mask & ((body == 0) | (body == m.tokenizer.sep_id))).any()
    real = ((body != 0) & (body != m.tokenizer.sep_id)).sum(1)
    expected_counts = torch.clamp(torch.floor(real * 0.3 + 0.5), min=1).long()
    assert torch.equal(out.mask.mask.sum(1), expected_counts)
    valid = out.mask.masked_valid
    assert torch.equal(torch.gather(out.mask.mask, 1, out.mask.ids_masked), valid)
    ce = F.cross_entropy(out.pred[valid], out.target[valid])
    torch.testing.assert_close(out.loss, ce)
    assert torch.equal(out.target, torch.gather(body, 1, out.mask.ids_masked))


def test_80_10_10_shares_over_many_draws_of_the_model_rule():
    m = tiny()
    x = ids([40 - (i % 25) for i in range(64)], 40)
    tok = m.tokenizer(x)
    total, kinds = 0, torch.zeros(3)
    for s in range(25):
        g = torch.Generator().manual_seed(s)
        mask = m._draw_mask(tok.batch_size, tok.mask_grid, tok.context, g, tok.tokens.device)
        kind, src = draw_replace_rule(mask, m.replace_rule, V, g)
        v = mask.masked_valid
        kinds += torch.stack([((kind == k) & v).sum() for k in (REPLACE_MASK, REPLACE_RANDOM, REPLACE_KEEP)])
        total += int(v.sum())
        assert int(src.max()) < V  # random substitutes are vocabulary rows
    torch.testing.assert_close(kinds / total, torch.tensor([0.8, 0.1, 0.1]), atol=0.012, rtol=0)


def test_whole_word_masking_takes_all_pieces_of_a_word():
    m = tiny(masking="whole_word", mask_ratio=0.4)
    m.tokenizer.continuation[50:] = True  # ids >= 50 continue the previous word
    x = ids([30] * 16, 30, seed=3)
    out = m.train()(x, generator=torch.Generator().manual_seed(1))
    word = m.tokenizer(x).context["word_ids"]
    for row, w in zip(out.mask.mask, word):
        for k in w.unique():
            pieces = row[w == k]
            assert pieces.all() or not pieces.any()


def test_head_is_tied_to_the_word_embeddings_and_encode_pools_real_tokens():
    m = tiny().eval()
    assert m.decoder._tied[0] is m.tokenizer.word_embeddings
    names = dict(m.named_parameters())
    assert "decoder.bias" in names and not any(n.startswith("decoder._tied") for n in names)
    x = ids([10, 6], 10)
    longer = torch.cat([x, torch.zeros(2, 7, dtype=torch.long)], 1)
    for pool in ("cls", "mean"):
        torch.testing.assert_close(m.encode(x, pool), m.encode(longer, pool))


@pytest.mark.parametrize("name,dims", [("bert_tiny", (2, 128, 2)), ("bert_mini", (4, 256, 4)),
                                       ("bert_small", (4, 512, 8)), ("bert_base", (12, 768, 12))])
def test_presets_have_the_published_shapes(name, dims):
    with torch.device("meta"):
        m = maezoo.create_model(name, vocab_size=V)
    depth, width, heads = dims
    assert len(m.encoder.blocks) == depth and m.encoder.dim == width
    assert m.encoder.blocks[0].attn.num_heads == heads
    if name == "bert_base":
        assert m.encoder.blocks[0].mlp.fc1.out_features == 3072
        assert m.tokenizer.position_embeddings.num_embeddings == 512
        assert m.tokenizer.token_type_embeddings.num_embeddings == 2


def test_bad_batches_get_clear_errors():
    m = tiny()
    with pytest.raises(ValueError, match="vocab_size"):
        m(torch.tensor([[2, V + 3, 0]]))
    with pytest.raises(ValueError, match="start with \\[CLS\\]"):
        m(torch.tensor([[5, 6, 7]]))
    with pytest.raises(ValueError, match="positions"):
        m(ids([50], 50))
