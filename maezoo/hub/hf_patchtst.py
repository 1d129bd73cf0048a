"""Hugging Face ``PatchTSTForPretraining`` into maezoo's ``patchtst_hf``, where the architectures correspond.

They correspond for ``norm_type="layernorm"``, ``pre_norm=True``, ``share_embedding=True``,
``channel_attention=False``, ``use_cls_token=False``, GELU and ``scaling="std"``: a shared linear patch embedding,
a position table (``random``: learned; ``sincos``: Hugging Face's normalised interleaved table, kept as values),
pre-norm LayerNorm blocks with separate q/k/v projections (fused into ``qkv``), no final norm, and a linear
head per patch. Other configurations are refused, naming the setting: PatchTST's default BatchNorm and post-norm
blocks, per-channel embeddings, channel attention or a class token have no maezoo counterpart. ``scaling`` None
(no scaler) loads as ``revin=False``.

Export (:func:`write_folder`) writes a ``PatchTSTForPretraining`` folder for the maezoo models of that configuration:
``patchtst_hf`` (no final encoder norm), channel-independent, learned positions, ``remainder="crop"``, the linear
head, replace mode. ``context_length`` fixes the position rows written (an imported model knows it: the rows after
the imported ones are zero); ``num_input_channels`` is a config value only (every weight is shared by the channels).

Hidden patches are zero-filled *before* the patch embedding in PatchTST, so a hidden token is the embedding's bias
plus its position; maezoo's fixed zero token (a buffer) takes that bias, so masking is the same as long as the
bias is not trained further (maezoo's token stays at the imported value). The position table fills the first
``num_patches`` rows of maezoo's table (``max_patches`` 1,024); the rows after stay zero.

Shapes:
    model.encoder.embedder.input_embedding.weight ``[D, patch_length]``; position_enc ``[num_patches, D]``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from maezoo.hub.io import Checkpoint, HubError, refuse_unknown
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
    revin: bool = True


def matches(ckpt: Checkpoint) -> bool:
    return PREFIX + "embedder.input_embedding.weight" in ckpt.state or \
        any(k.startswith(PREFIX + "embedder.input_embedding.0.") for k in ckpt.state) or \
        (ckpt.config or {}).get("model_type") == "patchtst"


def to_pivot(ckpt: Checkpoint) -> PatchTSTPivot:
    cfg = ckpt.config or {}
    wrong = {k: cfg.get(k) for k, v in REQUIRED.items() if k in cfg and cfg[k] != v}
    if cfg.get("scaling", "std") not in ("std", True, None, False):
        wrong["scaling"] = cfg.get("scaling")  # maezoo's RevIN is the std scaler (None: no scaler, revin=False)
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
                         stride=cfg.get("patch_stride"), notes=notes, revin=cfg.get("scaling", "std") in ("std", True))


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
    if not pv.revin:
        kwargs["revin"] = False
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
    refuse_unknown(pv.path, "the PatchTST layout maezoo maps", left, EXPECTED)
    return out, []


def preset_name(kwargs: dict[str, Any]) -> str:
    return "patchtst_hf"


def _refuse(why: str) -> None:
    raise HubError(f"export to PatchTSTForPretraining: {why}. Hugging Face's PatchTST corresponds to maezoo's "
                   "patchtst_hf (no final encoder norm), channel-independent, learned positions, remainder='crop', "
                   "the linear head and replace mode; export other models with to='maezoo'")


def patchtst_arch(model: Any, state: dict[str, Tensor], context_length: int | None = None,
                  num_channels: int | None = None) -> dict[str, Any]:
    """The ``PatchTSTForPretraining`` config of a built maezoo PatchTST; refuses settings without a counterpart."""
    from torch import nn

    tok, enc, dec = model.tokenizer, model.encoder, model.decoder
    if not tok.channel_independent:
        _refuse("channel_independent=False mixes the channels in each token")
    if tok.remainder != "crop":
        _refuse(f"remainder={tok.remainder!r} (PatchTST crops the oldest steps)")
    if tok.pos is None:
        _refuse("sin-cos positions (pos_embed='learned' exports as positional_encoding_type='random')")
    if getattr(enc, "cls_token", None) is not None or not isinstance(enc.norm, nn.Identity):
        _refuse("the encoder ends with a LayerNorm (maezoo's patchtst); Hugging Face's encoder has none: build "
                "patchtst_hf")
    if not hasattr(dec, "pred") or hasattr(dec, "blocks") or model.mask_mode != "replace":
        _refuse(f"decoder {type(dec).__name__} in {model.mask_mode} mode (PatchTST has one linear head per patch)")
    blk = enc.blocks[0]
    if blk.attn.qkv.bias is None:
        _refuse("attention without biases")
    d, p, stride = tok.embed_dim, tok.patch_len, tok.stride
    n = _num_patches(state["tokenizer.pos"], p, stride, context_length)
    ratio = getattr(model.masking, "ratio", None)
    return {"architectures": ["PatchTSTForPretraining"], "model_type": "patchtst",
            "num_input_channels": int(num_channels or tok.n_vars or 1),
            "context_length": int(context_length or (n - 1) * stride + p),
            "patch_length": p, "patch_stride": stride, "d_model": d, "num_hidden_layers": len(enc.blocks),
            "num_attention_heads": blk.attn.num_heads, "ffn_dim": blk.mlp.fc1.out_features,
            "norm_type": "layernorm", "norm_eps": float(blk.norm1.eps), "pre_norm": True, "share_embedding": True,
            "channel_attention": False, "use_cls_token": False, "positional_encoding_type": "random",
            "activation_function": "gelu", "bias": True, "scaling": "std" if tok.revin else None,
            "attention_dropout": 0.0, "positional_dropout": 0.0, "ff_dropout": 0.0, "dropout": 0.0,
            "path_dropout": 0.0, "head_dropout": float(dec.drop.p), "do_mask_input": True, "mask_type": "random",
            "random_mask_ratio": float(ratio if ratio is not None else 0.4), "channel_consistent_masking": False,
            "loss": "mse"}


def _num_patches(pos: Tensor, patch: int, stride: int, context_length: int | None) -> int:
    if context_length is not None:
        if context_length < patch:
            raise HubError(f"context_length {context_length} is shorter than one patch of {patch} steps")
        return (context_length - patch) // stride + 1
    used = pos.abs().sum(-1).nonzero()
    n = int(used.max()) + 1 if used.numel() else 0
    if n == 0 or n == pos.shape[0]:
        raise HubError("export to PatchTSTForPretraining needs the context length (the learned position table "
                       "holds values in every row); pass context_length= (--context-length), the look-back window "
                       "the model was trained on")
    return n


def maezoo_to_hf(state: dict[str, Tensor], num_patches: int) -> dict[str, Tensor]:
    """maezoo names -> ``PatchTSTForPretraining`` names (the inverse of :func:`pivot_to_maezoo`)."""
    out = {PREFIX + "embedder.input_embedding.weight": state["tokenizer.proj.weight"],
           PREFIX + "embedder.input_embedding.bias": state["tokenizer.proj.bias"],
           PREFIX + "positional_encoder.position_enc": state["tokenizer.pos"][:num_patches].clone(),
           "head.linear.weight": state["decoder.pred.weight"], "head.linear.bias": state["decoder.pred.bias"]}
    for i in range(block_count(state, "encoder.blocks.")):
        p, q = f"{PREFIX}layers.{i}.", f"encoder.blocks.{i}."
        for t in ("weight", "bias"):
            for name, part in zip("qkv", state[f"{q}attn.qkv.{t}"].chunk(3, dim=0), strict=True):
                out[f"{p}self_attn.{name}_proj.{t}"] = part.clone()
            for hf, mz in (("self_attn.out_proj", "attn.proj"), ("norm_sublayer1", "norm1"),
                           ("norm_sublayer3", "norm2"), ("ff.0", "mlp.fc1"), ("ff.3", "mlp.fc2")):
                out[f"{p}{hf}.{t}"] = state[f"{q}{mz}.{t}"]
    return out


def write_folder(model: Any, state: dict[str, Tensor], dst: Path, context_length: int | None = None,
                 num_channels: int | None = None) -> Path:
    """A ``PatchTSTForPretraining.from_pretrained`` folder (``config.json`` + ``model.safetensors``)."""
    from safetensors.torch import save_file

    cfg = patchtst_arch(model, state, context_length, num_channels)
    n = (cfg["context_length"] - cfg["patch_length"]) // cfg["patch_stride"] + 1
    dst.mkdir(parents=True, exist_ok=True)
    save_file(maezoo_to_hf(state, n), str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst

