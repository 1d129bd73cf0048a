"""Tiny models and helpers shared by the core tests (values checked against hand computations)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from maezoo.core import (
    MaskedAutoencoder,
    RandomMasking,
    TransformerDecoder,
    ViTEncoder,
)
from maezoo.image import PatchTokenizer

P, C, D, DD = 4, 3, 16, 8


def perturb(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # make the zero-initialised pieces non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def make_model(mask_mode="drop", ratio=0.5, target: Any = "norm", **kw) -> MaskedAutoencoder:
    tok = PatchTokenizer(D, P, C, img_size=None)
    enc = ViTEncoder(D, 1, 2)
    dec = TransformerDecoder(D, tok.target_dim, DD, 1, 2, num_prefix_tokens=1)
    model = MaskedAutoencoder(tok, enc, dec, RandomMasking(ratio), target=target, mask_mode=mask_mode, **kw)
    return perturb(model).eval()


def mse_per_token(pred: Tensor, target: Tensor) -> Tensor:
    return ((pred - target) ** 2).mean(-1)


