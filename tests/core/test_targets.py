"""Targets with parameters (norm-pix options, target specs). Every test checks values against a hand computation on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from core_helpers import C, P, make_model

from maezoo.core import (
    norm_target,
    resolve_target,
)


def test_norm_target_options_match_direct_formulas():
    torch.manual_seed(0)
    pix, ch = 8, 3
    patches = torch.randn(2, 5, pix * ch, dtype=torch.float64) * 2 + 0.5
    a = patches.numpy()
    # MAE default: per token, unbiased var, (x - m) / sqrt(var + eps)
    ref = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(norm_target(patches).numpy(), ref, rtol=1e-10)
    # biased variance, other eps
    ref = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, ddof=0, keepdims=True) + 1e-3)
    np.testing.assert_allclose(norm_target(patches, eps=1e-3, unbiased=False).numpy(), ref, rtol=1e-10)
    # VideoMAE: values laid out [pixels, C], per channel over the tubelet's pixels, (x - m) / (std + 1e-6)
    v = a.reshape(2, 5, pix, ch)
    ref = ((v - v.mean(-2, keepdims=True)) / (v.std(-2, ddof=1, keepdims=True) + 1e-6)).reshape(2, 5, -1)
    got = norm_target(patches, axes="channel", channels=ch, eps_mode="std")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    # the VideoMAE code itself (rearrange 'b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c')
    sq = patches.view(2, 5, pix, ch)
    videomae = (sq - sq.mean(dim=-2, keepdim=True)) / (sq.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    torch.testing.assert_close(got, videomae.reshape(2, 5, -1))


def test_target_specs_in_the_model():
    torch.manual_seed(0)
    x = torch.randn(2, C, 8, 8)
    spec = {"name": "norm", "args": {"axes": "channel", "channels": C, "eps_mode": "std"}}
    model = make_model(target=spec)
    assert model.target_name == "norm"
    out = model(x, generator=torch.Generator().manual_seed(0))
    raw = model.tokenizer.patchify(x).view(2, 4, P * P, C)  # MAE's (p, q, c) order: channel fastest
    ref = (raw - raw.mean(-2, keepdim=True)) / (raw.std(-2, keepdim=True) + 1e-6)
    torch.testing.assert_close(out.target, ref.reshape(2, 4, -1))
    # a callable target
    model = make_model(target=lambda p: 2 * p)
    torch.testing.assert_close(model(x).target, 2 * model.tokenizer.patchify(x))
    # raw as a mapping without args
    name, fn = resolve_target({"name": "raw"})
    assert name == "raw" and torch.equal(fn(x), x)
    # the string form keeps today's function
    assert resolve_target("norm")[1] is norm_target


def test_bad_target_specs_fail_early():
    with pytest.raises(TypeError, match="valid options"):
        resolve_target({"name": "norm", "args": {"axis": "channel"}})
    with pytest.raises(ValueError, match="axes"):
        resolve_target({"name": "norm", "args": {"axes": "pixel"}})
    with pytest.raises(ValueError, match="channels"):
        resolve_target({"name": "norm", "args": {"axes": "channel"}})
    with pytest.raises(ValueError, match="eps_mode"):
        make_model(target={"name": "norm", "args": {"eps_mode": "sqrt"}})
    with pytest.raises(ValueError, match="'name'"):
        resolve_target({"norm": {}})
