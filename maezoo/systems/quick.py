"""``maezoo run RECIPE --quick``: the whole recipe, shrunk to a budget that checks it end to end in about a minute.

Every stage still runs (pre-training and each protocol, with their data, checkpoints, figures and results), on
the first dataset and seed only, with short runs and evaluation subsets. Nothing grows: a value already below
its budget stays. The changes are printed, and the resolved recipe in the run folder records them.

Budgets are keyed by field name, so a plugin protocol whose settings use the same names (``epochs``,
``max_steps``, ``train_subset`` ...) shrinks too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: field name -> the most a quick run keeps (``None`` for "switch off")
PROTOCOL_BUDGET: dict[str, float | None] = {
    "epochs": 1, "head_epochs": 1, "max_steps": 20, "max_steps_per_epoch": 10, "warmup_epochs": 0,
    "warmup_steps": 0, "train_subset": 1000, "val_subset": 256, "test_subset": 500, "folds": 3, "patience": 1,
}
#: per-protocol exceptions: GraphMAE's node probe trains a linear layer on one graph (its epochs are cheap
#: full-batch steps, one epoch would leave it untrained)
SECTION_BUDGET: dict[str, dict[str, float | None]] = {"node_linprobe": {"epochs": 50}}
TRAINER_BUDGET: dict[str, float | None] = {"max_steps": 20, "warmup_steps": 2, "log_every": 5, "ckpt_every": 10}
MAX_SAMPLES_SHOWN = 4


def _shrink(obj: Any, budget: dict[str, float | None], where: str, changes: list[str]) -> Any:
    """A copy of the dataclass ``obj`` with each budgeted field lowered to its budget (never raised)."""
    updates: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value, cap = getattr(obj, f.name), budget.get(f.name, -1)
        if cap == -1 or isinstance(value, bool):
            continue
        if value is None:  # "all": only subsets and step counts get a budget; other None settings stay
            new = cap if f.name.endswith("_subset") or f.name == "max_steps" else None
        elif isinstance(value, int | float):
            new = type(value)(min(value, cap)) if cap is not None else value
        else:
            continue
        if new is not None and new != value:
            updates[f.name] = new
    if updates:
        changes.append(f"{where}: " + ", ".join(f"{k} {getattr(obj, k)} -> {v}" for k, v in updates.items()))
    return dataclasses.replace(obj, **updates) if updates else obj


def shrink_config(cfg: Any) -> tuple[Any, list[str]]:
    """The quick version of one validated ``mae``-system recipe and the list of what changed."""
    if not all(hasattr(cfg, a) for a in ("trainer", "seeds", "monitor", "visualize", "protocols")):
        from maezoo.config import ConfigError

        raise ConfigError(f"--quick shrinks recipes of the `mae` system; {type(cfg).__name__} has no trainer/"
                          "protocol sections to shrink: run it without --quick")
    changes: list[str] = []
    cfg = dataclasses.replace(cfg)  # shallow copy; every changed section is replaced, never mutated
    trainer = cfg.trainer
    if trainer.max_steps is None:  # a run in epochs: a fixed number of steps instead
        trainer = dataclasses.replace(trainer, max_steps=int(TRAINER_BUDGET["max_steps"] or 1), epochs=None)
        changes.append(f"trainer: epochs {cfg.trainer.epochs} -> max_steps {trainer.max_steps}")
    if trainer.warmup_epochs:
        changes.append(f"trainer: warmup_epochs {trainer.warmup_epochs} -> None")
        trainer = dataclasses.replace(trainer, warmup_epochs=None)
    cfg.trainer = _shrink(trainer, TRAINER_BUDGET, "trainer", changes)
    if len(cfg.seeds) > 1:
        changes.append(f"seeds {cfg.seeds} -> {cfg.seeds[:1]}")
        cfg.seeds = cfg.seeds[:1]
    if cfg.monitor.every:
        changes.append(f"monitor: every {cfg.monitor.every} -> 0 (off)")
        cfg.monitor = dataclasses.replace(cfg.monitor, every=0)
    if cfg.visualize > MAX_SAMPLES_SHOWN:
        changes.append(f"visualize {cfg.visualize} -> {MAX_SAMPLES_SHOWN}")
        cfg.visualize = MAX_SAMPLES_SHOWN
    protocols = dict(cfg.protocols)
    for section, settings in protocols.items():
        if section in _sections_run(cfg.stages) and dataclasses.is_dataclass(settings):
            budget = {**PROTOCOL_BUDGET, **SECTION_BUDGET.get(section, {})}
            settings = _shrink(settings, budget, section, changes)
            horizons = getattr(settings, "horizons", None)
            if isinstance(horizons, list) and len(horizons) > 1:
                changes.append(f"{section}: horizons {horizons} -> {horizons[:1]}")
                settings = dataclasses.replace(settings, horizons=horizons[:1])
            protocols[section] = settings
    cfg.protocols = protocols
    return cfg, changes


def _sections_run(stages: list[str]) -> set[str]:
    """The recipe sections of the protocols the stages run (others are left as they are, and not listed)."""
    from maezoo.systems.stages import stage_protocol

    return {stage_protocol(s).section for s in stages if s != "pretrain"}  # type: ignore[attr-defined]


__all__ = ["shrink_config"]
