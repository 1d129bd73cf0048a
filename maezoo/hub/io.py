"""Reading published checkpoints safely: ``.pth``/``.bin`` through ``torch.load(weights_only=True)`` only,
``.safetensors`` as they are, and folders holding ``config.json`` beside their weights (Hugging Face, timm).

Nothing here executes code from a file: a pickle that needs a class outside torch's weights-only allowlist
(plus ``argparse.Namespace``, which the official MAE/VideoMAE training scripts store as ``args``) is refused
with an error naming the file and the fix.
"""

from __future__ import annotations

import argparse
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
#: weight files looked up, in order, inside a folder
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pth", "open_clip_pytorch_model.bin")
#: keys a training script wraps its state dict in
WRAPPERS = ("model", "state_dict", "model_state", "module", "net")


class HubError(ValueError):
    """A checkpoint that cannot be read or mapped; the message names the file, what was expected and the fix."""


def refuse_unknown(path: Any, layout: str, unknown: list[str], expected: str, hint: str = "") -> None:
    """Raise :class:`HubError` naming up to six keys of ``path`` outside ``layout`` and what was expected."""
    if unknown:
        more = " ..." if len(unknown) > 6 else ""
        raise HubError(f"{path}: keys outside {layout}: {', '.join(unknown[:6])}{more}; expected only {expected}"
                       + (f". {hint}" if hint else ""))


@dataclass
class Checkpoint:
    """Weights read from a published file or folder.

    ``state``: parameter name -> tensor (wrappers such as ``{"model": ...}`` and a ``module.`` prefix removed);
    ``config``: the ``config.json`` beside the weights, if any; ``wrapper``: the key the weights sat under.
    """

    path: Path
    state: dict[str, Tensor]
    config: dict[str, Any] | None = None
    wrapper: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def is_maezoo_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a maezoo run folder, checkpoint folder or weights file (``model.json`` beside it)."""
    p = Path(path)
    if p.is_file():
        return p.suffix == ".safetensors" and (p.parent / "model.json").is_file()
    return p.is_dir() and ((p / "model.json").is_file() or (p / "checkpoints").is_dir())


def is_published(path: str | Path) -> bool:
    """A file or folder in a published (non-maezoo) layout that :func:`read_checkpoint` can open."""
    p = Path(path)
    if not p.exists() or is_maezoo_checkpoint(p):
        return False
    if p.is_file():
        return p.suffix in (*PICKLE_SUFFIXES, ".safetensors")
    return any((p / f).is_file() for f in (*FOLDER_WEIGHTS, "model.safetensors.index.json"))


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Open a ``.pth``/``.bin``/``.safetensors`` file or a folder with ``config.json`` and weights."""
    p = Path(path)
    if not p.exists():
        raise HubError(f"{p}: no such file or folder; pass a .pth/.safetensors file or a folder with config.json "
                       "and model.safetensors")
    config = None
    if p.is_dir():
        cfg = p / "config.json"
        config = _read_json(cfg) if cfg.is_file() else None
        p = _folder_weights(p)
    elif (p.parent / "config.json").is_file() and p.suffix == ".safetensors":  # a file of a HF/timm folder
        config = _read_json(p.parent / "config.json")
    if p.name == "model.safetensors.index.json":
        raw = _read_sharded(p)
    elif p.suffix == ".safetensors":
        raw = _read_safetensors(p)
    elif p.suffix in PICKLE_SUFFIXES:
        raw = _read_pickle(p)
    else:
        raise HubError(f"{p}: unknown checkpoint format {p.suffix!r}; expected one of "
                       f"{', '.join((*PICKLE_SUFFIXES, '.safetensors'))} or a folder with config.json + weights")
    state, wrapper, extra = _unwrap(raw, p)
    return Checkpoint(path=p, state=state, config=config, wrapper=wrapper, extra=extra)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HubError(f"{path}: unreadable config.json ({exc}); re-download or re-export the folder") from None


def _folder_weights(folder: Path) -> Path:
    for name in (*FOLDER_WEIGHTS, "model.safetensors.index.json"):
        if (folder / name).is_file():
            return folder / name
    raise HubError(f"{folder}: no weights found; expected one of {', '.join(FOLDER_WEIGHTS)} (or a sharded "
                   "model.safetensors.index.json) beside config.json")


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError: header or data cut short, not a safetensors file
        raise HubError(f"{path}: not a readable .safetensors file ({type(exc).__name__}: {exc}); the file is "
                       "probably truncated (an interrupted download or copy): download or export it again") from None


def _read_sharded(index: Path) -> dict[str, Tensor]:
    shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
    if not shards:
        raise HubError(f"{index}: the index names no weight shards; re-download the folder")
    out: dict[str, Tensor] = {}
    for s in shards:
        out.update(_read_safetensors(index.parent / s))
    return out


def _read_pickle(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        why = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else "")
        raise HubError(
            f"{path}: this pickle needs code execution to load ({why}); maezoo opens .pth files with "
            "torch.load(weights_only=True) only and never runs code from a checkpoint. Fix: if you trust the file, "
            "re-save just its tensors, e.g. torch.save(torch.load(f, weights_only=False)['model'], 'clean.pth'), "
            "or use the publisher's .safetensors release") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise HubError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                       "the file is probably truncated (an interrupted download or copy): download it again "
                       f"({path.stat().st_size} bytes on disk)") from None


def _unwrap(raw: Any, path: Path) -> tuple[dict[str, Tensor], str | None, dict[str, Any]]:
    wrapper = None
    extra: dict[str, Any] = {}
    if isinstance(raw, dict):
        for key in WRAPPERS:
            if isinstance(raw.get(key), dict) and any(isinstance(v, Tensor) for v in raw[key].values()):
                extra = {k: v for k, v in raw.items() if k != key and isinstance(v, int | float | str)}
                if isinstance(raw.get("args"), argparse.Namespace):  # the training script's settings
                    extra["args"] = {k: v for k, v in vars(raw["args"]).items() if isinstance(v, int | float | str | bool)}
                raw, wrapper = raw[key], key
                break
    if not isinstance(raw, dict):
        raise HubError(f"{path}: holds a {type(raw).__name__}, not a state dict; expected a mapping of parameter "
                       f"names to tensors (optionally under one of {', '.join(WRAPPERS)})")
    state = {k: v for k, v in raw.items() if isinstance(v, Tensor)}
    if not state:
        raise HubError(f"{path}: no tensors found (top-level keys: {sorted(map(str, raw))[:8]}); expected a state "
                       f"dict, optionally under one of {', '.join(WRAPPERS)}")
    if all(k.startswith("module.") for k in state):  # saved from a DDP-wrapped model
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, wrapper, extra


__all__ = ["Checkpoint", "HubError", "is_maezoo_checkpoint", "is_published", "read_checkpoint"]
