"""Replace rules (BERT-style 80/10/10, GraphMAE's replace rate, consumes-replace encoders). Every test checks values against a hand computation on a tiny model."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from core_helpers import C, D, make_model
from torch import Tensor, nn

from maezoo.core import (
    MaskedAutoencoder,
    RandomMasking,
    ReplaceRule,
    sincos_pos_embed,
)
from maezoo.core.masking import REPLACE_KEEP, REPLACE_MASK, REPLACE_RANDOM, apply_replace, apply_replace_rule


def legacy_replace(model, x, mask, generator, pos=None):
    """The pre-ReplaceRule ``MaskedAutoencoder._replace`` (GraphMAE's numerics), verbatim."""
    b, n, d = x.shape
    pos_full = pos.to(x.device, x.dtype).expand(b, n, d) if pos is not None else None
    token = model.mask_token if pos_full is None else model.mask_token.to(x.dtype) + pos_full
    out = apply_replace(x, mask, token)
    if model.replace_rate > 0 and model.training:
        hidden = mask.ids_masked
        gen_dev = generator.device if generator is not None else x.device
        pick = torch.rand(hidden.shape, generator=generator, device=gen_dev).to(x.device) < model.replace_rate
        src = torch.randint(0, b * n, hidden.shape, generator=generator, device=gen_dev).to(x.device)
        content = x if pos_full is None else x - pos_full
        noise = content.reshape(b * n, d)[src]
        idx = hidden.unsqueeze(-1).expand(-1, -1, d)
        if pos_full is not None:
            noise = noise + torch.gather(pos_full, 1, idx)
        cur = torch.gather(out, 1, idx)
        out = out.scatter(1, idx, torch.where(pick.unsqueeze(-1), noise, cur))
    return out


@pytest.mark.parametrize("with_pos", [False, True])
def test_replace_rate_keeps_graphmae_numerics(with_pos):
    model = make_model("replace", 0.5, replace_rate=0.3).train()
    assert model.replace_rule == ReplaceRule(mask=0.7, random=0.3, keep=0.0) and model.replace_rate == 0.3
    x = torch.randn(4, 16, D)
    pos = sincos_pos_embed(D, (16,)) if with_pos else None
    mask = RandomMasking(0.5)(4, (16,), generator=torch.Generator().manual_seed(0))
    new = model._replace(x, mask, torch.Generator().manual_seed(5), pos)
    old = legacy_replace(model, x, mask, torch.Generator().manual_seed(5), pos)
    assert torch.equal(new, old)


def test_consumes_replace_encoder_gets_unmasked_tokens_and_the_same_draws():
    """An encoder with ``consumes = "replace"`` builds the replaced input itself from ``context["replace"]``: it gets
    the unmasked tokens and exactly the draws apply_replace_rule makes (GraphMAE's sparse first layer)."""
    import dataclasses

    model = make_model("replace", 0.5, replace_rate=0.3).train()
    tokenize = model.tokenizer.forward

    def no_pos(x, *a, **k):  # the hook is for tokenizers that add no position embedding (node features)
        tok = tokenize(x, *a, **k)
        return dataclasses.replace(tok, context={k: v for k, v in tok.context.items() if k != "pos_embed"})

    model.tokenizer.forward = no_pos
    plain, seen = model.encoder, {}

    class Consumer(nn.Module):
        consumes = "replace"
        num_prefix_tokens = plain.num_prefix_tokens

        def forward(self, tokens: Tensor, context: dict[str, Any]) -> Tensor:
            rep = context["replace"]
            seen.update(tokens=tokens, kind=rep["kind"], token=rep["token"])
            built = apply_replace(tokens, rep["mask"], rep["token"])  # mask token, then the random substitutes
            hid = rep["mask"].ids_masked
            b, n, d = tokens.shape
            sub = tokens.reshape(b * n, d)[rep["source"]]  # [B, M, D]
            rows = torch.where((rep["kind"] == REPLACE_RANDOM).unsqueeze(-1), sub,
                               torch.gather(built, 1, hid.unsqueeze(-1).expand(-1, -1, d)))
            return plain(built.scatter(1, hid.unsqueeze(-1).expand(-1, -1, d), rows), context)

    x = torch.randn(2, C, 16, 16)
    ref = model(x, generator=torch.Generator().manual_seed(3))
    model.encoder = Consumer()
    got = model(x, generator=torch.Generator().manual_seed(3))
    tok = no_pos(x).tokens
    assert torch.equal(seen["tokens"], tok) and seen["token"] is model.mask_token  # unmasked tokens
    _, kind = apply_replace_rule(tok, ref.mask, model.mask_token, model.replace_rule, _draws_after_mask(model, x))
    assert torch.equal(seen["kind"], kind) and torch.equal(ref.mask.mask, got.mask.mask)
    torch.testing.assert_close(got.loss, ref.loss)


def _draws_after_mask(model: MaskedAutoencoder, x: Tensor) -> torch.Generator:
    """The generator as the model leaves it after drawing the mask (the replace draws come next)."""
    g = torch.Generator().manual_seed(3)
    model.masking(x.shape[0], model.tokenizer(x).mask_grid, generator=g)
    return g


def test_replace_rule_shares_and_kept_tokens():
    torch.manual_seed(0)
    b, n = 64, 64
    x = torch.randn(b, n, D)
    pos = sincos_pos_embed(D, (n,))
    tok = torch.randn(D)
    mask = RandomMasking(0.5)(b, (n,), generator=torch.Generator().manual_seed(0))
    rule = ReplaceRule(mask=0.8, random=0.1, keep=0.1)
    out, kind = apply_replace_rule(x, mask, tok, rule, torch.Generator().manual_seed(1), pos)
    m = kind.numel()  # 2048 hidden tokens: the std of a 10% share is ~0.0066
    shares = [float((kind == k).sum()) / m for k in (REPLACE_MASK, REPLACE_RANDOM, REPLACE_KEEP)]
    assert abs(shares[0] - 0.8) < 0.03 and abs(shares[1] - 0.1) < 0.025 and abs(shares[2] - 0.1) < 0.025
    hid = mask.ids_masked
    rows = torch.gather(out, 1, hid.unsqueeze(-1).expand(-1, -1, D))
    orig = torch.gather(x, 1, hid.unsqueeze(-1).expand(-1, -1, D))
    hpos = pos[hid]
    keep, rand, msk = kind == REPLACE_KEEP, kind == REPLACE_RANDOM, kind == REPLACE_MASK
    assert torch.equal(rows[keep], orig[keep])  # kept tokens are the input tokens
    torch.testing.assert_close(rows[msk], (tok + hpos)[msk])
    content = (x - pos).reshape(-1, D)  # a random substitute is some token's content at its own position
    sub = rows[rand] - hpos[rand]
    assert all(bool(torch.isclose(r, content, atol=1e-6).all(-1).any()) for r in sub)
    assert not torch.isclose(sub, orig[rand] - hpos[rand]).all(-1).all()
    vis = ~mask.mask
    assert torch.equal(out[vis], x[vis])
    # the model uses the rule in training, only the mask token in eval
    model = make_model("replace", 0.5, replace={"mask": 0.8, "random": 0.1, "keep": 0.1})
    model.mask_token.data.copy_(tok)
    model.train()
    torch.testing.assert_close(model._replace(x, mask, torch.Generator().manual_seed(1), pos), out)
    model.eval()
    torch.testing.assert_close(model._replace(x, mask, torch.Generator().manual_seed(1), pos),
                               apply_replace(x, mask, tok + pos))


def test_replace_rule_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        ReplaceRule(mask=0.8, random=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ReplaceRule(mask=1.2, random=-0.2)
    with pytest.raises(ValueError, match="not both"):
        make_model("replace", replace_rate=0.1, replace=ReplaceRule(0.8, 0.1, 0.1))
    assert ReplaceRule.from_replace_rate(0.0) == ReplaceRule()
