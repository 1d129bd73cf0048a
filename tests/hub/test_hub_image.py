"""Parity of the image mappings (official MAE, timm, Hugging Face ViTMAE) against their peers, no network.

Each peer is built from its own config with random weights; maezoo loads the converted weights and must give
the same encoder features, loss and reconstruction on the same input and the same masking noise (1e-5, fp32).
"""

from __future__ import annotations

import argparse

import pytest
import torch
from hub_peers import N_TOKENS, encoder_features, hf_features, hf_mae, hf_to_official, timm_mae_vit
from safetensors.torch import save_file

import maezoo
from maezoo.core.masking import Mask
from maezoo.hub import export, import_checkpoint, load_pretrained

pytest.importorskip("transformers")
TOL = 1e-5


def _x(b: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(1))


def _compare_pretraining(model, hf, x):
    """Loss, reconstruction and masked latent of maezoo vs the HF peer under HF's masking noise."""
    noise = torch.rand(x.shape[0], N_TOKENS, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(pixel_values=x, noise=noise)
        out = model(x, mask=Mask.from_bool(ref.mask.bool()))
    assert (out.pred - ref.logits).abs().max() < TOL
    assert abs(float(out.loss) - float(ref.loss)) < TOL
    # HF keeps the visible tokens in noise order, maezoo in grid order
    keep = noise.argsort(dim=1)[:, : out.mask.num_visible]
    order = keep.argsort(dim=1)
    with torch.no_grad():
        lat = hf.vit(pixel_values=x, noise=noise).last_hidden_state
    hf_lat = torch.cat([lat[:, :1], torch.gather(lat[:, 1:], 1, order.unsqueeze(-1).expand(-1, -1, lat.shape[-1]))], 1)
    assert (out.latent - hf_lat).abs().max() < TOL
    return float((out.pred - ref.logits).abs().max())


@pytest.mark.parametrize("norm_pix", [True, False])
def test_hf_vitmae_for_pretraining_parity(tmp_path, norm_pix):
    hf = hf_mae(norm_pix_loss=norm_pix)
    hf.save_pretrained(tmp_path / "hf")
    model, spec = load_pretrained(tmp_path / "hf")
    assert spec["kwargs"]["norm_pix_loss"] is norm_pix and spec["kwargs"]["num_heads"] == 4
    model.eval()
    x = _x()
    with torch.no_grad():
        assert (encoder_features(model, x) - hf_features(hf, x)).abs().max() < TOL
    _compare_pretraining(model, hf, x)


def test_hf_layer_norm_eps_of_released_configs_is_kept(tmp_path):
    """facebook/vit-mae-* configs say layer_norm_eps 1e-12 (MAE trained with 1e-6): the import keeps 1e-12."""
    hf = hf_mae(layer_norm_eps=1e-12)
    hf.save_pretrained(tmp_path / "hf")
    imp = import_checkpoint(tmp_path / "hf")
    assert imp.layer_norm_eps == 1e-12 and any("1e-12" in n for n in imp.notes)
    model, _ = load_pretrained(tmp_path / "hf")
    x = _x()
    with torch.no_grad():
        assert (encoder_features(model.eval(), x) - hf_features(hf, x)).abs().max() < TOL


def test_hf_vitmae_model_encoder_only(tmp_path):
    from transformers import ViTMAEModel

    hf = hf_mae()
    enc = ViTMAEModel(hf.config)
    enc.load_state_dict({k[4:]: v for k, v in hf.state_dict().items() if k.startswith("vit.")})
    enc.save_pretrained(tmp_path / "enc")
    model = maezoo.create_model("mae_vit", pretrained=str(tmp_path / "enc"), img_size=32, patch_size=4, embed_dim=64,
                                depth=2, num_heads=4).eval()
    x = _x()
    with torch.no_grad():
        assert (encoder_features(model, x) - hf_features(hf, x)).abs().max() < TOL


@pytest.mark.parametrize("with_decoder", [True, False])
def test_official_mae_parity(tmp_path, with_decoder):
    """A facebookresearch/mae file ({'model': ..., 'args': Namespace}) written from the HF peer's weights."""
    hf = hf_mae(norm_pix_loss=True)
    sd = hf_to_official(hf.state_dict())
    if not with_decoder:
        sd = {k: v for k, v in sd.items() if not (k.startswith("decoder") or k == "mask_token")}
    name = "mae_pretrain_vit_tiny_full.pth" if with_decoder else "mae_pretrain_vit_tiny.pth"
    args = argparse.Namespace(norm_pix_loss=True, mask_ratio=0.75, model="mae_vit_tiny")
    torch.save({"model": sd, "epoch": 799, "args": args}, tmp_path / name)
    imp = import_checkpoint(tmp_path / name)
    assert imp.family == "mae_official"
    # head counts are not in the weights: official files are ViT-B/L/H (standard counts), this small peer is not
    heads = {"num_heads": 4, "decoder_heads": 4} if with_decoder else {"num_heads": 4}
    model, _ = load_pretrained(tmp_path / name, **heads)
    model.eval()
    x = _x()
    with torch.no_grad():
        assert (encoder_features(model, x) - hf_features(hf, x)).abs().max() < TOL
    if with_decoder:
        _compare_pretraining(model, hf, x)


def test_mae_visualize_files_use_raw_pixel_targets(tmp_path):
    sd = hf_to_official(hf_mae().state_dict())
    torch.save({"model": sd}, tmp_path / "mae_visualize_vit_tiny.pth")
    assert import_checkpoint(tmp_path / "mae_visualize_vit_tiny.pth").spec["kwargs"]["norm_pix_loss"] is False


def test_timm_parity_and_export_at_another_size(tmp_path):
    timm = pytest.importorskip("timm")
    peer = timm_mae_vit()
    save_file(peer.state_dict(), str(tmp_path / "vit.safetensors"))
    imp = import_checkpoint(tmp_path / "vit.safetensors")
    assert imp.family == "timm_vit"
    model = maezoo.create_model("mae_vit", pretrained=str(tmp_path / "vit.safetensors"), img_size=32, patch_size=4,
                                embed_dim=64, depth=2, num_heads=4).eval()
    x = _x()
    with torch.no_grad():
        assert (encoder_features(model, x) - peer.forward_features(x)).abs().max() < TOL
    # another size: maezoo evaluates the sin-cos table on the new grid; the export writes that table for timm
    export(model, tmp_path / "timm48", to="timm", img_size=48)
    big = timm.create_model(f"local-dir:{tmp_path / 'timm48'}", pretrained=True).eval()
    x48 = _x(size=48)
    with torch.no_grad():
        assert (encoder_features(model, x48) - big.forward_features(x48)).abs().max() < TOL


def test_round_trips_are_bit_identical(tmp_path):
    hf = hf_mae()
    sd = hf_to_official(hf.state_dict())
    torch.save({"model": sd}, tmp_path / "official.pth")
    first, spec = load_pretrained(tmp_path / "official.pth", num_heads=4, decoder_heads=4)
    for to in ("hf", "timm", "maezoo"):
        export(first, tmp_path / to, to=to, spec=spec)
        again = maezoo.create_model("mae_vit", pretrained=str(tmp_path / to), **spec["kwargs"])
        ref = first.state_dict()
        for k, v in again.state_dict().items():
            if to == "timm" and k.startswith("decoder."):
                continue  # timm holds the encoder only
            assert torch.equal(v, ref[k]), (to, k)


def test_exported_vit_base_loads_in_timm_and_transformers(tmp_path):
    """A maezoo ViT-B/16 exported to timm and to Hugging Face reproduces maezoo's features there."""
    timm = pytest.importorskip("timm")
    from transformers import ViTMAEForPreTraining

    model = maezoo.create_model("mae_vit_base_patch16").eval()
    export(model, tmp_path / "timm", to="timm")
    export(model, tmp_path / "hf", to="hf")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    t = timm.create_model("vit_base_patch16_224.mae", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "timm" / "model.safetensors"))).eval()
    hf = ViTMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        ours = encoder_features(model, x)
        assert (t.forward_features(x) - ours).abs().max() < TOL
        hf.config.mask_ratio = 0.0
        got = hf.vit(pixel_values=x, noise=torch.arange(196, dtype=torch.float32)[None]).last_hidden_state
        assert (got - ours).abs().max() < TOL
