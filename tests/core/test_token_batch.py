"""Token batch != input batch (channel independence, RevIN) and dict inputs. Every test checks values against a hand computation on a tiny model."""

from __future__ import annotations

import math

import torch
from core_helpers import DD, D, mse_per_token, perturb
from torch import Tensor, nn

from maezoo.core import (
    MaskedAutoencoder,
    RandomMasking,
    Tokenizer,
    Tokens,
    TransformerDecoder,
    ViTEncoder,
    sincos_pos_embed,
)
from maezoo.core.mae import _batch_size


class ChannelIndependentTokenizer(Tokenizer):
    """``[B, C, L] -> [B * C, L / p, D]``: every channel a separate series, RevIN-normalised per series."""

    def __init__(self, patch: int = 4, dim: int = D) -> None:
        super().__init__()
        self.patch, self.embed_dim, self.target_dim = patch, dim, patch
        self.proj = nn.Linear(patch, dim)

    def _revin(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, c, length = x.shape
        series = x.reshape(b * c, length)
        mean = series.mean(-1, keepdim=True)
        std = (series.var(-1, keepdim=True, unbiased=False) + 1e-5).sqrt()
        return ((series - mean) / std).view(b * c, length // self.patch, self.patch), mean[..., None], std[..., None]

    def grid(self, x):
        return (x.shape[-1] // self.patch,)

    def token_batch_size(self, x):
        return x.shape[0] * x.shape[1]

    def patchify(self, x):
        return self._revin(x)[0]

    def forward(self, x):
        patches, mean, std = self._revin(x)
        pe = sincos_pos_embed(self.embed_dim, self.grid(x))
        return Tokens(self.proj(patches) + pe, self.grid(x), {"mean": mean, "std": std, "pos_embed": pe})

    def inverse(self, values, context):
        return values * context["std"] + context["mean"]


def test_channel_independent_token_batch():
    torch.manual_seed(0)
    tok = ChannelIndependentTokenizer()
    enc = ViTEncoder(D, 1, 2)
    model = perturb(MaskedAutoencoder(tok, enc, TransformerDecoder(D, 4, DD, 1, 2), RandomMasking(0.5),
                                      target="raw", mask_mode="replace")).eval()
    x = torch.randn(2, 3, 24) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1) + 3
    out = model(x, generator=torch.Generator().manual_seed(1))
    assert out.mask.mask.shape == (6, 6) and int(out.mask.mask.sum()) == 18
    s = model.sample_mask(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s.mask, out.mask.mask)
    assert _batch_size(x, tok) == 6
    # RevIN statistics reach the output; inverse(target) gives back the raw patches
    assert out.context["mean"].shape == (6, 1, 1)
    torch.testing.assert_close(tok.inverse(out.target, out.context), x.reshape(6, 6, 4), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, mse_per_token(out.pred, out.target)[out.mask.mask].mean())
    # encode is per token-batch row
    feats = model.encode(x, pool="mean")
    assert feats.shape == (6, D)
    torch.testing.assert_close(feats, enc(tok(x).tokens)[:, 1:].mean(1))




class TwoViewTokenizer(Tokenizer):
    """``{"a": [B, 8], "b": [B, 12]}`` -> tokens of 4 values each, ``a``'s then ``b``'s (grid ``(5,)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_dim, self.target_dim = D, 4
        self.proj_a, self.proj_b = nn.Linear(4, D), nn.Linear(4, D)

    def validate(self, x):
        if not isinstance(x, dict) or set(x) != {"a", "b"}:
            raise ValueError("expected a dict with views 'a' and 'b'")

    def grid(self, x):
        return (x["a"].shape[1] // 4 + x["b"].shape[1] // 4,)

    def forward(self, x):
        b = x["a"].shape[0]
        t = torch.cat([self.proj_a(x["a"].view(b, -1, 4)), self.proj_b(x["b"].view(b, -1, 4))], 1)
        return Tokens(t + sincos_pos_embed(D, self.grid(x)), self.grid(x))

    def patchify(self, x):
        b = x["a"].shape[0]
        return torch.cat([x["a"].view(b, -1, 4), x["b"].view(b, -1, 4)], 1)


def test_dict_inputs_ask_the_tokenizer_for_the_batch():
    torch.manual_seed(0)
    tok, enc = TwoViewTokenizer(), ViTEncoder(D, 1, 2)
    model = perturb(MaskedAutoencoder(tok, enc, TransformerDecoder(D, 4, DD, 1, 2), RandomMasking(0.4),
                                      target="raw")).eval()
    x = {"a": torch.randn(3, 8), "b": torch.randn(3, 12)}
    assert _batch_size(x, tok) == 3 and tok.token_batch_size(x) == 3
    s = model.sample_mask(x, generator=torch.Generator().manual_seed(2))
    out = model(x, generator=torch.Generator().manual_seed(2))
    assert out.mask.mask.shape == (3, 5) and torch.equal(s.mask, out.mask.mask)
    torch.testing.assert_close(out.target, torch.cat([x["a"].view(3, 2, 4), x["b"].view(3, 3, 4)], 1))
    torch.testing.assert_close(out.loss, mse_per_token(out.pred, out.target)[out.mask.mask].mean())
    torch.testing.assert_close(model.encode(x, pool="cls"), enc(tok(x).tokens)[:, 0])
    assert math.isfinite(out.loss.item())
