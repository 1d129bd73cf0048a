"""The core's reconstruction (maezoo/core/reconstruct.py) and the targets' inverses (maezoo/core/targets.py)."""

from __future__ import annotations

import pytest
import torch

from maezoo.core import Reconstruction, invert_target, reconstruct, resolve_target
from maezoo.core.masking import gather_tokens
from maezoo.registry import build, get, names

TARGET_SPECS = [
    "raw",
    "norm",  # MAE's norm_pix_loss
    {"name": "norm", "args": {"axes": "channel", "channels": 3, "eps_mode": "std", "eps": 1e-6, "unbiased": True}},
    {"name": "norm", "args": {"unbiased": False, "eps": 1e-4}},
    {"name": "norm", "args": {"axes": "channel", "channels": 3, "eps_mode": "var", "unbiased": False}},
]


def _tiny_mae(target="norm", **kwargs):
    return build("model", "mae", tokenizer="image", tokenizer_args={"img_size": 8, "patch_size": 4, "in_chans": 3},
                 embed_dim=16, depth=1, num_heads=2, decoder_dim=8, decoder_depth=1, decoder_heads=2, target=target,
                 **kwargs)


@pytest.mark.parametrize("spec", TARGET_SPECS, ids=str)
def test_inverse_of_target_recovers_the_patches(spec):
    _, fn = resolve_target(spec)
    patches = torch.randn(2, 5, 4 * 3) * 3 + 2
    patches[0, 0] = 1.5  # a constant token comes back as its mean
    back = invert_target(fn, fn(patches), patches)
    assert back.shape == patches.shape
    torch.testing.assert_close(back, patches, rtol=1e-5, atol=1e-5)


def test_every_registered_target_has_an_inverse():
    for name in names("target"):
        assert callable(getattr(get("target", name), "inverse", None)), f"target {name!r} lacks .inverse"


def test_invert_target_errors_name_the_fix():
    with pytest.raises(ValueError, match="has no inverse"):
        invert_target(lambda p: p * 2, torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    _, fn = resolve_target("norm")
    with pytest.raises(ValueError, match="must match"):
        invert_target(fn, torch.zeros(1, 2, 3), torch.zeros(1, 4, 3))


@pytest.mark.parametrize("target", ["norm", "raw"])
def test_reconstruct_shapes_and_visible_patches_exact(target):
    model = _tiny_mae(target).train()
    x = torch.randn(3, 3, 8, 8)
    mask = model.sample_mask(x, torch.Generator().manual_seed(1))
    rec = reconstruct(model, x, mask=mask)
    assert isinstance(rec, Reconstruction) and model.training  # mode restored
    b, n, p = 3, 4, 4 * 4 * 3
    for t in (rec.patches, rec.prediction, rec.pasted, rec.masked(0.5)):
        assert t.shape == (b, n, p)
    assert rec.grid == (2, 2) and torch.equal(rec.hidden, mask.mask) and torch.equal(rec.mask.mask, mask.mask)
    torch.testing.assert_close(rec.patches, model.tokenizer.patchify(x))
    vis = ~rec.hidden
    assert torch.equal(rec.pasted[vis], rec.patches[vis]) and torch.equal(rec.masked(0.5)[vis], rec.patches[vis])
    assert bool((rec.masked(0.5)[rec.hidden] == 0.5).all())
    # the hidden rows are the eval-mode prediction mapped back with the original patches' statistics
    out = model.eval()(x, mask=mask)
    expected = invert_target(model.target_fn, out.pred, rec.patches)
    torch.testing.assert_close(rec.pasted[rec.hidden], expected[rec.hidden])
    assert tuple(model.tokenizer.unpatchify(rec.pasted, rec.grid).shape) == tuple(x.shape)


def test_reconstruct_pastes_the_decoder_masking_subset():
    model = _tiny_mae("norm", decoder_masking={"name": "random", "args": {"ratio": 0.5}})
    x = torch.randn(2, 3, 8, 8)
    rec = reconstruct(model, x, generator=torch.Generator().manual_seed(0))
    ids = rec.mask.ids_target
    assert ids is not None and ids.shape[1] < rec.mask.ids_masked.shape[1]
    assert torch.equal(rec.hidden, rec.mask.target_mask) and bool((rec.hidden <= rec.mask.mask).all())
    assert torch.equal(rec.prediction[~rec.hidden], rec.patches[~rec.hidden])  # not predicted: the original
    out = model.eval()(x, mask=rec.mask)  # [B, K, P] on ids_target
    expected = invert_target(model.target_fn, out.pred, gather_tokens(rec.patches, ids))
    torch.testing.assert_close(gather_tokens(rec.pasted, ids), expected)
    # switched off for one call: the decoder reconstructs every hidden token; the model keeps its setting
    full = reconstruct(model, x, mask=rec.mask, decoder_masking=False)
    assert full.mask.ids_target is None and torch.equal(full.hidden, rec.mask.mask)
    assert model.decoder_masking is not None


def test_reconstruct_channel_independent_series():
    from maezoo.timeseries.models import series_mae

    model = series_mae(patch_len=4, embed_dim=16, depth=1, num_heads=2, target="norm")
    x = torch.randn(2, 3, 32) * 4 + 1
    rec = reconstruct(model, x, generator=torch.Generator().manual_seed(0))
    assert rec.patches.shape == (6, 8, 4) and rec.hidden.shape == (6, 8)  # B' = B * C rows
    assert "revin_mean" in rec.context
    assert torch.equal(rec.pasted[~rec.hidden], rec.patches[~rec.hidden])
