"""Parity of the Hugging Face ``PatchTSTForPretraining`` mapping (layernorm, pre-norm configuration) against the
peer built from its own config with random weights, same series and same patch mask (1e-5, fp32)."""

from __future__ import annotations

import json

import pytest
import torch
from hub_peers import hf_patchtst, hf_patchtst_features, hf_patchtst_run

import maezoo
from maezoo.core.masking import Mask
from maezoo.hub import HubError, export, import_checkpoint, load_pretrained

pytest.importorskip("transformers")
TOL = 1e-5


def _series(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 68, generator=torch.Generator().manual_seed(1)).cumsum(-1)


def compare(model, hf, x) -> tuple[float, float, float]:
    """(features, reconstruction, loss) differences under the mask HF drew."""
    with torch.no_grad():
        feat = float((model.encoder(model.tokenizer(x).tokens) - hf_patchtst_features(hf, x)).abs().max())
        ref, mask = hf_patchtst_run(hf, x)
        out = model(x, mask=Mask.from_bool(mask.flatten(0, 1)))
    recon = float((out.pred - ref.prediction_output.flatten(0, 1)).abs().max())
    return feat, recon, abs(float(out.loss) - float(ref.loss))


def test_hf_patchtst_for_pretraining_parity(tmp_path):
    hf = hf_patchtst()
    hf.save_pretrained(tmp_path / "hf")
    imp = import_checkpoint(tmp_path / "hf")
    assert imp.family == "hf_patchtst" and imp.layer_norm_eps == 1e-5
    model, spec = load_pretrained(tmp_path / "hf")
    assert spec["name"] == "patchtst_hf" and spec["kwargs"]["stride"] == 8 and spec["kwargs"]["mask_ratio"] == 0.4
    assert max(compare(model.eval(), hf, _series())) < TOL
    export(model, tmp_path / "mz", to="maezoo", spec=spec)  # maezoo layout round trip
    again = maezoo.create_model("patchtst_hf", pretrained=str(tmp_path / "mz"), **spec["kwargs"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


def test_sincos_positions_load_as_values(tmp_path):
    hf = hf_patchtst(positional_encoding_type="sincos")
    hf.save_pretrained(tmp_path / "hf")
    model, _ = load_pretrained(tmp_path / "hf")
    assert max(compare(model.eval(), hf, _series())) < TOL


@pytest.mark.parametrize(("setting", "message"), [({"norm_type": "batchnorm"}, "norm_type='batchnorm'"),
                                                  ({"pre_norm": False}, "pre_norm=False"),
                                                  ({"share_embedding": False}, "share_embedding=False")])
def test_configurations_without_a_maezoo_counterpart_are_refused(tmp_path, setting, message):
    hf_patchtst(**setting).save_pretrained(tmp_path / "hf")
    with pytest.raises(HubError, match=rf"hf/model\.safetensors: a PatchTST with {message}.*corresponds to norm_type='layernorm'"):
        import_checkpoint(tmp_path / "hf")


def test_export_to_patchtst_for_pretraining_and_round_trip(tmp_path):
    from transformers import PatchTSTForPretraining

    hf = hf_patchtst()
    hf.save_pretrained(tmp_path / "hf")
    model, spec = load_pretrained(tmp_path / "hf")
    export(model, tmp_path / "short", to="hf")  # without it: the shortest window the imported position rows cover
    assert json.loads((tmp_path / "short" / "config.json").read_text())["context_length"] == 64
    export(model, tmp_path / "out", to="hf", context_length=68, num_channels=3)  # HF takes exactly these
    back = PatchTSTForPretraining.from_pretrained(tmp_path / "out").eval()
    assert back.config.context_length == 68 and back.config.random_mask_ratio == 0.4
    assert max(compare(model.eval(), back, _series())) < TOL
    again, _ = load_pretrained(tmp_path / "out")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


def test_maezoo_patchtst_hf_exports_with_the_context_length(tmp_path):
    """A maezoo-trained patchtst_hf: features and every unhidden patch agree; hidden patches agree once the fixed zero
    token equals the embedding's bias (PatchTST's zero fill), which the export cannot change."""
    from transformers import PatchTSTForPretraining

    torch.manual_seed(0)
    model = maezoo.create_model("patchtst_hf", patch_len=8, stride=8, embed_dim=32, depth=2, num_heads=4).eval()
    with pytest.raises(HubError, match="needs the context length"):
        export(model, tmp_path / "x", to="hf")
    export(model, tmp_path / "out", to="hf", context_length=68, num_channels=3)
    back = PatchTSTForPretraining.from_pretrained(tmp_path / "out").eval()
    feat, recon, _ = compare(model, back, _series())
    assert feat < TOL and recon > TOL
    with torch.no_grad():
        model.mask_token.copy_(model.tokenizer.proj.bias)
    assert max(compare(model, back, _series())) < TOL


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("patchtst", {}, "the encoder ends with a LayerNorm"), ("patchtst_hf", {"pos_embed": "sincos"}, "sin-cos positions"),
    ("patchtst_hf", {"remainder": "pad"}, "remainder='pad'")])
def test_settings_without_a_patchtst_counterpart_are_not_exported(tmp_path, name, kwargs, message):
    model = maezoo.create_model(name, patch_len=8, embed_dim=32, depth=1, num_heads=4, **kwargs)
    with pytest.raises(HubError, match=f"export to PatchTSTForPretraining: {message}"):
        export(model, tmp_path / "x", to="hf", context_length=64)


def test_no_scaler_loads_without_revin(tmp_path):
    hf = hf_patchtst(scaling=None)
    hf.save_pretrained(tmp_path / "hf")
    model, spec = load_pretrained(tmp_path / "hf")
    assert spec["kwargs"]["revin"] is False and max(compare(model.eval(), hf, _series())) < TOL
    export(model, tmp_path / "out", to="hf", context_length=68, num_channels=3)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["scaling"] is None
