"""Parity of the VideoMAE mappings (Hugging Face ``VideoMAEForPreTraining``, official VideoMAE / V2) against the
Hugging Face peer built from its own config with random weights, no network.

maezoo loads the converted weights into ``videomae_official`` and must give the same encoder features, loss and
reconstruction on the same clip with the same ``bool_masked_pos`` (1e-5, fp32).
"""

from __future__ import annotations

import argparse

import pytest
import torch
from hub_peers import VIDEO_TOKENS, hf_video_features, hf_videomae, hf_videomae_to_official

import maezoo
from maezoo.core.masking import Mask
from maezoo.hub import HubError, export, import_checkpoint, load_pretrained

pytest.importorskip("transformers")
TOL = 1e-5
SMALL = dict(img_size=32, num_frames=4, patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_dim=32,
             decoder_depth=2, decoder_heads=4)


def _clip(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))


def _features(model, x):
    return model.encoder(model.tokenizer(x).tokens)


def compare_pretraining(model, hf, x) -> tuple[float, float, float]:
    """Largest differences (features, reconstruction, loss) of maezoo vs the HF peer under one tube mask."""
    mask = model.sample_mask(x, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(pixel_values=x.transpose(1, 2), bool_masked_pos=mask.mask)
        out = model(x, mask=Mask.from_bool(mask.mask))
        feat = float((_features(model, x) - hf_video_features(hf, x)).abs().max())
    pred = out.pred[mask.mask].reshape(ref.logits.shape)  # HF predicts the hidden tokens in grid order
    return feat, float((pred - ref.logits).abs().max()), abs(float(out.loss) - float(ref.loss))


@pytest.mark.parametrize("norm_pix", [True, False])
def test_hf_videomae_for_pretraining_parity(tmp_path, norm_pix):
    hf = hf_videomae(norm_pix_loss=norm_pix)
    hf.save_pretrained(tmp_path / "hf")
    imp = import_checkpoint(tmp_path / "hf")
    assert imp.family == "hf_videomae" and imp.spec["name"] == "videomae_official"
    assert imp.layer_norm_eps == 1e-12 and imp.norm_eps == {"decoder.norm": 1e-5}
    model, spec = load_pretrained(tmp_path / "hf")
    assert spec["kwargs"]["norm_target"] is norm_pix and spec["kwargs"]["num_heads"] == 4
    assert max(compare_pretraining(model.eval(), hf, _clip())) < TOL


def test_hf_videomae_model_encoder_only(tmp_path):
    from transformers import VideoMAEModel

    hf = hf_videomae()
    enc = VideoMAEModel(hf.config)
    enc.load_state_dict({k[len("videomae."):]: v for k, v in hf.state_dict().items() if k.startswith("videomae.")})
    enc.save_pretrained(tmp_path / "enc")
    model = maezoo.create_model("videomae_official", pretrained=str(tmp_path / "enc"), **SMALL).eval()
    x = _clip()
    with torch.no_grad():
        assert (_features(model, x) - hf_video_features(enc, x)).abs().max() < TOL


@pytest.mark.parametrize("with_decoder", [True, False])
def test_official_videomae_parity(tmp_path, with_decoder):
    """A MCG-NJU/VideoMAE file ({'model': ..., 'args': Namespace}) written from the HF peer's weights."""
    hf = hf_videomae(layer_norm_eps=1e-6)
    sd = hf_videomae_to_official(hf.state_dict())
    if not with_decoder:
        sd = {k: v for k, v in sd.items() if k.startswith("encoder.")}
    args = argparse.Namespace(normlize_target=True, mask_ratio=0.9, num_frames=4, input_size=32, decoder_depth=2)
    torch.save({"model": sd, "epoch": 799, "args": args}, tmp_path / "checkpoint.pth")
    imp = import_checkpoint(tmp_path / "checkpoint.pth")
    assert imp.family == "videomae_official" and imp.spec["kwargs"]["mask_ratio"] == 0.9
    heads = {"num_heads": 4, "decoder_heads": 4} if with_decoder else {"num_heads": 4}
    model, _ = load_pretrained(tmp_path / "checkpoint.pth", **heads)
    model.eval()
    x = _clip()
    if with_decoder:
        # HF's decoder norm has eps 1e-5 where the official code (and maezoo) use 1e-6
        model.decoder.norm.eps = 1e-5
        assert max(compare_pretraining(model, hf, x)) < TOL
    else:
        with torch.no_grad():
            assert (_features(model, x) - hf_video_features(hf, x)).abs().max() < TOL


def test_videomae_v2_args_set_running_cell_decoder_masking(tmp_path):
    sd = hf_videomae_to_official(hf_videomae().state_dict())
    args = argparse.Namespace(decoder_mask_type="run_cell", decoder_mask_ratio=0.5, mask_ratio=0.9)
    torch.save({"model": sd, "args": args}, tmp_path / "vit_s_k710_pt.pth")
    model, spec = load_pretrained(tmp_path / "vit_s_k710_pt.pth", num_heads=4, decoder_heads=4)
    assert spec["kwargs"]["decoder_masking"] == "running_cell" and spec["kwargs"]["decoder_mask_ratio"] == 0.5
    out = model(_clip())  # the official-table decoder reconstructs only the running-cell targets
    assert out.pred.shape[1] == out.mask.ids_target.shape[1] < VIDEO_TOKENS


def test_video_round_trips_are_bit_identical_and_export_loads_in_transformers(tmp_path):
    from transformers import VideoMAEForPreTraining

    hf = hf_videomae()
    hf.save_pretrained(tmp_path / "src")
    first, spec = load_pretrained(tmp_path / "src")
    for to in ("hf", "maezoo"):
        export(first, tmp_path / to, to=to, spec=spec)
        again = maezoo.create_model("videomae_official", pretrained=str(tmp_path / to), **spec["kwargs"])
        ref = first.state_dict()
        for k, v in again.state_dict().items():
            assert torch.equal(v, ref[k]), (to, k)
    back = VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()  # the config's eps 1e-12 written back
    assert max(compare_pretraining(first.eval(), back, _clip())) < TOL


def test_exported_videomae_reproduces_maezoo_in_transformers(tmp_path):
    from transformers import VideoMAEForPreTraining

    model = maezoo.create_model("videomae_official", **SMALL).eval()
    export(model, tmp_path / "hf", to="hf")
    hf = VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    feat, recon, loss = compare_pretraining(model, hf, _clip())
    assert feat < TOL
    # the only difference left is HF's decoder norm (eps 1e-5, not maezoo's 1e-6): with it set alike, exact
    model.decoder.norm.eps = 1e-5
    assert max(compare_pretraining(model, hf, _clip())) < TOL


def test_video_bad_input(tmp_path):
    model = maezoo.create_model("videomae", **SMALL)
    with pytest.raises(HubError, match="3-D sin-cos positions.*build videomae_official"):
        export(model, tmp_path / "x", to="hf")
    with pytest.raises(HubError, match="timm has no VideoMAE"):
        export(maezoo.create_model("videomae_official", **SMALL), tmp_path / "y", to="timm")
    sd = hf_videomae_to_official(hf_videomae().state_dict())
    fine = {k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")}
    fine.update({"fc_norm.weight": torch.ones(64), "fc_norm.bias": torch.zeros(64), "head.weight": torch.zeros(400, 64)})
    torch.save({"module": fine}, tmp_path / "finetuned.pth")
    with pytest.raises(HubError, match=r"finetuned\.pth: keys outside the VideoMAE pre-training layout: "
                                       r"encoder\.fc_norm\.bias.*classifier \(a fine-tuned checkpoint\)"):
        import_checkpoint(tmp_path / "finetuned.pth")
    sd["encoder.blocks.0.gamma_1"] = torch.ones(64)
    torch.save({"model": sd}, tmp_path / "layerscale.pth")
    with pytest.raises(HubError, match=r"layerscale\.pth: keys outside.*gamma_1.*Layer scale"):
        import_checkpoint(tmp_path / "layerscale.pth")
