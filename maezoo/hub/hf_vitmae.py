"""Hugging Face ``ViTMAEForPreTraining`` / ``ViTMAEModel`` (``facebook/vit-mae-{base,large,huge}``) in and out.

Both key styles load: the released files' (transformers 4: ``encoder.layer.<i>.attention.attention.query``,
``intermediate.dense`` ...) and transformers 5's (``layers.<i>.attention.q_proj``, ``mlp.fc1`` ...); separate
q/k/v projections are fused into timm's ``qkv`` (q, k, v stacked on the output axis) and split back on export.
``config.json`` gives the head counts, ``norm_pix_loss``, ``mask_ratio`` and ``layer_norm_eps`` (the released
configs say 1e-12 where the official MAE used 1e-6; the import keeps the checkpoint's value on the model).
Export writes transformers-4 names, which both transformers 4 and 5 load with ``from_pretrained(folder)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from maezoo.hub.io import Checkpoint, HubError
from maezoo.hub.vit import Pivot, block_count

NAME = "hf_vitmae"
EXPECTED = ("{[vit.]embeddings.patch_embeddings.projection.weight, [vit.]encoder.layer.<i>.attention.attention.query.* "
            "or [vit.]layers.<i>.attention.q_proj.*, [vit.]layernorm.*[, decoder.decoder_*]} + config.json "
            "(model_type vit_mae)")
#: block parameter names: pivot (timm) -> (transformers 4, transformers 5); q/k/v handled apart
BLOCK = {"norm1": ("layernorm_before", "layernorm_before"), "norm2": ("layernorm_after", "layernorm_after"),
         "attn.proj": ("attention.output.dense", "attention.o_proj"), "mlp.fc1": ("intermediate.dense", "mlp.fc1"),
         "mlp.fc2": ("output.dense", "mlp.fc2")}
QKV = (("attention.attention.query", "attention.attention.key", "attention.attention.value"),
       ("attention.q_proj", "attention.k_proj", "attention.v_proj"))
DECODER_PREFIXES = ("decoder.decoder_layers.", "decoder.decoder_encoder.layer.")
PATCH_KEY = "embeddings.patch_embeddings.projection.weight"


def matches(ckpt: Checkpoint) -> bool:
    w = ckpt.state.get(PATCH_KEY, ckpt.state.get("vit." + PATCH_KEY))
    cfg_type = (ckpt.config or {}).get("model_type")
    return w is not None and w.ndim == 4 and cfg_type in (None, "vit_mae")


def to_pivot(ckpt: Checkpoint) -> Pivot:
    s = dict(ckpt.state)
    if ("vit." + PATCH_KEY) in s:
        s = {k[4:] if k.startswith("vit.") else k: v for k, v in s.items()}
    enc_prefix = "layers." if any(re.match(r"layers\.\d+\.", k) for k in s) else "encoder.layer."
    out = {"cls_token": s.pop("embeddings.cls_token"),
           "patch_embed.proj.weight": s.pop(PATCH_KEY),
           "patch_embed.proj.bias": s.pop("embeddings.patch_embeddings.projection.bias"),
           "norm.weight": s.pop("layernorm.weight"), "norm.bias": s.pop("layernorm.bias")}
    if "embeddings.position_embeddings" in s:
        out["pos_embed"] = s.pop("embeddings.position_embeddings")
    _blocks_in(s, enc_prefix, "blocks.", out, ckpt.path)
    if "decoder.decoder_embed.weight" in s:
        for src, dst in (("decoder_embed", "decoder_embed"), ("decoder_norm", "decoder_norm"), ("decoder_pred", "decoder_pred")):
            for t in ("weight", "bias"):
                out[f"{dst}.{t}"] = s.pop(f"decoder.{src}.{t}")
        out["mask_token"] = s.pop("decoder.mask_token")
        if "decoder.decoder_pos_embed" in s:
            out["decoder_pos_embed"] = s.pop("decoder.decoder_pos_embed")
        # transformers 5 saves the decoder layers as ``decoder_encoder.layer`` (its reverse renaming)
        dec_prefix = next((p for p in DECODER_PREFIXES if f"{p}0.layernorm_before.weight" in s), DECODER_PREFIXES[0])
        _blocks_in(s, dec_prefix, "decoder_blocks.", out, ckpt.path)
    out.update(s)  # whatever is left: the pivot mapping reports it (a classifier head is ignored, others refused)
    cfg = ckpt.config or {}
    if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("qkv_bias", True) is not True:
        raise HubError(f"{ckpt.path}: config.json has hidden_act={cfg.get('hidden_act')!r}, qkv_bias={cfg.get('qkv_bias')}; "
                       "maezoo's ViT uses exact GELU and q/k/v biases (the released ViTMAE configs)")
    notes = [] if cfg else ["no config.json: head counts from the standard ViT sizes, layer_norm_eps 1e-6"]
    return Pivot(state=out, path=ckpt.path, num_heads=cfg.get("num_attention_heads"),
                 decoder_heads=cfg.get("decoder_num_attention_heads"), norm_pix_loss=cfg.get("norm_pix_loss"),
                 mask_ratio=cfg.get("mask_ratio"), layer_norm_eps=cfg.get("layer_norm_eps"), notes=notes)


def _blocks_in(s: dict[str, Tensor], src: str, dst: str, out: dict[str, Tensor], path: Path) -> None:
    for i in range(block_count(s, src)):
        p = f"{src}{i}."
        style = 1 if f"{p}{QKV[1][0]}.weight" in s else 0
        try:
            for t in ("weight", "bias"):
                out[f"{dst}{i}.attn.qkv.{t}"] = torch.cat([s.pop(f"{p}{q}.{t}") for q in QKV[style]], dim=0)
                for piv, names in BLOCK.items():
                    out[f"{dst}{i}.{piv}.{t}"] = s.pop(f"{p}{names[style]}.{t}")
        except KeyError as exc:
            raise HubError(f"{path}: missing {exc.args[0]}; a ViTMAE layer holds q/k/v (with biases), the output "
                           "projection, two layer norms and the MLP") from None


def pivot_to_hf(pivot: dict[str, Tensor]) -> dict[str, Tensor]:
    """``ViTMAEForPreTraining`` state dict (transformers-4 names) from the pivot layout."""
    out = {"vit.embeddings.cls_token": pivot["cls_token"], "vit.embeddings.position_embeddings": pivot["pos_embed"],
           "vit.embeddings.patch_embeddings.projection.weight": pivot["patch_embed.proj.weight"],
           "vit.embeddings.patch_embeddings.projection.bias": pivot["patch_embed.proj.bias"],
           "vit.layernorm.weight": pivot["norm.weight"], "vit.layernorm.bias": pivot["norm.bias"]}
    _blocks_out(pivot, "blocks.", "vit.encoder.layer.", out)
    if "decoder_embed.weight" in pivot:
        for name in ("decoder_embed", "decoder_norm", "decoder_pred"):
            for t in ("weight", "bias"):
                out[f"decoder.{name}.{t}"] = pivot[f"{name}.{t}"]
        out["decoder.mask_token"] = pivot["mask_token"]
        out["decoder.decoder_pos_embed"] = pivot["decoder_pos_embed"]
        _blocks_out(pivot, "decoder_blocks.", "decoder.decoder_layers.", out)
    return {k: v.contiguous() for k, v in out.items()}


def _blocks_out(pivot: dict[str, Tensor], src: str, dst: str, out: dict[str, Tensor]) -> None:
    for i in range(block_count(pivot, src)):
        for t in ("weight", "bias"):
            for name, part in zip(QKV[0], pivot[f"{src}{i}.attn.qkv.{t}"].chunk(3, dim=0)):
                out[f"{dst}{i}.{name}.{t}"] = part
            for piv, names in BLOCK.items():
                out[f"{dst}{i}.{names[0]}.{t}"] = pivot[f"{src}{i}.{piv}.{t}"]


def hf_config(arch: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` of ``ViTMAEForPreTraining`` for a maezoo ViT MAE (``arch`` from :func:`maezoo.hub.exporters.arch_of`)."""
    d = arch["embed_dim"]
    cfg = {
        "architectures": ["ViTMAEForPreTraining"], "model_type": "vit_mae",
        "hidden_size": d, "num_hidden_layers": arch["depth"], "num_attention_heads": arch["num_heads"],
        "intermediate_size": int(round(d * arch["mlp_ratio"])), "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02, "layer_norm_eps": 1e-6,
        "image_size": arch["img_size"], "patch_size": arch["patch_size"], "num_channels": arch["in_chans"],
        "qkv_bias": True, "mask_ratio": arch.get("mask_ratio", 0.75), "norm_pix_loss": arch.get("norm_pix_loss", True),
    }
    if "decoder_dim" in arch:
        cfg.update(decoder_hidden_size=arch["decoder_dim"], decoder_num_hidden_layers=arch["decoder_depth"],
                   decoder_num_attention_heads=arch["decoder_heads"], decoder_intermediate_size=4 * arch["decoder_dim"])
    return cfg


def write_folder(pivot: dict[str, Tensor], arch: dict[str, Any], dst: Path) -> Path:
    from safetensors.torch import save_file

    dst.mkdir(parents=True, exist_ok=True)
    save_file(pivot_to_hf(pivot), str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(hf_config(arch), indent=2))
    return dst
