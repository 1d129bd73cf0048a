"""Import: detect a published layout from its keys, map it onto a maezoo model, refuse what does not fit.

Shapes are checked against the model before anything is copied, so a checkpoint of another size or family is
an error naming the file, the first parameters that differ, the model the checkpoint describes and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from maezoo.hub import (
    convmae_official,
    graphmae_official,
    hf_bert,
    hf_patchtst,
    hf_videomae,
    hf_vitmae,
    mae_official,
    timm_audiomae,
    timm_vit,
    videomae_official,
    vit,
)
from maezoo.hub.io import Checkpoint, HubError, read_checkpoint
from maezoo.registry import build

#: every mapping, tried in order (the first whose ``matches`` accepts the keys maps the file); a family's
#: pivot module (its ``PIVOT``, the family itself when it defines ``infer_spec``, else :mod:`maezoo.hub.vit`)
#: turns its pivot into a maezoo state dict and model spec
FAMILIES: tuple[ModuleType, ...] = (hf_vitmae, hf_videomae, hf_patchtst, hf_bert, convmae_official, graphmae_official,
                                    timm_audiomae, mae_official, videomae_official, timm_vit)
#: builders that take the sizes as kwargs (no preset of that name fixes them)
GENERIC = ("mae_vit", "videomae_official", "audiomae", "patchtst_hf", "bert", "convmae", "graphmae")
#: the builder kwargs an error names to describe what a checkpoint holds
DESCRIBED = ("embed_dim", "embed_dims", "depth", "depths", "patch_size", "patch_sizes", "patch_len", "in_chans",
             "vocab_size")
#: maezoo's MAE layer norms (the official MAE's eps)
MAEZOO_LN_EPS = 1e-6


@dataclass
class Imported:
    """A published checkpoint mapped to maezoo names, with the model spec its shapes describe.

    ``spec``: ``{"name": ..., "kwargs": {...}}`` as in ``model.json``; ``ignored``: source keys left out (a
    classifier head); ``notes``: what the mapping decided (decoder present or initialised, eps kept ...);
    ``layer_norm_eps``: set on every layer norm of the model; ``norm_eps``: then on the named ones.
    """

    state: dict[str, Tensor]
    spec: dict[str, Any]
    family: str
    path: Path
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    layer_norm_eps: float | None = None
    norm_eps: dict[str, float] = field(default_factory=dict)

    @property
    def preset(self) -> str:
        name = self.spec["name"]
        return vit.preset_name(self.spec["kwargs"]) if name == "mae_vit" else name


def detect(ckpt: Checkpoint) -> ModuleType:
    """The family whose layout the checkpoint's keys follow; an error listing every expected layout otherwise."""
    for fam in FAMILIES:
        if fam.matches(ckpt):
            return fam
    keys = sorted(ckpt.state)
    shown = ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "")
    expected = "\n".join(f"  {fam.NAME}: {fam.EXPECTED}" for fam in FAMILIES)
    raise HubError(f"{ckpt.path}: unknown checkpoint layout (keys: {shown}). Expected one of:\n{expected}\n"
                   "Fix: pass a checkpoint of a supported family (maezoo zoo lists them), or a maezoo run folder")


def import_checkpoint(source: str | Path | Checkpoint, **overrides: Any) -> Imported:
    """Read and map a published checkpoint; ``overrides`` replace inferred builder kwargs (e.g. ``num_heads``)."""
    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source)
    fam = detect(ckpt)
    pivot = fam if hasattr(fam, "infer_spec") else getattr(fam, "PIVOT", vit)
    pv = fam.to_pivot(ckpt)
    spec = pivot.infer_spec(pv)
    spec["kwargs"].update(overrides)
    state, ignored = pivot.pivot_to_maezoo(pv)
    notes = list(pv.notes) + ([f"ignored {len(ignored)} key(s): {', '.join(ignored[:4])}"] if ignored else [])
    eps = pv.layer_norm_eps
    if eps is not None and abs(eps - MAEZOO_LN_EPS) > 1e-12:
        notes.append(f"layer_norm_eps {eps:g} kept from config.json (maezoo builds 1e-6)")
    else:
        eps = None
    norm_eps = {}
    dec_eps = getattr(pv, "decoder_norm_eps", None)
    if dec_eps is not None and dec_eps != (eps or MAEZOO_LN_EPS):
        norm_eps["decoder.norm"] = float(dec_eps)
        notes.append(f"decoder.norm eps {dec_eps:g} kept (the source builds that norm with it)")
    return Imported(state=state, spec=spec, family=fam.NAME, path=ckpt.path, ignored=ignored, notes=notes,
                    layer_norm_eps=eps, norm_eps=norm_eps)


def load_into(model: nn.Module, imp: Imported, model_name: str | None = None) -> list[str]:
    """Copy the imported weights into ``model`` after checking every shape; returns the notes.

    Parameters the checkpoint does not hold must all belong to the decoder (an encoder-only release): the
    decoder then keeps its initialisation. Anything else missing, unexpected or of another shape is an error.
    """
    own = model.state_dict()
    label = model_name or type(model).__name__
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in imp.state.items() if k in own and own[k].shape != v.shape]
    unexpected = [k for k in imp.state if k not in own]
    missing = [k for k in own if k not in imp.state and not k.startswith("decoder.")]
    if wrong or unexpected or missing:
        detail = "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in wrong[:3])
        if unexpected:
            detail += f"{'; ' if detail else ''}not in the model: {', '.join(unexpected[:3])}"
        if missing:
            detail += f"{'; ' if detail else ''}not in the checkpoint: {', '.join(missing[:3])}"
        kw = imp.spec["kwargs"]
        described = ", ".join(f"{k}={kw[k]}" for k in DESCRIBED if k in kw)
        raise HubError(f"{imp.path}: does not fit {label} ({detail}). The checkpoint is a {imp.family} model with "
                       f"{described}; create {imp.preset}{' with those kwargs' if imp.preset in GENERIC else ''} "
                       f"(maezoo.create_model({imp.preset!r}, pretrained=...)), or leave the name out "
                       "(maezoo.hub.load_pretrained(path)) to build what the checkpoint describes")
    model.load_state_dict(imp.state, strict=False)
    notes = list(imp.notes)
    if imp.layer_norm_eps is not None:
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = imp.layer_norm_eps
    for name, eps in imp.norm_eps.items():
        model.get_submodule(name).eps = eps
    if not any(k.startswith("decoder.") for k in imp.state):
        notes.append(f"decoder of {label} randomly initialised (the checkpoint has none)")
    return notes


def load_pretrained(path: str | Path, map_location: str = "cpu", **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Build the maezoo model a published checkpoint describes and load it: ``(model, spec)``."""
    imp = import_checkpoint(path, **overrides)
    model = build("model", imp.spec["name"], **imp.spec["kwargs"])
    load_into(model, imp, imp.spec["name"])
    return model.to(map_location), imp.spec


def save_published(src: str | Path, dst: str | Path) -> Path:
    """Map a published checkpoint and write it as a maezoo folder (``model.safetensors`` + ``model.json``)."""
    from maezoo.hub.exporters import export

    model, spec = load_pretrained(src)
    return export(model, dst, to="maezoo", spec=spec)


def create_pretrained(name: str, pretrained: str | Path, **kwargs: Any) -> nn.Module:
    """``maezoo.create_model(name, pretrained=...)``: build ``name`` with ``kwargs`` and load a published file,
    a folder, or a maezoo run folder (whose weights must fit ``name``)."""
    from maezoo.hub.io import is_maezoo_checkpoint

    model = build("model", name, **kwargs)
    if is_maezoo_checkpoint(pretrained):
        from maezoo.hub.exporters import read_maezoo

        state, _ = read_maezoo(Path(pretrained))
        imp = Imported(state=state, spec={"name": name, "kwargs": kwargs}, family="maezoo", path=Path(pretrained))
    else:
        imp = import_checkpoint(pretrained)
    load_into(model, imp, name)
    return model


__all__ = ["FAMILIES", "Imported", "create_pretrained", "detect", "import_checkpoint", "load_into", "load_pretrained",
           "save_published"]
