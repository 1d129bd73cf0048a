"""Export a maezoo image MAE to the maezoo, timm and Hugging Face layouts, each with the config it needs.

``maezoo``: ``model.safetensors`` + ``model.json`` (what ``maezoo run ... checkpoint=`` and
``maezoo.engine.checkpoint.load_model`` read); ``timm``: a ``local-dir`` folder (see :mod:`maezoo.hub.timm_vit`);
``hf``: a ``ViTMAEForPreTraining`` folder (see :mod:`maezoo.hub.hf_vitmae`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from maezoo.hub import hf_bert, hf_patchtst, hf_videomae, hf_vitmae, timm_audiomae, timm_vit, video
from maezoo.hub.io import HubError
from maezoo.hub.vit import maezoo_to_pivot

Target = Literal["maezoo", "timm", "hf"]
TARGETS = ("maezoo", "timm", "hf")


def arch_of(model: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """The ViT MAE hyper-parameters of a built maezoo model, read from its modules."""
    tok, enc, dec = (getattr(model, n, None) for n in ("tokenizer", "encoder", "decoder"))
    proj = getattr(tok, "proj", None)
    blocks = getattr(enc, "blocks", None)
    if not isinstance(proj, nn.Conv2d) or blocks is None or getattr(enc, "cls_token", None) is None \
            or getattr(model, "mask_mode", None) != "drop":
        raise HubError(f"export to timm/hf supports the image MAE ViTs (mae_vit*: patch tokenizer, ViT encoder with a "
                       f"class token, drop mode); got {type(model).__name__} with {type(tok).__name__}/"
                       f"{type(enc).__name__}. Use --to maezoo for other models")
    ph, pw = proj.kernel_size
    if ph != pw:
        raise HubError(f"export to timm/hf needs square patches, the model has {ph}x{pw}")
    size = img_size or (tok.img_size[0] if getattr(tok, "img_size", None) else 224)
    if size % ph:
        raise HubError(f"img_size {size} is not a multiple of the patch size {ph}; choose a multiple")
    d = proj.out_channels
    arch: dict[str, Any] = {"img_size": int(size), "patch_size": int(ph), "in_chans": proj.in_channels, "embed_dim": d,
                            "depth": len(blocks), "num_heads": blocks[0].attn.num_heads,
                            "mlp_ratio": blocks[0].mlp.fc1.out_features / d}
    if dec is not None and hasattr(dec, "embed") and hasattr(dec, "pred"):
        arch.update(decoder_dim=dec.embed.out_features, decoder_depth=len(dec.blocks),
                    decoder_heads=dec.blocks[0].attn.num_heads)
    ratio = getattr(getattr(model, "masking", None), "ratio", None)
    if ratio is not None:
        arch["mask_ratio"] = float(ratio)
    arch["norm_pix_loss"] = getattr(model, "target_name", "norm") == "norm"
    return arch


def video_arch_of(model: nn.Module) -> dict[str, Any]:
    """The VideoMAE hyper-parameters of a built ``videomae_official`` model (official 1-D position tables)."""
    tok, enc, dec = model.tokenizer, model.encoder, getattr(model, "decoder", None)
    if getattr(tok, "pos_embed_kind", None) != "1d" or (dec is not None and getattr(dec, "pos_embed_kind", None) != "1d"):
        raise HubError("this VideoMAE uses maezoo's 3-D sin-cos positions, which the official and Hugging Face VideoMAE "
                       "do not have; build videomae_official (the official 1-D tables) to export, or use to='maezoo'")
    if getattr(enc, "cls_token", None) is not None:
        raise HubError("VideoMAE has no class token; this model was built with cls_token=True")
    t, p = tok.tubelet_size, tok.patch_size
    gt, gh, gw = tok.pos_grid
    if gh != gw:
        raise HubError(f"Hugging Face VideoMAE needs square frames; the model's position grid is {tok.pos_grid}")
    d = tok.embed_dim
    arch: dict[str, Any] = {"img_size": gh * p, "num_frames": gt * t, "patch_size": p, "tubelet_size": t,
                            "in_chans": tok.in_chans, "embed_dim": d, "depth": len(enc.blocks),
                            "num_heads": enc.blocks[0].attn.num_heads, "mlp_ratio": enc.blocks[0].mlp.fc1.out_features / d,
                            "norm_pix_loss": getattr(model, "target_name", "norm") == "norm",
                            "layer_norm_eps": float(enc.norm.eps)}
    if dec is not None:
        arch.update(decoder_dim=dec.embed.out_features, decoder_depth=len(dec.blocks),
                    decoder_heads=dec.blocks[0].attn.num_heads)
    return arch


def export(model: nn.Module, dst: str | Path, to: Target = "maezoo", spec: dict[str, Any] | None = None,
           img_size: int | None = None, context_length: int | None = None, num_channels: int | None = None) -> Path:
    """Write ``model`` to ``dst`` (a folder) in the ``to`` layout; returns the folder.

    ``img_size``: the image size the timm/hf position table is written for; ``context_length``/``num_channels``:
    a PatchTST's look-back window and channel count in its Hugging Face config.
    """
    dst = Path(dst)
    if to not in TARGETS:
        raise HubError(f"unknown export layout {to!r}; choose one of {', '.join(TARGETS)}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tok = getattr(model, "tokenizer", None)
    if to == "maezoo":
        if spec is None:
            raise HubError("export to maezoo needs the model spec ({'name': ..., 'kwargs': {...}}) for model.json")
        return write_maezoo(state, spec, dst, getattr(tok, "vocab_json", None))
    if hasattr(tok, "word_embeddings"):  # BERT: word-piece ids
        if to != "hf":
            raise HubError("timm has no BERT; export a text model with to='hf' (BertForMaskedLM) or 'maezoo'")
        return hf_bert.write_folder(model, state, dst)
    if hasattr(tok, "patch_len"):  # series patches: PatchTST
        if to != "hf":
            raise HubError("timm has no PatchTST; export a series model with to='hf' (PatchTSTForPretraining) or 'maezoo'")
        return hf_patchtst.write_folder(model, state, dst, context_length, num_channels)
    if hasattr(tok, "mel_bins"):  # Audio-MAE: a timm ViT over [1, T, F] filterbanks
        if to != "timm":
            raise HubError("Hugging Face has no Audio-MAE; export an audio model with to='timm' (the audiomae_as2m "
                           "layout) or 'maezoo'")
        return timm_audiomae.write_folder(state, timm_audiomae.audio_arch(model), dst,
                                          (float(tok.norm_mean), float(tok.norm_std)))
    if isinstance(getattr(tok, "proj", None), nn.Conv3d):
        if to != "hf":
            raise HubError("timm has no VideoMAE; export a video model with to='hf' (VideoMAEForPreTraining) or 'maezoo'")
        varch = video_arch_of(model)
        return hf_videomae.write_folder(video.maezoo_to_pivot(state, type(model).__name__), varch, dst)
    arch = arch_of(model, img_size)
    grid = (arch["img_size"] // arch["patch_size"],) * 2
    pivot = maezoo_to_pivot(state, grid)
    writer = timm_vit.write_folder if to == "timm" else hf_vitmae.write_folder
    return writer(pivot, arch, dst)


def write_maezoo(state: dict[str, Tensor], spec: dict[str, Any], dst: Path, vocab_json: str | None = None) -> Path:
    """``model.safetensors`` + ``model.json``, and a text model's vocabulary as ``tokenizer.json`` (read back in place
    of the spec's ``vocab_file``, as a run folder's)."""
    from safetensors.torch import save_file

    dst.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    if isinstance(vocab_json, str):
        (dst / "tokenizer.json").write_text(vocab_json)
        spec = {**spec, "kwargs": {k: v for k, v in spec.get("kwargs", {}).items() if k != "vocab_file"}}
    (dst / "model.json").write_text(json.dumps(spec, indent=2))
    return dst


def read_maezoo(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and spec of a maezoo folder (run folder: its final weights; else ``model.safetensors``)."""
    from safetensors.torch import load_file

    folder = path.parent if path.is_file() else path
    latest = folder / "checkpoints" / "latest"
    if not (folder / "model.safetensors").is_file() and latest.is_file():  # a run that has not finished
        folder = folder / "checkpoints" / latest.read_text().strip()
    if not (folder / "model.safetensors").is_file():
        raise HubError(f"{path}: no model.safetensors; pass a finished run folder or a checkpoint folder")
    spec = json.loads((folder / "model.json").read_text())
    if (folder / "tokenizer.json").is_file():  # a text model's vocabulary (its builder's vocab_file)
        spec.setdefault("kwargs", {})["vocab_file"] = str(folder / "tokenizer.json")
    return load_file(str(folder / "model.safetensors")), spec


__all__ = ["TARGETS", "arch_of", "export", "read_maezoo", "video_arch_of", "write_maezoo"]
