"""Stages of a recipe: a registered protocol, optionally on some modalities of paired data.

``linprobe@image`` runs the ``linprobe`` protocol on the image part of image + text samples (M3AE's image-only
probe of the pair-trained encoder); ``knn@text`` on the text part; ``retrieval`` on both. The suffix names keys of
the samples' modality dict (``+`` joins several); results carry the stage as their protocol (``linprobe@image``),
and a protocol reported as another's baseline keeps the suffix (``scratch@image`` -> ``finetune@image``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maezoo.config import ConfigError
from maezoo.data.modal import ModalityView
from maezoo.eval.protocols import EvalData, get_protocol
from maezoo.registry import names


def split_stage(stage: str) -> tuple[str, tuple[str, ...] | None]:
    """``"linprobe@image+text"`` -> ``("linprobe", ("image", "text"))``; ``"knn"`` -> ``("knn", None)``."""
    name, sep, mods = stage.partition("@")
    if not sep:
        return name, None
    keep = tuple(m for m in mods.split("+") if m)
    if not keep:
        raise ConfigError(f"stage {stage!r}: name modalities after @ (e.g. linprobe@image)")
    return name, keep


def check_stages(stages: list[str]) -> None:
    valid = ["pretrain", *names("protocol")]
    bad = [s for s in stages if split_stage(s)[0] not in valid or (s.startswith("pretrain") and s != "pretrain")]
    if bad:
        raise ConfigError(f"unknown stage(s) {bad}; valid stages: {', '.join(valid)} (a protocol may take "
                          "@modality, e.g. linprobe@image)")


def stage_protocol(stage: str) -> Callable[..., Any]:
    return get_protocol(split_stage(stage)[0])


def stage_data(data: EvalData, stage: str) -> EvalData:
    """The evaluation data a stage sees: ``data`` itself, or a view keeping the stage's modalities."""
    keep = split_stage(stage)[1]
    if keep is None:
        return data
    return EvalData(lambda split, tf: ModalityView(data.get(split, tf), keep), label=data.label)


def result_protocol(stage: str) -> str:
    """The protocol name results carry (``scratch`` is reported as ``finetune``'s baseline, suffix kept)."""
    name, keep = split_stage(stage)
    base = getattr(get_protocol(name), "baseline_of", None) or name
    return base if keep is None else f"{base}@{'+'.join(keep)}"
