"""Parity of the official ConvMAE layout (Alpha-VL/ConvMAE ``models_convmae``) against a test-only peer with the
official module structure and random weights: encoder output under the same mask, reconstruction and loss, and the
unmasked features of the fine-tuning ``ConvViT`` (1e-5, fp32); the maezoo layout round trip is bit-identical."""

from __future__ import annotations

import argparse

import pytest
import torch
from official_convmae import official_convmae

import maezoo
from maezoo.core.masking import Mask
from maezoo.hub import HubError, export, import_checkpoint, load_pretrained

TOL = 1e-5


def _images(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def compare(model, peer, x, seed: int = 2) -> tuple[float, float, float, float]:
    """(masked-encoder output, reconstruction, loss, unmasked features) differences under the peer's mask."""
    noise = torch.rand(x.shape[0], peer.grid ** 2, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        loss, pred, mask, latent = peer(x, noise)
        out = model.eval()(x, mask=Mask.from_bool(mask.bool()))
        keep = torch.argsort(noise, dim=1)[:, : latent.shape[1]]  # the peer's visible tokens, in noise order
        ours = torch.gather(out.latent, 1, torch.argsort(torch.argsort(keep, dim=1), dim=1)[..., None]
                            .expand(-1, -1, latent.shape[-1]))
        feats = model.encode(x, pool="none")
        ref = peer.forward_features(x)
    return (float((ours - latent).abs().max()), float((out.pred - pred).abs().max()), abs(float(out.loss) - float(loss)),
            float((feats - ref).abs().max()))


def test_official_convmae_parity_and_round_trip(tmp_path):
    peer = official_convmae()
    torch.save({"model": peer.state_dict(), "args": argparse.Namespace(norm_pix_loss=True, mask_ratio=0.75)},
               tmp_path / "convmae_checkpoint-1599.pth")
    imp = import_checkpoint(tmp_path / "convmae_checkpoint-1599.pth", num_heads=4, decoder_heads=4)
    assert imp.family == "convmae_official"
    model, spec = load_pretrained(tmp_path / "convmae_checkpoint-1599.pth", num_heads=4, decoder_heads=4)
    kw = spec["kwargs"]
    assert spec["name"] == "convmae" and kw["img_size"] == 32 and kw["patch_sizes"] == [2, 2, 2]
    assert kw["embed_dims"] == [16, 24, 32] and kw["depths"] == [1, 1, 2] and kw["norm_pix_loss"] is True
    assert max(compare(model, peer, _images())) < TOL
    export(model, tmp_path / "mz", to="maezoo", spec=spec)
    again = maezoo.create_model("convmae", pretrained=str(tmp_path / "mz"), **kw)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


def test_encoder_only_file_and_raw_pixels(tmp_path):
    peer = official_convmae(norm_pix_loss=False)
    enc = {k: v for k, v in peer.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}
    torch.save({"model": enc}, tmp_path / "enc.pth")
    model = maezoo.create_model("convmae", pretrained=str(tmp_path / "enc.pth"), img_size=32, patch_sizes=(2, 2, 2),
                                embed_dims=(16, 24, 32), depths=(1, 1, 2), num_heads=4, decoder_dim=16, decoder_depth=1,
                                decoder_heads=4).eval()
    x = _images()
    with torch.no_grad():
        assert float((model.encode(x, pool="none") - peer.forward_features(x)).abs().max()) < TOL


def test_fine_tuned_convvit_is_refused(tmp_path):
    peer = official_convmae()
    sd = dict(peer.state_dict())
    sd["pos_embed"] = torch.randn_like(sd["pos_embed"]) * 0.02  # ConvViT's learned positions
    torch.save({"model": sd}, tmp_path / "convvit_ft.pth")
    with pytest.raises(HubError, match=r"convvit_ft\.pth: pos_embed is not MAE's fixed 2-D sin-cos table of the 4x4 "
                                       r"grid.*fine-tuned ConvViT"):
        import_checkpoint(tmp_path / "convvit_ft.pth")


def test_wrong_size_names_the_convmae_that_fits(tmp_path):
    torch.save({"model": official_convmae().state_dict()}, tmp_path / "small.pth")
    with pytest.raises(HubError, match=r"small\.pth: does not fit convmae_base .*create convmae with those kwargs"):
        maezoo.create_model("convmae_base", pretrained=str(tmp_path / "small.pth"))
