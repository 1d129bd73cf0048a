"""Parity figures of docs/zoo.md: largest absolute differences between maezoo and each peer (fp32, CPU).

    python benchmarks/hub_parity.py

The peers are those of tests/hub (random weights from each peer's own config, no network); the tests assert
these differences stay under 1e-5.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "hub"))
from hub_peers import N_TOKENS, encoder_features, hf_features, hf_mae, hf_to_official, timm_mae_vit  # noqa: E402

import maezoo  # noqa: E402
from maezoo.core.masking import Mask  # noqa: E402
from maezoo.hub import export, load_pretrained  # noqa: E402


def _pretraining(model, hf, x):
    noise = torch.rand(x.shape[0], N_TOKENS, generator=torch.Generator().manual_seed(2))
    ref = hf(pixel_values=x, noise=noise)
    out = model(x, mask=Mask.from_bool(ref.mask.bool()))
    return float((out.pred - ref.logits).abs().max()), abs(float(out.loss) - float(ref.loss))


@torch.no_grad()
def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    d = Path(tempfile.mkdtemp())
    hf = hf_mae(norm_pix_loss=True)  # the official releases' loss
    hf.save_pretrained(d / "hf")
    m, _ = load_pretrained(d / "hf")
    m.eval()
    feat = float((encoder_features(m, x) - hf_features(hf, x)).abs().max())
    print(f"hf ViTMAEForPreTraining: features {feat:.2e}, reconstruction/loss {_pretraining(m, hf, x)}")
    torch.save({"model": hf_to_official(hf.state_dict())}, d / "mae_pretrain_full.pth")
    m, _ = load_pretrained(d / "mae_pretrain_full.pth", num_heads=4, decoder_heads=4)
    m.eval()
    feat = float((encoder_features(m, x) - hf_features(hf, x)).abs().max())
    print(f"official MAE (_full): features {feat:.2e}, reconstruction/loss {_pretraining(m, hf, x)}")
    peer = timm_mae_vit()
    from safetensors.torch import save_file

    save_file(peer.state_dict(), str(d / "timm.safetensors"))
    m = maezoo.create_model("mae_vit", pretrained=str(d / "timm.safetensors"), img_size=32, patch_size=4, embed_dim=64,
                            depth=2, num_heads=4).eval()
    print(f"timm ViT import: features {float((encoder_features(m, x) - peer.forward_features(x)).abs().max()):.2e}")
    import timm
    from transformers import ViTMAEForPreTraining

    b = maezoo.create_model("mae_vit_base_patch16").eval()
    export(b, d / "t", to="timm")
    export(b, d / "h", to="hf")
    xb = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    ours = encoder_features(b, xb)
    t = timm.create_model("local-dir:" + str(d / "t"), pretrained=True).eval()
    print(f"ViT-B export -> timm: features {float((t.forward_features(xb) - ours).abs().max()):.2e}")
    h = ViTMAEForPreTraining.from_pretrained(d / "h").eval()
    h.config.mask_ratio = 0.0
    got = h.vit(pixel_values=xb, noise=torch.arange(196, dtype=torch.float32)[None]).last_hidden_state
    print(f"ViT-B export -> transformers: features {float((got - ours).abs().max()):.2e}")
    # another resolution: maezoo's exact sin-cos vs timm's bicubic resampling of the 32x32 table to 48x48
    t48 = timm.create_model("vit_base_patch16_224", pretrained=True, img_size=48, patch_size=4, embed_dim=64, depth=2,
                            num_heads=4, num_classes=0,
                            pretrained_cfg_overlay=dict(file=str(d / "timm.safetensors"), num_classes=0)).eval()
    x48 = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    diff = float((encoder_features(m, x48) - t48.forward_features(x48)).abs().max())
    print(f"48x48 from a 32x32 checkpoint: maezoo sin-cos vs timm bicubic resampling {diff:.2e}")
    video(d)
    audio(d)
    timeseries(d)
    text(d)
    convmae(d)
    graph(d)


def video(d: Path) -> None:
    """VideoMAE rows: (features, reconstruction, loss) differences vs the HF VideoMAEForPreTraining peer."""
    from hub_peers import hf_videomae, hf_videomae_to_official
    from test_hub_video import SMALL, _clip, compare_pretraining
    from transformers import VideoMAEForPreTraining

    x = _clip()
    hf = hf_videomae()
    hf.save_pretrained(d / "vhf")
    m, _ = load_pretrained(d / "vhf")
    print(f"hf VideoMAEForPreTraining: features/reconstruction/loss {compare_pretraining(m.eval(), hf, x)}")
    hf6 = hf_videomae(layer_norm_eps=1e-6)
    args = argparse.Namespace(num_frames=4, input_size=32, normlize_target=True)
    torch.save({"model": hf_videomae_to_official(hf6.state_dict()), "args": args}, d / "videomae_checkpoint.pth")
    m, _ = load_pretrained(d / "videomae_checkpoint.pth", num_heads=4, decoder_heads=4)
    m.eval()
    print(f"official VideoMAE (eps 1e-6 throughout): {compare_pretraining(m, hf6, x)}")
    m.decoder.norm.eps = 1e-5
    print(f"official VideoMAE, decoder norm eps set to HF's 1e-5: {compare_pretraining(m, hf6, x)}")
    torch.save({"model": hf_videomae_to_official(hf6.state_dict())}, d / "no_args.pth")
    m, _ = load_pretrained(d / "no_args.pth", num_heads=4, decoder_heads=4)
    print(f"official VideoMAE without args (tables for 16 x 224^2 resampled to 4 x 32^2): "
          f"{compare_pretraining(m.eval(), hf6, x)}")
    torch.manual_seed(0)
    b = maezoo.create_model("videomae_official", **SMALL).eval()
    export(b, d / "vexp", to="hf")
    print(f"videomae_official export -> transformers: "
          f"{compare_pretraining(b, VideoMAEForPreTraining.from_pretrained(d / 'vexp').eval(), x)}")



def audio(d: Path) -> None:
    """Audio-MAE rows: encoder features vs the timm peer (import) and in timm after export."""
    import timm
    from hub_peers import timm_audiomae
    from test_hub_audio import _fbank, _timm_folder

    peer = timm_audiomae()
    m, _ = load_pretrained(_timm_folder(peer, d / "audiomae_as2m", (64, 32)))
    x = _fbank()
    ours = m.eval().encoder(m.tokenizer(x).tokens)
    print(f"timm Audio-MAE import: features {float((ours - peer.forward_features(x.unsqueeze(1))).abs().max()):.2e}")
    export(m, d / "atimm", to="timm")
    back = timm.create_model(f"local-dir:{d / 'atimm'}", pretrained=True).eval()
    print(f"Audio-MAE export -> timm: features {float((back.forward_features(x.unsqueeze(1)) - ours).abs().max()):.2e}")
    big = timm_audiomae(frames=1024, mel_bins=128, patch=16)
    from maezoo.core.pos_embed import sincos_pos_embed

    diff = float((big.pos_embed[0, 1:] - sincos_pos_embed(64, (64, 8))).abs().max())
    print(f"Audio-MAE table (64, 8) vs maezoo's sin-cos: {diff:.2e}")



def timeseries(d: Path) -> None:
    """PatchTST rows: (features, reconstruction, loss) vs the HF PatchTSTForPretraining peer, both position types."""
    from hub_peers import hf_patchtst
    from test_hub_timeseries import _series, compare

    for kind in ("random", "sincos"):
        hf = hf_patchtst(positional_encoding_type=kind)
        hf.save_pretrained(d / f"pt_{kind}")
        m, _ = load_pretrained(d / f"pt_{kind}")
        print(f"hf PatchTSTForPretraining ({kind} positions): {compare(m.eval(), hf, _series())}")
    from transformers import PatchTSTForPretraining

    export(m, d / "pt_out", to="hf", context_length=68, num_channels=3)
    back = PatchTSTForPretraining.from_pretrained(d / "pt_out").eval()
    print(f"patchtst_hf (imported) export -> transformers: {compare(m, back, _series())}")
    torch.manual_seed(0)
    n = maezoo.create_model("patchtst_hf", patch_len=8, stride=8, embed_dim=32, depth=2, num_heads=4).eval()
    export(n, d / "pt_native", to="hf", context_length=68, num_channels=3)
    back = PatchTSTForPretraining.from_pretrained(d / "pt_native").eval()
    print(f"patchtst_hf (maezoo-initialised, zero token 0) export -> transformers: {compare(n, back, _series())}")
    n.mask_token.copy_(n.tokenizer.proj.bias)
    print(f"  same, zero token set to the embedding bias: {compare(n, back, _series())}")


def text(d: Path) -> None:
    """BERT rows: (hidden states, MLM logits, loss) vs the BertForMaskedLM peer, and after export."""
    from hub_peers import bert_ids, hf_bert, hf_bert_run, write_bert_vocab
    from test_hub_text import LENGTHS, compare
    from transformers import BertForMaskedLM

    hf = hf_bert()
    hf.save_pretrained(d / "bert")
    write_bert_vocab(d / "bert")
    m, _ = load_pretrained(d / "bert")
    x = bert_ids(LENGTHS, 20)
    print(f"hf BertForMaskedLM: hidden/logits/loss {compare(m, hf, x)}")
    export(m, d / "bert_out", to="hf")
    print(f"bert (imported) export -> transformers: {compare(m, BertForMaskedLM.from_pretrained(d / 'bert_out').eval(), x)}")
    torch.manual_seed(0)
    n = maezoo.create_model("bert", vocab_size=64, max_positions=40, embed_dim=32, depth=2, num_heads=4, mlp_dim=64,
                            dropout=0.0).eval()
    n.mask_token.normal_()
    export(n, d / "bert_native", to="hf")
    back = BertForMaskedLM.from_pretrained(d / "bert_native").eval()
    mask = n.sample_mask(x, torch.Generator().manual_seed(3))
    out = n(x, mask=mask)
    _, ref = hf_bert_run(back, x, mask.mask, 4)
    logits = torch.gather(ref.logits[:, 1:], 1, mask.ids_masked[..., None].expand(-1, -1, 64))
    diff = (out.pred - logits)[mask.masked_valid].abs()
    others = diff[:, [c for c in range(64) if c != 4]].max()
    print(f"bert (maezoo, own mask token) export -> transformers: hidden {compare(n, back, x)[0]:.2e}, logits except "
          f"[MASK] {float(others):.2e}, [MASK] column {float(diff[:, 4].max()):.2e}")


def convmae(d: Path) -> None:
    """ConvMAE rows: (masked encoder, reconstruction, loss, unmasked features) vs the official-layout peer."""
    from official_convmae import official_convmae
    from test_hub_convmae import _images, compare

    peer = official_convmae()
    torch.save({"model": peer.state_dict()}, d / "convmae.pth")
    m, _ = load_pretrained(d / "convmae.pth", num_heads=4, decoder_heads=4)
    print(f"official ConvMAE: encoder/reconstruction/loss/unmasked features {compare(m, peer, _images())}")


def graph(d: Path) -> None:
    """GraphMAE rows: (embeddings, reconstruction of the hidden nodes, loss) vs the pyg-branch peer."""
    from official_graphmae import official_graphmae
    from test_hub_graph import _graph, compare

    for kw in ({}, {"norm": "batchnorm", "num_layers": 3}, {"norm": "layernorm", "act": "elu"},
               {"encoder_type": "gin", "decoder_type": "gin", "norm": "batchnorm"}, {"decoder_type": "mlp"}):
        peer = official_graphmae(**kw)
        torch.save(peer.state_dict(), d / "graphmae.pt")
        m, _ = load_pretrained(d / "graphmae.pt", **({"activation": kw["act"]} if "act" in kw else {}))
        print(f"official GraphMAE (pyg) {kw or 'GAT, defaults'}: {compare(m, peer, _graph())}")


if __name__ == "__main__":
    main()
