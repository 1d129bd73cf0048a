"""Hugging Face ``VideoMAEForPreTraining`` / ``VideoMAEModel`` (``MCG-NJU/videomae-{base,large,...}``) in and out.

Layers hold separate ``query``/``key``/``value`` projections, the key without a bias; the query and value biases
are ``attention.attention.q_bias``/``v_bias`` in the released files (transformers 4, and transformers 5's saved
files) or ``query.bias``/``value.bias`` (transformers 5 in memory); both load. They are fused into the pivot's
``qkv.weight`` and kept as ``q_bias``/``v_bias`` (:mod:`maezoo.hub.video`). ``config.json`` gives the head
counts, the clip size, ``norm_pix_loss`` and ``layer_norm_eps`` (the released configs say 1e-12 where the official
code used 1e-6; the import keeps the config's value, and 1e-5 on the decoder's final norm, which transformers builds
with torch's default whatever the config says). ``use_mean_pooling: true`` configurations (fine-tuning) have no
encoder norm and are refused. Export writes the released (transformers-4) names with ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from maezoo.hub import video
from maezoo.hub.io import Checkpoint, HubError
from maezoo.hub.video import VideoPivot
from maezoo.hub.vit import block_count

NAME = "hf_videomae"
EXPECTED = ("{[videomae.]embeddings.patch_embeddings.projection.weight [D, C, t, p, p], [videomae.]encoder.layer.<i>."
            "attention.attention.{query,key,value}.weight + q_bias/v_bias, [videomae.]layernorm.*[, encoder_to_decoder."
            "weight, decoder.decoder_layers.<i>.*, decoder.norm.*, decoder.head.*]} + config.json (model_type videomae)")
PIVOT = video
PATCH_KEY = "embeddings.patch_embeddings.projection.weight"
#: block parameter names: pivot -> Hugging Face (q/k/v and their biases handled apart)
BLOCK = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
         "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
HF_DECODER_NORM_EPS = 1e-5


def matches(ckpt: Checkpoint) -> bool:
    w = ckpt.state.get(PATCH_KEY, ckpt.state.get("videomae." + PATCH_KEY))
    return getattr(w, "ndim", 0) == 5 and (ckpt.config or {}).get("model_type") in (None, "videomae")


def to_pivot(ckpt: Checkpoint) -> VideoPivot:
    s = {k.removeprefix("videomae."): v for k, v in ckpt.state.items()}
    cfg = ckpt.config or {}
    if "layernorm.weight" not in s:
        raise HubError(f"{ckpt.path}: no encoder layernorm (config use_mean_pooling={cfg.get('use_mean_pooling')}): a "
                       "fine-tuning configuration whose encoder ends without a norm. maezoo's VideoMAE encoder ends in "
                       "one; load a pre-training checkpoint (VideoMAEForPreTraining, e.g. MCG-NJU/videomae-base)")
    out = {"encoder.patch_embed.proj.weight": s.pop(PATCH_KEY),
           "encoder.patch_embed.proj.bias": s.pop("embeddings.patch_embeddings.projection.bias"),
           "encoder.norm.weight": s.pop("layernorm.weight"), "encoder.norm.bias": s.pop("layernorm.bias")}
    _blocks_in(s, "encoder.layer.", "encoder.blocks.", out, ckpt.path)
    if "encoder_to_decoder.weight" in s:
        out.update({"encoder_to_decoder.weight": s.pop("encoder_to_decoder.weight"), "mask_token": s.pop("mask_token"),
                    "decoder.norm.weight": s.pop("decoder.norm.weight"), "decoder.norm.bias": s.pop("decoder.norm.bias"),
                    "decoder.head.weight": s.pop("decoder.head.weight"), "decoder.head.bias": s.pop("decoder.head.bias")})
        _blocks_in(s, "decoder.decoder_layers.", "decoder.blocks.", out, ckpt.path)
    out.update(s)  # whatever is left: the pivot mapping refuses it with the keys named
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise HubError(f"{ckpt.path}: config.json has hidden_act={cfg.get('hidden_act')!r}; maezoo's ViT uses exact GELU")
    size = cfg.get("image_size")
    if isinstance(size, list | tuple):
        if len(set(size)) != 1:
            raise HubError(f"{ckpt.path}: image_size {size} is not square; maezoo's VideoMAE tables assume square frames")
        size = size[0]
    notes = [] if cfg else ["no config.json: head counts from the standard sizes, 16 frames of 224 x 224"]
    return VideoPivot(state=out, path=ckpt.path, num_heads=cfg.get("num_attention_heads"),
                      decoder_heads=cfg.get("decoder_num_attention_heads"), norm_pix_loss=cfg.get("norm_pix_loss"),
                      layer_norm_eps=cfg.get("layer_norm_eps"), num_frames=cfg.get("num_frames"), img_size=size,
                      decoder_norm_eps=HF_DECODER_NORM_EPS if "decoder.head.weight" in out else None, notes=notes)


def _blocks_in(s: dict[str, Tensor], src: str, dst: str, out: dict[str, Tensor], path: Path) -> None:
    for i in range(block_count(s, src)):
        p, q = f"{src}{i}.", f"{dst}{i}."
        try:
            out[q + "attn.qkv.weight"] = torch.cat([s.pop(f"{p}{n}.weight") for n in QKV], dim=0)
            for bias, name in (("q_bias", "query"), ("v_bias", "value")):
                key = next((k for k in (f"{p}attention.attention.{bias}", f"{p}attention.attention.{name}.bias") if k in s),
                           None)
                if key is not None:
                    out[q + f"attn.{bias}"] = s.pop(key)
            for piv, name in BLOCK.items():
                for t in ("weight", "bias"):
                    out[f"{q}{piv}.{t}"] = s.pop(f"{p}{name}.{t}")
        except KeyError as exc:
            raise HubError(f"{path}: missing {exc.args[0]}; a VideoMAE layer holds query/key/value, the output "
                           "projection, two layer norms and the MLP") from None


def pivot_to_hf(pivot: dict[str, Tensor]) -> dict[str, Tensor]:
    """``VideoMAEForPreTraining`` state dict (released names) from the pivot layout."""
    out = {"videomae.embeddings.patch_embeddings.projection.weight": pivot["encoder.patch_embed.proj.weight"],
           "videomae.embeddings.patch_embeddings.projection.bias": pivot["encoder.patch_embed.proj.bias"],
           "videomae.layernorm.weight": pivot["encoder.norm.weight"], "videomae.layernorm.bias": pivot["encoder.norm.bias"]}
    _blocks_out(pivot, "encoder.blocks.", "videomae.encoder.layer.", out)
    if "encoder_to_decoder.weight" in pivot:
        for k in ("encoder_to_decoder.weight", "mask_token", "decoder.norm.weight", "decoder.norm.bias",
                  "decoder.head.weight", "decoder.head.bias"):
            out[k] = pivot[k]
        _blocks_out(pivot, "decoder.blocks.", "decoder.decoder_layers.", out)
    return {k: v.contiguous() for k, v in out.items()}


def _blocks_out(pivot: dict[str, Tensor], src: str, dst: str, out: dict[str, Tensor]) -> None:
    for i in range(block_count(pivot, src)):
        p, q = f"{src}{i}.", f"{dst}{i}."
        for name, part in zip(QKV, pivot[p + "attn.qkv.weight"].chunk(3, dim=0)):
            out[f"{q}{name}.weight"] = part
        out[q + "attention.attention.q_bias"] = pivot[p + "attn.q_bias"]
        out[q + "attention.attention.v_bias"] = pivot[p + "attn.v_bias"]
        for piv, name in BLOCK.items():
            for t in ("weight", "bias"):
                out[f"{q}{name}.{t}"] = pivot[f"{p}{piv}.{t}"]


def hf_config(arch: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` of ``VideoMAEForPreTraining`` (``arch`` from :func:`maezoo.hub.exporters.video_arch_of`)."""
    d = arch["embed_dim"]
    cfg = {
        "architectures": ["VideoMAEForPreTraining"], "model_type": "videomae", "image_size": arch["img_size"],
        "patch_size": arch["patch_size"], "num_channels": arch["in_chans"], "num_frames": arch["num_frames"],
        "tubelet_size": arch["tubelet_size"], "hidden_size": d, "num_hidden_layers": arch["depth"],
        "num_attention_heads": arch["num_heads"], "intermediate_size": int(round(d * arch["mlp_ratio"])),
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02, "layer_norm_eps": arch.get("layer_norm_eps", 1e-6), "qkv_bias": True, "use_mean_pooling": False,
        "norm_pix_loss": arch.get("norm_pix_loss", True),
    }
    if "decoder_dim" in arch:
        cfg.update(decoder_hidden_size=arch["decoder_dim"], decoder_num_hidden_layers=arch["decoder_depth"],
                   decoder_num_attention_heads=arch["decoder_heads"],
                   decoder_intermediate_size=int(round(arch["decoder_dim"] * arch["mlp_ratio"])))
    return cfg


def write_folder(pivot: dict[str, Tensor], arch: dict[str, Any], dst: Path) -> Path:
    from safetensors.torch import save_file

    dst.mkdir(parents=True, exist_ok=True)
    save_file(pivot_to_hf(pivot), str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(hf_config(arch), indent=2))
    return dst


__all__ = ["hf_config", "matches", "pivot_to_hf", "to_pivot", "write_folder"]
