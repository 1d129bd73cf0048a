"""The video pivot: the official VideoMAE pre-training layout (MCG-NJU/VideoMAE, OpenGVLab/VideoMAEv2), to and
from maezoo's ``videomae_official`` (:mod:`maezoo.video.official`).

Official names: ``encoder.patch_embed.proj.*`` (a Conv3d ``[D, C, t, p, p]``), ``encoder.blocks.<i>.{norm1,
attn.qkv.weight, attn.q_bias, attn.v_bias, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``encoder.norm``,
``encoder_to_decoder.weight`` (no bias), ``mask_token``, ``decoder.blocks.<i>.*``, ``decoder.norm``,
``decoder.head``. The blocks have separate query and value biases and no key bias; maezoo's timm blocks fuse them
into ``qkv.bias`` = ``[q_bias, 0, v_bias]``. The position tables are the fixed 1-D BEiT sinusoids, not stored
(a file that stores ``pos_embed`` must hold exactly that table).

Shapes:
    encoder.patch_embed.proj.weight ``[D, C, t, p, p]``; decoder.head.weight ``[t*p*p*C, D_dec]``
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from maezoo.hub.io import HubError, refuse_unknown
from maezoo.hub.vit import Pivot, block_count

#: official VideoMAE heads per encoder / decoder width (ViT-S/B/L/H, V2's ViT-g 1408); others: 64-wide heads
ENCODER_HEADS = {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}
DECODER_HEADS = {192: 3, 384: 6, 512: 8, 640: 8}
BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias", "norm2.weight",
              "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")
EXPECTED = ("encoder.patch_embed.proj.weight [D, C, t, p, p], encoder.blocks.<i>.attn.qkv.weight + attn.q_bias/v_bias, "
            "encoder.norm.*[, encoder_to_decoder.weight, mask_token, decoder.blocks.<i>.*, decoder.norm.*, decoder.head.*]")
#: ImageNet statistics: the official and Hugging Face losses undo this input normalisation before the target
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SINUSOID_TOL = 1e-4


@dataclass
class VideoPivot(Pivot):
    """A state dict in the official VideoMAE layout plus the clip size it was trained on."""

    num_frames: int | None = None
    img_size: int | None = None
    #: Hugging Face's decoder norm is built with torch's default eps (1e-5), whatever ``layer_norm_eps`` says
    decoder_norm_eps: float | None = None
    #: further builder kwargs the source states (e.g. VideoMAE V2's decoder masking from the training args)
    kwargs: dict[str, Any] = field(default_factory=dict)


def sinusoid(n: int, dim: int) -> Tensor:
    """The official 1-D table (``pos / 10000^(2*(j//2)/dim)``, sin on even ``j``, cos on odd), ``[n, dim]``."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    return torch.where(j.long() % 2 == 0, angle.sin(), angle.cos()).float()


def has_decoder(state: dict[str, Tensor]) -> bool:
    return "encoder_to_decoder.weight" in state


def infer_spec(pv: VideoPivot) -> dict[str, Any]:
    """``{"name": "videomae_official", "kwargs": {...}}`` for the pivot's shapes and hints."""
    s = pv.state
    missing = [k for k in ("encoder.patch_embed.proj.weight", "encoder.norm.weight", "encoder.blocks.0.mlp.fc1.weight")
               if k not in s]
    if missing:
        raise HubError(f"{pv.path}: missing {', '.join(missing)}; a VideoMAE checkpoint holds {EXPECTED}")
    w = s["encoder.patch_embed.proj.weight"]
    dim, in_chans, t, ph, pw = (int(v) for v in w.shape)
    if ph != pw:
        raise HubError(f"{pv.path}: rectangular patches {ph}x{pw}; maezoo's VideoMAE uses square patches")
    kwargs: dict[str, Any] = {
        "img_size": pv.img_size or 224, "num_frames": pv.num_frames or 16, "tubelet_size": t, "patch_size": ph,
        "in_chans": in_chans, "embed_dim": dim, "depth": block_count(s, "encoder.blocks."),
        "num_heads": pv.num_heads or ENCODER_HEADS.get(dim, max(1, dim // 64)),
        "mlp_ratio": s["encoder.blocks.0.mlp.fc1.weight"].shape[0] / dim,
        "norm_target": True if pv.norm_pix_loss is None else bool(pv.norm_pix_loss),
    }
    if in_chans == 3:
        kwargs.update(pixel_mean=list(IMAGENET_MEAN), pixel_std=list(IMAGENET_STD))
    if has_decoder(s):
        ddim = int(s["encoder_to_decoder.weight"].shape[0])
        out = int(s["decoder.head.weight"].shape[0])
        if out != t * ph * pw * in_chans:
            raise HubError(f"{pv.path}: decoder.head predicts {out} values per tubelet; expected t*p*p*C = "
                           f"{t * ph * pw * in_chans}")
        if s["decoder.blocks.0.mlp.fc1.weight"].shape[0] / ddim != kwargs["mlp_ratio"]:
            raise HubError(f"{pv.path}: the decoder's MLP ratio differs from the encoder's; maezoo's VideoMAE shares one")
        kwargs.update(decoder_dim=ddim, decoder_depth=block_count(s, "decoder.blocks."),
                      decoder_heads=pv.decoder_heads or DECODER_HEADS.get(ddim, max(1, ddim // 64)))
    if pv.mask_ratio is not None:
        kwargs["mask_ratio"] = float(pv.mask_ratio)
    kwargs.update(pv.kwargs)
    return {"name": "videomae_official", "kwargs": kwargs}


def preset_name(kwargs: dict[str, Any]) -> str:
    return "videomae_official"


def _check_table(pv: VideoPivot, key: str, dim: int) -> None:
    pe = pv.state.get(key)
    if pe is None:
        return
    table = sinusoid(pe.shape[-2], dim)
    if pe.shape[-1] != dim or float((pe.reshape(-1, dim).float() - table).abs().max()) > SINUSOID_TOL:
        raise HubError(f"{pv.path}: {key} {tuple(pe.shape)} is not VideoMAE's fixed 1-D sinusoid table; a VideoMAE "
                       "trained with learnable position embeddings (use_learnable_pos_emb) is another architecture")


def pivot_to_maezoo(pv: VideoPivot) -> tuple[dict[str, Tensor], list[str]]:
    """maezoo ``videomae_official`` state dict and the source keys left out (none: unknown keys are refused)."""
    s = pv.state
    dim = int(s["encoder.patch_embed.proj.weight"].shape[0])
    _check_table(pv, "encoder.pos_embed", dim)
    out = {"tokenizer.proj.weight": s["encoder.patch_embed.proj.weight"],
           "tokenizer.proj.bias": s["encoder.patch_embed.proj.bias"],
           "encoder.norm.weight": s["encoder.norm.weight"], "encoder.norm.bias": s["encoder.norm.bias"]}
    used = {"encoder.patch_embed.proj.weight", "encoder.patch_embed.proj.bias", "encoder.norm.weight",
            "encoder.norm.bias", "encoder.pos_embed"}
    used |= _blocks(pv, "encoder.blocks.", "encoder.blocks.", out)
    if has_decoder(s):
        _check_table(pv, "pos_embed", int(s["encoder_to_decoder.weight"].shape[0]))
        out.update({"decoder.embed.weight": s["encoder_to_decoder.weight"], "decoder.mask_token": s["mask_token"],
                    "decoder.norm.weight": s["decoder.norm.weight"], "decoder.norm.bias": s["decoder.norm.bias"],
                    "decoder.pred.weight": s["decoder.head.weight"], "decoder.pred.bias": s["decoder.head.bias"]})
        used |= {"encoder_to_decoder.weight", "mask_token", "pos_embed", "decoder.norm.weight", "decoder.norm.bias",
                 "decoder.head.weight", "decoder.head.bias"}
        used |= _blocks(pv, "decoder.blocks.", "decoder.blocks.", out)
    left = sorted(k for k in s if k not in used)
    refuse_unknown(pv.path, "the VideoMAE pre-training layout", left, EXPECTED, "Layer scale (gamma_1/gamma_2), "
                   "cosine attention or a classifier (a fine-tuned checkpoint) are other architectures")
    return out, []


def _blocks(pv: VideoPivot, src: str, dst: str, out: dict[str, Tensor]) -> set[str]:
    s, used = pv.state, set()
    for i in range(block_count(s, src)):
        p = f"{src}{i}."
        for k in BLOCK_KEYS:
            if p + k not in s:
                raise HubError(f"{pv.path}: missing {p + k}; a VideoMAE block holds {', '.join(BLOCK_KEYS)} "
                               "and attn.q_bias/attn.v_bias")
            out[f"{dst}{i}.{k}"] = s[p + k]
            used.add(p + k)
        w = s[p + "attn.qkv.weight"]
        d = w.shape[0] // 3
        if p + "attn.qkv.bias" in s:
            bias = s[p + "attn.qkv.bias"]
        else:
            q, v = s.get(p + "attn.q_bias"), s.get(p + "attn.v_bias")
            zero = torch.zeros(d, dtype=w.dtype)
            bias = torch.cat([zero if q is None else q, zero, zero if v is None else v])
        out[f"{dst}{i}.attn.qkv.bias"] = bias
        used |= {p + "attn.qkv.bias", p + "attn.q_bias", p + "attn.v_bias"}
    return used


def maezoo_to_pivot(state: dict[str, Tensor], path: str = "model") -> dict[str, Tensor]:
    """The official layout of a ``videomae_official`` state dict (the key bias must be zero, as it stays)."""
    out = {"encoder.patch_embed.proj.weight": state["tokenizer.proj.weight"],
           "encoder.patch_embed.proj.bias": state["tokenizer.proj.bias"],
           "encoder.norm.weight": state["encoder.norm.weight"], "encoder.norm.bias": state["encoder.norm.bias"]}
    for k, v in state.items():
        m = re.match(r"(encoder|decoder)\.blocks\.(\d+)\.attn\.qkv\.bias$", k)
        if m:
            q, kb, vb = v.chunk(3)
            if bool(kb.ne(0).any()):
                raise HubError(f"{path}: {k} has a non-zero key bias, which the official VideoMAE blocks do not "
                               "have; this model cannot be written in that layout")
            base = k[: -len("qkv.bias")]
            out[base + "q_bias"], out[base + "v_bias"] = q, vb
        elif k.startswith(("encoder.blocks.", "decoder.blocks.")):
            out[k] = v
    if "decoder.embed.weight" in state:
        if state.get("decoder.embed.bias") is not None:
            raise HubError(f"{path}: the decoder's input projection has a bias; the official encoder_to_decoder has "
                           "none (build videomae_official)")
        out.update({"encoder_to_decoder.weight": state["decoder.embed.weight"], "mask_token": state["decoder.mask_token"],
                    "decoder.norm.weight": state["decoder.norm.weight"], "decoder.norm.bias": state["decoder.norm.bias"],
                    "decoder.head.weight": state["decoder.pred.weight"], "decoder.head.bias": state["decoder.pred.bias"]})
    return {k: v.contiguous() for k, v in out.items()}


__all__ = ["VideoPivot", "has_decoder", "infer_spec", "maezoo_to_pivot", "pivot_to_maezoo", "sinusoid"]
