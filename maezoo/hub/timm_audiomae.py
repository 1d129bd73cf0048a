"""Audio-MAE in its timm-format release (``gaunernst/vit_base_patch16_1024_128.audiomae_as2m``) in and out.

The release is a timm ViT state dict (the official MAE encoder names, :mod:`maezoo.hub.vit`) of Audio-MAE's
AudioSet-2M pre-trained encoder: a 1-channel 16 x 16 patch embedding over ``[1, T=1024, F=128]`` filterbanks (a
``(64, 8)`` time x frequency grid), a class token, 12 blocks and the final norm; no decoder. maezoo's ``audiomae``
has the same encoder and patch embedding (non-overlapping 16 x 16, time-major token order), and the same fixed 2-D
sin-cos table (checked on import to 1e-4), so the encoder maps exactly. What differs is recorded in ``notes`` and
docs/zoo.md: the decoder is not in the release (maezoo's shifted-window decoder keeps its initialisation), and the
filterbank statistics are AudioSet's (``norm_mean``/``norm_std``, the release's ``-4.2677393`` / ``4.5689974``).
The official full pre-training file (facebookresearch/AudioMAE ``models_mae``, ``{"model": ...}`` with ``decoder_*``)
loads its encoder the same way; its decoder is not mapped (``notes`` and docs/zoo.md say why). Export writes a timm folder (``config.json`` with ``img_size: [T, F]``, ``in_chans: 1``) for the model's
``target_frames`` x ``mel_bins``.

Shapes:
    patch_embed.proj.weight ``[D, 1, 16, 16]``; pos_embed ``[1, 1 + (T/16)*(F/16), D]``
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.hub import vit
from maezoo.hub.io import Checkpoint, HubError
from maezoo.hub.timm_vit import timm_config
from maezoo.hub.vit import ENCODER_EXPECTED, Pivot

NAME = "timm_audiomae"
EXPECTED = (f"{{{ENCODER_EXPECTED} with patch_embed.proj.weight [D, 1, p, p] and a (T/p) x (F/p) pos_embed}} "
            "(timm vit_base_patch16_1024_128.audiomae_as2m)")
#: AudioSet-2M filterbank statistics of the release (and of maezoo's audio front end)
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974
MEL_BINS = 128


@dataclass
class AudioPivot(Pivot):
    """The timm/official ViT layout plus the ``(time, frequency)`` token grid of its position table."""

    grid: tuple[int, int] = (64, 8)


def _size(ckpt: Checkpoint) -> tuple[int, int] | None:
    size = (ckpt.config or {}).get("model_args", {}).get("img_size")
    return (int(size[0]), int(size[1])) if isinstance(size, list | tuple) and len(size) == 2 else None


def matches(ckpt: Checkpoint) -> bool:
    s = ckpt.state
    w = s.get("patch_embed.proj.weight")
    if getattr(w, "ndim", 0) != 4 or w.shape[1] != 1 or "blocks.0.attn.qkv.weight" not in s:
        return False
    size, pe = _size(ckpt), s.get("pos_embed")
    rectangular = pe is not None and math.isqrt(int(pe.shape[-2]) - 1) ** 2 != int(pe.shape[-2]) - 1
    return "audiomae" in (str(ckpt.config or "") + ckpt.name).lower() or rectangular or \
        (size is not None and size[0] != size[1])


def to_pivot(ckpt: Checkpoint) -> AudioPivot:
    args = (ckpt.config or {}).get("model_args", {})
    state = dict(ckpt.state)
    if vit.has_decoder(state):  # the official full pre-training file: its decoder has no maezoo counterpart
        swin = any(".attn.tau" in k for k in state)
        state = {k: v for k, v in state.items() if not k.startswith(("decoder_", "mask_token"))}
        why = ("Swin V2 blocks with scaled cosine attention, a learned temperature tau, a log-spaced continuous "
               "position-bias MLP and post-norm residual branches, where maezoo's swin_local is a Swin V1 block"
               if swin else "its global decoder_mode=0 decoder")
        note = f"the file's decoder is not mapped ({why}): maezoo's decoder keeps its initialisation"
    else:
        note = "encoder only (the release has no decoder): the shifted-window decoder keeps its initialisation"
    return AudioPivot(state=state, path=ckpt.path, num_heads=args.get("num_heads"), grid=_grid(ckpt), notes=[note])


def _grid(ckpt: Checkpoint) -> tuple[int, int]:
    size, s = _size(ckpt), ckpt.state
    p = int(s["patch_embed.proj.weight"].shape[-1])
    n = int(s["pos_embed"].shape[-2]) - 1 if "pos_embed" in s else None
    grid = (size[0] // p, size[1] // p) if size else None
    if grid is None and n is not None:
        grid = (n // (MEL_BINS // p), MEL_BINS // p)
    if grid is None or (n is not None and grid[0] * grid[1] != n):
        raise HubError(f"{ckpt.path}: cannot tell the (time, frequency) grid of {n} position rows; expected "
                       f"{MEL_BINS} mel bins (a config.json with model_args.img_size [T, F] says otherwise)")
    return grid


def infer_spec(pv: AudioPivot) -> dict[str, Any]:
    s, grid = pv.state, pv.grid
    w = s["patch_embed.proj.weight"]
    dim, p = int(w.shape[0]), int(w.shape[-1])
    if w.shape[-2] != p:
        raise HubError(f"{pv.path}: rectangular patches {tuple(w.shape[-2:])}; maezoo's Audio-MAE uses square patches")
    kwargs = {"target_frames": grid[0] * p, "mel_bins": grid[1] * p, "patch_size": p, "embed_dim": dim,
              "depth": vit.block_count(s, "blocks."), "num_heads": pv.num_heads or vit.STANDARD_HEADS.get(dim, dim // 64),
              "mlp_ratio": s["blocks.0.mlp.fc1.weight"].shape[0] / dim, "norm_mean": AUDIOSET_MEAN,
              "norm_std": AUDIOSET_STD}
    name = "audiomae_vit_base" if (dim, kwargs["depth"], kwargs["num_heads"], p) == (768, 12, 12, 16) else "audiomae"
    return {"name": name, "kwargs": kwargs}


def preset_name(kwargs: dict[str, Any]) -> str:
    return "audiomae"


def pivot_to_maezoo(pv: AudioPivot) -> tuple[dict[str, Tensor], list[str]]:
    s = dict(pv.state)
    dim = int(s["patch_embed.proj.weight"].shape[0])
    pe = s.pop("pos_embed", None)
    if pe is not None:
        diff = float((pe[0, 1:].float() - sincos_pos_embed(dim, pv.grid)).abs().max())
        if diff > vit.SINCOS_TOL:
            raise HubError(f"{pv.path}: pos_embed is not the fixed 2-D sin-cos table of the {pv.grid} grid (largest "
                           f"difference {diff:.3g}); learned or resampled position embeddings are not Audio-MAE's")
        s["cls_token"] = s["cls_token"] + pe[:, :1].to(s["cls_token"].dtype)
    out, ignored = vit.pivot_to_maezoo(Pivot(state=s, path=pv.path))
    out["tokenizer.norm_mean"] = torch.tensor(AUDIOSET_MEAN)
    out["tokenizer.norm_std"] = torch.tensor(AUDIOSET_STD)
    return out, ignored


def audio_arch(model: Any) -> dict[str, Any]:
    """timm ViT arguments of a maezoo Audio-MAE (its ``target_frames`` x ``mel_bins`` input)."""
    tok, enc = model.tokenizer, model.encoder
    d = tok.embed_dim
    return {"img_size": [int(tok.target_frames), int(tok.mel_bins)], "patch_size": tok.patch_size[0], "in_chans": 1,
            "embed_dim": d, "depth": len(enc.blocks), "num_heads": enc.blocks[0].attn.num_heads,
            "mlp_ratio": enc.blocks[0].mlp.fc1.out_features / d}


def write_folder(state: dict[str, Tensor], arch: dict[str, Any], dst: Path, norm: tuple[float, float]) -> Path:
    """A timm ``local-dir`` folder of a maezoo Audio-MAE encoder (the sin-cos table written for its grid)."""
    from safetensors.torch import save_file

    p = arch["patch_size"]
    grid = (arch["img_size"][0] // p, arch["img_size"][1] // p)
    pivot = vit.maezoo_to_pivot({k: v for k, v in state.items() if not k.startswith("tokenizer.norm_")}, grid,
                                decoder=False)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(pivot, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = timm_config({**arch, "img_size": arch["img_size"][0]})
    cfg["model_args"]["img_size"] = arch["img_size"]
    cfg["pretrained_cfg"].update(input_size=[1, *arch["img_size"]], mean=[norm[0]], std=[norm[1]], tag="maezoo_audiomae",
                                 first_conv="patch_embed.proj")
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


__all__ = ["audio_arch", "matches", "pivot_to_maezoo", "to_pivot", "write_folder"]
