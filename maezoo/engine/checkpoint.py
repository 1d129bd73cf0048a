"""Checkpoints that survive a crash at any moment and resume exactly.

Layout of a run folder::

    run_dir/
      model.safetensors, model.json     # final weights + the JSON needed to rebuild the model
      checkpoints/step_00000500/        # full training state, every N steps and at the end
        model.safetensors
        model.json
        state.pt                        # optimizer, RNG states, step, data position (tensors + plain types)
      checkpoints/latest                # name of the newest complete checkpoint

A checkpoint folder is written under a temporary name and renamed into place, then ``latest`` is
replaced atomically, so a SIGKILL leaves either the previous or the new checkpoint, never half of one; the
temporary files such a kill leaves behind are removed when the next run starts (:func:`remove_temporaries`).
Pruning goes by step number and looks only at steps up to the one just written: step folders of a longer
earlier run in the same folder are never taken for newer ones, and ``latest`` always names a folder that exists.
Loading never unpickles arbitrary objects: weights come from safetensors and ``state.pt`` is read
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CKPT_DIR = "checkpoints"
#: ``.NAME.tmp<pid>``: what an atomic write leaves behind when its process is killed mid-write
_TEMP = re.compile(r"^\..+\.tmp\d+$")
_STEP = re.compile(r"^step_(\d+)$")


def step_of(folder: Path) -> int | None:
    """The step of a checkpoint folder named ``step_<n>``, else ``None``."""
    m = _STEP.match(folder.name)
    return int(m.group(1)) if m else None


def remove_temporaries(run_dir: Path) -> list[Path]:
    """Remove the ``.NAME.tmp<pid>`` files and folders a killed process left in ``run_dir`` and its checkpoints.

    Call it when a run starts or resumes, before anything is written; returns what was removed.
    """
    run_dir = Path(run_dir)
    folders = [run_dir, run_dir / CKPT_DIR, *(p for p in (run_dir / CKPT_DIR).glob("step_*") if p.is_dir())]
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if not _TEMP.match(p.name):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous, de-aliased copy of the weights (safetensors refuses shared storage)."""
    return {k: v.detach().contiguous().clone().cpu() for k, v in unwrap(model).state_dict().items()}


def unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module"):
        model = model.module  # DDP / FSDP wrappers
    return getattr(model, "_orig_mod", model)  # torch.compile


def save_model(model: nn.Module, folder: Path, build_spec: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (``{"name": builder, "kwargs": {...}}``) into ``folder``,
    and the files the builder reads back (:func:`run_files`, e.g. a text model's ``tokenizer.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".model.safetensors.tmp{os.getpid()}"
    save_file(model_state(model), str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / "model.safetensors")
    for fname, text in run_file_texts(model).items():
        _atomic_write_text(folder / fname, text)
    _atomic_write_text(folder / "model.json", json.dumps(build_spec, indent=2))
    return folder / "model.safetensors"


def run_files(builder: Any) -> dict[str, str]:
    """``{builder argument: file name}`` a model builder declares (``builder.run_files``): the file is written
    beside the weights and, when present there, passed back as that argument on loading (a vocabulary)."""
    declared = getattr(builder, "run_files", None) or getattr(getattr(builder, "preset_of", None), "run_files", None)
    return dict(declared or {})


def run_file_texts(model: nn.Module) -> dict[str, str]:
    """The texts a model's tokenizer keeps for its run folder (``tokenizer.vocab_json`` -> ``tokenizer.json``)."""
    text = getattr(getattr(unwrap(model), "tokenizer", None), "vocab_json", None)
    return {"tokenizer.json": text} if isinstance(text, str) else {}


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a registered model from a run folder, a checkpoint folder or a ``.safetensors`` file, or from a
    published checkpoint (official MAE ``.pth``, timm, Hugging Face folder: mapped by :mod:`maezoo.hub`)."""
    from maezoo.hub.io import is_published
    from maezoo.registry import build

    if is_published(path):
        from maezoo.hub import load_pretrained

        return load_pretrained(path, map_location)

    from maezoo.registry import get

    folder = resolve_weights(Path(path)).parent
    spec = json.loads((folder / "model.json").read_text())
    kwargs = dict(spec.get("kwargs", {}))
    for arg, fname in run_files(get("model", spec["name"])).items():
        if (folder / fname).is_file():
            kwargs[arg] = str(folder / fname)
    model = build("model", spec["name"], **kwargs)
    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors"), device=map_location), strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}: weights do not match model {spec['name']!r} (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model, spec


def resolve_weights(path: Path) -> Path:
    """Find ``model.safetensors`` for a run folder, checkpoint folder or file path."""
    if path.is_file() and path.suffix == ".safetensors":
        return path
    if (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest / "model.safetensors"
    raise FileNotFoundError(f"no model.safetensors in {path} (nor a checkpoint under {path / CKPT_DIR})")


def save_checkpoint(
    run_dir: Path, step: int, model: nn.Module, build_spec: dict[str, Any], state: dict[str, Any], keep_last: int = 2
) -> Path:
    """Atomically write the full training state for ``step`` and prune to the newest ``keep_last``.

    Pruning counts only checkpoints up to ``step`` (by step number, the one just written included), so it
    never removes the new checkpoint, whatever other ``step_*`` folders the run folder holds.
    """
    root = run_dir / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    tmp = root / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp, build_spec)
    torch.save(state, tmp / "state.pt")
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_write_text(root / "latest", name)
    for old in _by_step(root, upto=step)[max(1, keep_last):]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _by_step(root: Path, upto: int | None = None, complete: bool = False) -> list[Path]:
    """``step_<n>`` folders under ``root``, newest step first, only those with ``n <= upto`` when given."""
    found = []
    for p in root.glob("step_*"):
        n = step_of(p)
        if n is None or not p.is_dir() or (upto is not None and n > upto):
            continue
        if complete and not (p / "state.pt").is_file():
            continue
        found.append((n, p))
    return [p for _, p in sorted(found, key=lambda t: t[0], reverse=True)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder (the one ``latest`` names when it is complete), or ``None``."""
    done = complete_checkpoints(run_dir)
    return done[0] if done else None


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders that hold a training state, newest first.

    When ``latest`` names a complete checkpoint, it comes first and only those of lower steps follow it: a
    folder of a higher step is a leftover of another (longer) run in the same folder, not this run's history.
    """
    root = Path(run_dir) / CKPT_DIR
    marker = root / "latest"
    named = root / marker.read_text().strip() if marker.is_file() else None
    n = step_of(named) if named is not None else None
    if named is None or n is None or not (named / "state.pt").is_file():
        return _by_step(root, complete=True)
    return [named, *(p for p in _by_step(root, upto=n, complete=True) if p != named)]


def load_latest_valid(run_dir: Path, model: nn.Module) -> tuple[Path, dict[str, Any]]:
    """Load the newest checkpoint that reads back whole into ``model``; returns its folder and training state.

    A damaged checkpoint (truncated weights or state, e.g. a disk that filled up, or a copy cut short) is
    reported on stderr and skipped for the previous complete one, so a resume never dies on it.
    """
    import sys

    cands = complete_checkpoints(run_dir)
    if not cands:
        raise FileNotFoundError(f"nothing to resume: no complete checkpoint under {Path(run_dir) / CKPT_DIR}")
    errors = []
    for cand in cands:
        try:
            weights = load_file(str(cand / "model.safetensors"))
            state = load_state(cand)
            unwrap(model).load_state_dict(weights)
        except Exception as exc:  # safetensors/pickle errors of a damaged file, or mismatched weights
            errors.append(f"{cand.name}: {type(exc).__name__}: {exc}")
            print(f"maezoo: checkpoint {cand} is damaged ({type(exc).__name__}: {exc}); "
                  "trying the previous one", file=sys.stderr, flush=True)
            continue
        if errors:
            print(f"maezoo: resuming from {cand.name} instead (the newer checkpoint(s) could not be read)",
                  file=sys.stderr, flush=True)
        return cand, state
    raise ValueError(f"every checkpoint under {Path(run_dir) / CKPT_DIR} is damaged ({'; '.join(errors)}); "
                     "start the run again without resume")


def load_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
