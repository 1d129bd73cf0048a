"""Image tokenizer: patchify round trip, MAE patch order, clear input errors; the reconstruction figure."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maezoo.image import PatchTokenizer, reconstruction_grid, save_reconstructions


@settings(max_examples=40, deadline=None)
@given(
    c=st.integers(1, 5),
    ph=st.integers(1, 6),
    pw=st.integers(1, 6),
    gh=st.integers(1, 5),
    gw=st.integers(1, 5),
    b=st.integers(1, 3),
)
def test_patchify_unpatchify_identity(c, ph, pw, gh, gw, b):
    tok = PatchTokenizer(embed_dim=8, patch_size=(ph, pw), in_chans=c, img_size=None)
    x = torch.randn(b, c, gh * ph, gw * pw)
    patches = tok.patchify(x)
    assert patches.shape == (b, gh * gw, ph * pw * c) and tok.target_dim == ph * pw * c
    assert tok.grid(x) == (gh, gw)
    assert torch.equal(tok.unpatchify(patches, (gh, gw)), x)
    p2 = torch.randn_like(patches)
    assert torch.equal(tok.patchify(tok.unpatchify(p2, (gh, gw))), p2)


def test_patchify_matches_official_mae_order():
    tok = PatchTokenizer(16, 4, 3, img_size=None)
    imgs = torch.randn(2, 3, 8, 12)
    p, h, w = 4, 2, 3
    # facebookresearch/mae models_mae.py patchify (generalised to h != w)
    x = imgs.reshape(2, 3, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x).reshape(2, h * w, p**2 * 3)
    assert torch.equal(tok.patchify(imgs), x)


def test_tokens_and_position_embedding():
    tok = PatchTokenizer(32, 4, 2, img_size=None)
    x = torch.randn(3, 2, 8, 16)
    t = tok(x)
    assert t.tokens.shape == (3, 8, 32) and t.grid == (2, 4)
    assert t.context["pos_embed"].shape == (8, 32)
    no_pos = tok.proj(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(t.tokens - no_pos, t.context["pos_embed"].expand(3, -1, -1))


BAD_INPUTS = [
    (torch.randn(2, 1, 16, 16), r"1 channel\(s\).*in_chans=3"),
    (torch.randn(2, 3, 18, 16), r"not divisible by the patch size 4x4"),
    (torch.randn(2, 3, 16, 15), r"not divisible"),
    (torch.randn(3, 16, 16), r"\[B, C, H, W\]"),
    (torch.randn(1, 2, 3, 16, 16), r"\[B, C, H, W\]"),
    ([[1.0]], r"\[B, C, H, W\].*list"),
    (torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8), r"floating point"),
    (torch.randn(2, 3, 2, 2), r"smaller than one"),
]


@pytest.mark.parametrize("x,match", BAD_INPUTS, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_inputs_give_clear_value_errors(tiny_image_mae, x, match):
    model = tiny_image_mae()
    for call in (model, model.encode):
        with pytest.raises(ValueError, match=match):
            call(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pixels_rejected(tiny_image_mae, bad):
    x = torch.randn(2, 3, 16, 16)
    x[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny_image_mae()(x)


def test_bad_construction():
    with pytest.raises(ValueError, match="not divisible"):
        PatchTokenizer(16, 16, 3, img_size=100)
    with pytest.raises(ValueError, match="divisible by 4"):
        PatchTokenizer(18, 4, 3, img_size=None)


def test_any_resolution_and_channels(tiny_image_mae):
    model = tiny_image_mae(in_chans=1, img_size=16)
    for shape in [(16, 16), (24, 32), (8, 40)]:
        out = model(torch.randn(2, 1, *shape))
        assert out.pred.shape == (2, (shape[0] // 4) * (shape[1] // 4), 16)
        out.loss.backward()


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_reconstruction_grid(tiny_image_mae, norm_pix_loss):
    model = tiny_image_mae(norm_pix_loss=norm_pix_loss).train()
    images = torch.rand(2, 3, 16, 16)
    rows = reconstruction_grid(model, images, generator=torch.Generator().manual_seed(0))
    assert model.training, "the figure must restore the training mode"
    assert rows.shape == (6, 3, 16, 16)
    assert rows.min() >= 0 and rows.max() <= 1
    masked, recon, original = rows[0::3], rows[1::3], rows[2::3]
    torch.testing.assert_close(original, images)
    out = model.eval()(images, generator=torch.Generator().manual_seed(0))
    m = model.tokenizer.unpatchify(out.mask.mask[..., None].expand(-1, -1, 48).float(), out.grid).bool()
    assert torch.all(masked[m] == 0.5), "hidden patches are grey"
    torch.testing.assert_close(masked[~m], images[~m])
    torch.testing.assert_close(recon[~m], images[~m])  # visible patches pasted back


@pytest.mark.parametrize("b,size,upscale", [(2, 16, 1), (3, 8, 3)])
def test_save_reconstructions_writes_png(tiny_image_mae, tmp_path, b, size, upscale):
    from PIL import Image

    model = tiny_image_mae()
    path = save_reconstructions(
        model, torch.randn(b, 3, size, size), tmp_path / "sub" / "rec.png",
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), upscale=upscale,
    )
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s, pad = size * upscale, 2
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        header = 18  # the row naming the columns (masked input, reconstruction, original)
        assert im.size == (3 * (s + pad) + pad, b * (s + pad) + pad + header)  # 3 columns, one row per image
        top = im.convert("L").crop((0, 0, im.size[0], header))
        assert top.getextrema()[0] < 128  # the labels are drawn (dark text on white)
