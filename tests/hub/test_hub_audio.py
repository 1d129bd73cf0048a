"""Parity of the Audio-MAE mapping (timm-format ``vit_base_patch16_1024_128.audiomae_as2m``) against a timm peer
built from its own arguments with random weights and Audio-MAE's sin-cos table, no network (1e-5, fp32)."""

from __future__ import annotations

import json

import pytest
import torch
from hub_peers import timm_audiomae
from safetensors.torch import save_file

import maezoo
from maezoo.hub import HubError, export, import_checkpoint, load_pretrained

timm = pytest.importorskip("timm")
TOL = 1e-5


def _fbank(frames: int = 64, mel_bins: int = 32, b: int = 2) -> torch.Tensor:
    return torch.randn(b, frames, mel_bins, generator=torch.Generator().manual_seed(1))


def _features(model, x):
    return model.encoder(model.tokenizer(x).tokens)


def _timm_folder(peer, path, img_size):
    path.mkdir()
    save_file(peer.state_dict(), str(path / "model.safetensors"))
    cfg = {"architecture": "vit_base_patch16_224", "num_classes": 0,
           "model_args": {"img_size": list(img_size), "in_chans": 1, "num_heads": 4},
           "pretrained_cfg": {"tag": "audiomae_as2m", "mean": [-4.2677393], "std": [4.5689974]}}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_timm_audiomae_folder_parity(tmp_path):
    peer = timm_audiomae()
    folder = _timm_folder(peer, tmp_path / "audiomae_as2m", (64, 32))
    imp = import_checkpoint(folder)
    assert imp.family == "timm_audiomae" and any("no decoder" in n for n in imp.notes)
    model, spec = load_pretrained(folder)
    assert spec["name"] == "audiomae" and spec["kwargs"]["target_frames"] == 64 and spec["kwargs"]["mel_bins"] == 32
    assert float(model.tokenizer.norm_mean) == pytest.approx(-4.2677393)
    x = _fbank()
    with torch.no_grad():
        assert (_features(model.eval(), x) - peer.forward_features(x.unsqueeze(1))).abs().max() < TOL
        model(x)  # pre-trains: the shifted-window decoder (initialised) runs on the (8, 4) grid


def test_bare_release_file_uses_128_mel_bins(tmp_path):
    """Without config.json the grid comes from the position table and Audio-MAE's 128 mel bins."""
    peer = timm_audiomae(frames=64, mel_bins=128, patch=16)  # a (4, 8) grid: 32 rows, not square
    torch.save(peer.state_dict(), tmp_path / "pytorch_model.bin")
    model = maezoo.create_model("audiomae", pretrained=str(tmp_path / "pytorch_model.bin"), target_frames=64,
                                mel_bins=128, patch_size=16, embed_dim=64, depth=2, num_heads=4, decoder_dim=32,
                                decoder_depth=2, decoder_heads=4).eval()
    x = _fbank(64, 128)
    with torch.no_grad():
        assert (_features(model, x) - peer.forward_features(x.unsqueeze(1))).abs().max() < TOL


def test_audiomae_export_to_timm_and_round_trip(tmp_path):
    peer = timm_audiomae()
    first, spec = load_pretrained(_timm_folder(peer, tmp_path / "src", (64, 32)))
    export(first, tmp_path / "timm", to="timm")
    back = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    x = _fbank()
    with torch.no_grad():
        assert (back.forward_features(x.unsqueeze(1)) - _features(first.eval(), x)).abs().max() < TOL
    for to in ("timm", "maezoo"):
        export(first, tmp_path / f"rt_{to}", to=to, spec=spec)
        again = maezoo.create_model("audiomae", pretrained=str(tmp_path / f"rt_{to}"), **spec["kwargs"])
        ref = first.state_dict()
        for k, v in again.state_dict().items():
            if to == "timm" and k.startswith("decoder."):
                continue  # timm holds the encoder only
            assert torch.equal(v, ref[k]), (to, k)
    with pytest.raises(HubError, match="Hugging Face has no Audio-MAE"):
        export(first, tmp_path / "hf", to="hf")


def test_learned_positions_are_refused(tmp_path):
    peer = timm_audiomae()
    with torch.no_grad():
        peer.pos_embed.normal_()
    folder = _timm_folder(peer, tmp_path / "ft", (64, 32))
    with pytest.raises(HubError, match=r"ft.*pos_embed is not the fixed 2-D sin-cos table of the \(8, 4\) grid"):
        import_checkpoint(folder)


def test_official_full_pretraining_file_loads_its_encoder(tmp_path):
    """facebookresearch/AudioMAE's pre-training checkpoint: the encoder maps exactly; the Swin V2 decoder (scaled
    cosine attention, tau, continuous position-bias MLP) has no maezoo counterpart and is left out, with a note."""
    peer = timm_audiomae(frames=64, mel_bins=128, patch=16)  # a (4, 8) grid of Audio-MAE's 128 mel bins
    d = 32
    decoder = {"decoder_embed.weight": torch.randn(d, 64), "decoder_embed.bias": torch.zeros(d),
               "mask_token": torch.zeros(1, 1, d), "decoder_pos_embed": torch.zeros(1, 33, d),
               "decoder_blocks.0.attn.qkv.weight": torch.randn(3 * d, d), "decoder_blocks.0.attn.tau": torch.ones(4),
               "decoder_blocks.0.attn.meta_mlp.fc1.weight": torch.randn(384, 2),
               "decoder_norm.weight": torch.ones(d), "decoder_pred.weight": torch.randn(64, d)}
    torch.save({"model": {**peer.state_dict(), **decoder}}, tmp_path / "pretrained.pth")
    imp = import_checkpoint(tmp_path / "pretrained.pth", num_heads=4)
    assert imp.family == "timm_audiomae" and any("not mapped (Swin V2" in n for n in imp.notes)
    model, _ = load_pretrained(tmp_path / "pretrained.pth", num_heads=4)
    x = _fbank(64, 128)
    with torch.no_grad():
        assert (_features(model.eval(), x) - peer.forward_features(x.unsqueeze(1))).abs().max() < TOL
