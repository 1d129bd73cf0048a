"""Hugging Face ``PatchTSTForPretraining`` into maezoo's ``patchtst_hf``, where the architectures correspond.

They correspond for ``norm_type="layernorm"``, ``pre_norm=True``, ``share_embedding=True``,
``channel_attention=False``, ``use_cls_token=False``, GELU and ``scaling="std"``: a shared linear patch embedding,
a position table (``random``: learned; ``sincos``: Hugging Face's normalised interleaved table, kept as values),
pre-norm LayerNorm blocks with separate q/k/v projections (fused into ``qkv``), no final norm, and a linear
head per patch. Other configurations are refused, naming the setting: PatchTST's default BatchNorm and post-norm
blocks, per-channel embeddings, channel attention or a class token have no maezoo counterpart.

Hidden patches are zero-filled *before* the patch embedding in PatchTST, so a hidden token is the embedding's bias
plus its position; maezoo's fixed zero token (a buffer) takes that bias, so masking is the same as long as the
bias is not trained further (maezoo's token stays at the imported value). The position table fills the first
``num_patches`` rows of maezoo's table (``max_patches`` 1,024); the rows after stay zero.

Shapes:
    model.encoder.embedder.input_embedding.weight ``[D, patch_length]``; position_enc ``[num_patches, D]``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from maezoo.hub.io import Checkpoint, HubError
from maezoo.hub.vit import Pivot, block_count

NAME = "hf_patchtst"
EXPECTED = ("{model.encoder.embedder.input_embedding.weight [D, patch_length], model.encoder.positional_encoder."
            "position_enc, model.encoder.layers.<i>.{self_attn.{q,k,v,out}_proj, norm_sublayer1, ff.0, ff.3, "
            "norm_sublayer3}, head.linear.*} + config.json (model_type patchtst)")
PREFIX = "model.encoder."
#: the configuration maezoo's blocks correspond to: setting -> required value
REQUIRED = {"norm_type": "layernorm", "pre_norm": True, "share_embedding": True, "channel_attention": False,
            "use_cls_token": False, "activation_function": "gelu", "bias": True}
MAX_PATCHES = 1024


@dataclass
class PatchTSTPivot(Pivot):
    """The Hugging Face state dict plus the patch stride of its config."""

    stride: int | None = None


def matches(ckpt: Checkpoint) -> bool:
    return PREFIX + "embedder.input_embedding.weight" in ckpt.state or \
        any(k.startswith(PREFIX + "embedder.input_embedding.0.") for k in ckpt.state) or \
        (ckpt.config or {}).get("model_type") == "patchtst"


def to_pivot(ckpt: Checkpoint) -> PatchTSTPivot:
    cfg = ckpt.config or {}
    wrong = {k: cfg.get(k) for k, v in REQUIRED.items() if k in cfg and cfg[k] != v}
    if cfg.get("scaling", "std") not in ("std", True):
        wrong["scaling"] = cfg.get("scaling")  # maezoo's RevIN is the std scaler
    if any(".batchnorm." in k for k in ckpt.state):
        wrong.setdefault("norm_type", "batchnorm")
    if wrong:
        raise HubError(f"{ckpt.path}: a PatchTST with {', '.join(f'{k}={v!r}' for k, v in wrong.items())}; maezoo's "
                       f"PatchTST corresponds to {', '.join(f'{k}={v!r}' for k, v in REQUIRED.items())} only "
                       "(pre-norm LayerNorm blocks, one shared patch embedding). Train the Hugging Face model with "
                       "those settings, or pre-train maezoo's patchtst directly")
    if cfg.get("head_type", "pretrain") not in (None, "pretrain") or "head.linear.weight" not in ckpt.state:
        notes = ["no pre-training head: the linear decoder keeps its initialisation"]
    else:
        notes = []
    return PatchTSTPivot(state=dict(ckpt.state), path=ckpt.path, num_heads=cfg.get("num_attention_heads"),
                         mask_ratio=cfg.get("random_mask_ratio"), layer_norm_eps=cfg.get("norm_eps", 1e-5),
                         stride=cfg.get("patch_stride"), notes=notes)


def infer_spec(pv: PatchTSTPivot) -> dict[str, Any]:
    s = pv.state
    key = PREFIX + "embedder.input_embedding.weight"
    if key not in s:
        raise HubError(f"{pv.path}: missing {key}; a PatchTST checkpoint holds {EXPECTED}")
    dim, patch = (int(v) for v in s[key].shape)
    depth = block_count(s, PREFIX + "layers.")
    kwargs = {"patch_len": patch, "stride": pv.stride or patch, "embed_dim": dim, "depth": depth,
              "num_heads": pv.num_heads or 16, "mlp_ratio": s[PREFIX + "layers.0.ff.0.weight"].shape[0] / dim,
              "pos_embed": "learned", "mask_token": "zeros"}
    if pv.mask_ratio is not None:
        kwargs["mask_ratio"] = float(pv.mask_ratio)
    return {"name": "patchtst_hf", "kwargs": kwargs}


def pivot_to_maezoo(pv: PatchTSTPivot) -> tuple[dict[str, Tensor], list[str]]:
    s = {k.removeprefix(PREFIX): v for k, v in pv.state.items()}
    w, b = s.pop("embedder.input_embedding.weight"), s.pop("embedder.input_embedding.bias")
    pe = s.pop("positional_encoder.position_enc")
    if pe.shape[0] > MAX_PATCHES:
        raise HubError(f"{pv.path}: {pe.shape[0]} positions exceed maezoo's table of {MAX_PATCHES}")
    pos = torch.zeros(MAX_PATCHES, pe.shape[1], dtype=pe.dtype)
    pos[: pe.shape[0]] = pe
    out = {"tokenizer.proj.weight": w, "tokenizer.proj.bias": b, "tokenizer.pos": pos, "mask_token": b.clone()}
    for i in range(block_count(s, "layers.")):
        p, q = f"layers.{i}.", f"encoder.blocks.{i}."
        try:
            for t in ("weight", "bias"):
                out[f"{q}attn.qkv.{t}"] = torch.cat([s.pop(f"{p}self_attn.{n}_proj.{t}") for n in "qkv"])
                for src, dst in (("self_attn.out_proj", "attn.proj"), ("norm_sublayer1", "norm1"),
                                 ("norm_sublayer3", "norm2"), ("ff.0", "mlp.fc1"), ("ff.3", "mlp.fc2")):
                    out[f"{q}{dst}.{t}"] = s.pop(f"{p}{src}.{t}")
        except KeyError as exc:
            raise HubError(f"{pv.path}: missing {PREFIX}{exc.args[0]}; a PatchTST layer holds q/k/v/out projections, "
                           "norm_sublayer1, ff.0, ff.3 and norm_sublayer3") from None
    if "head.linear.weight" in s:
        out["decoder.pred.weight"], out["decoder.pred.bias"] = s.pop("head.linear.weight"), s.pop("head.linear.bias")
    left = sorted(s)
    if left:
        raise HubError(f"{pv.path}: keys outside the PatchTST layout maezoo maps: {', '.join(left[:6])}"
                       f"{' ...' if len(left) > 6 else ''}; expected only {EXPECTED}")
    return out, []


def preset_name(kwargs: dict[str, Any]) -> str:
    return "patchtst_hf"

