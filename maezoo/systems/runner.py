"""Run a recipe: validate every variant first, then one system run per (dataset, seed), merged results.

Run-folder layout: the run folder itself for one dataset and one seed; ``<dataset>/`` for each entry of
``datasets:``; ``seed_<s>/`` under it when the recipe lists several seeds. Each leaf holds the Trainer's
checkpoints, weights, metrics and its own ``results.json``; the run folder's ``results.json`` merges them.

``resume``: a leaf with ``results.json`` is done and read back; a leaf with a finished pre-training skips it;
a leaf with checkpoints resumes from the newest complete one; others start. ``stage=NAME checkpoint=RUN``
re-evaluates the weights at the same relative place under ``RUN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maezoo.config import ConfigError, apply_overrides, expand_datasets, load_yaml, resolve_recipe
from maezoo.hub import is_published, save_published
from maezoo.registry import get
from maezoo.results import Result, read_results, results_name, write_results
from maezoo.systems.base import RunContext

SPECIAL = ("stage", "checkpoint")


@dataclass
class Variant:
    """One dataset of a recipe: its label (None without ``datasets:``) and validated config."""

    label: str | None
    cfg: Any


@dataclass
class LoadedRecipe:
    name: str
    system_name: str
    system: Any
    variants: list[Variant]
    stage: str | None = None
    checkpoint: Path | None = None
    #: what ``--quick`` shrank (empty for a full run)
    quick_changes: list[str] | None = None

    def resolved(self) -> list[dict[str, Any]]:
        """The fully resolved recipe of each variant, every default included."""
        dump = getattr(self.system, "dump_config", None)
        out = []
        for v in self.variants:
            d = dump(v.cfg) if dump else _asdict(v.cfg)
            out.append({"system": self.system_name, **d})
        return out


def _asdict(cfg: Any) -> dict[str, Any]:
    from maezoo.config import to_dict

    return to_dict(cfg)


def load_recipe(recipe: str, overrides: list[str], quick: bool = False) -> LoadedRecipe:
    """Read, override and validate a recipe (every dataset variant) before any work starts.

    ``quick``: the first dataset and seed only, every stage shrunk (:mod:`maezoo.systems.quick`).
    """
    path = resolve_recipe(recipe)
    raw = load_yaml(path)
    special: dict[str, str] = {}
    rest = []
    for o in overrides:
        key = o.split("=", 1)[0]
        if key in SPECIAL:
            special[key] = o.split("=", 1)[1] if "=" in o else ""
        else:
            rest.append(o)
    # `datasets`/`per_dataset` overrides shape the expansion; every other override then applies to each
    # dataset's recipe, so a command-line value wins over the recipe's per_dataset settings
    early = [o for o in rest if o.split("=", 1)[0].split(".")[0] in ("datasets", "per_dataset", "system")]
    late = [o for o in rest if o not in early]
    raw = apply_overrides(raw, early)
    if raw.get("datasets") is not None and any(o.split("=", 1)[0] in ("data.args.name", "data.args", "data") for o in late):
        raise ConfigError("this recipe runs each entry of `datasets:`; choose them with datasets=[...] rather than "
                          "data.args.name")
    system_name = raw.pop("system", None)
    if not system_name:
        raise ConfigError(f"{path}: a recipe must name its `system` (e.g. `system: mae`)")
    system_cls = get("system", system_name)
    variants = []
    for label, r in expand_datasets(raw):
        r = apply_overrides(r, late)
        try:
            cfg = system_cls.load_config(r) if hasattr(system_cls, "load_config") else _from_dict(system_cls, r)
        except ConfigError as exc:
            raise ConfigError(f"{f'dataset {label}: ' if label else ''}{exc}") from None
        variants.append(Variant(label, cfg))
    stage = special.get("stage") or None
    if stage is not None:
        for v in variants:
            valid = ["pretrain", *getattr(v.cfg, "stages", [])]
            if stage not in valid:
                from maezoo.systems.stages import check_stages

                check_stages([stage])
    ckpt = Path(special["checkpoint"]) if special.get("checkpoint") else None
    if ckpt is not None and not ckpt.exists():
        raise ConfigError(f"checkpoint={ckpt} does not exist; pass a run folder, a checkpoint folder, a .safetensors file "
                          "or a published checkpoint (maezoo zoo)")
    changes = None
    if quick:
        from maezoo.systems.quick import shrink_config

        changes = [f"datasets: {len(variants)} -> 1 ({variants[0].label})"] if len(variants) > 1 else []
        cfg, more = shrink_config(variants[0].cfg)
        variants, changes = [Variant(variants[0].label, cfg)], changes + more
    return LoadedRecipe(recipe, system_name, system_cls, variants, stage, ckpt, changes)


def _from_dict(system_cls: Any, raw: dict[str, Any]) -> Any:
    from maezoo.config import from_dict

    return from_dict(system_cls.Config, raw)


def leaf_dir(run_dir: Path, label: str | None, seed: int, n_seeds: int) -> Path:
    d = run_dir / label if label else run_dir
    return d / f"seed_{seed}" if n_seeds > 1 else d


def run_recipe(loaded: LoadedRecipe, run_dir: Path, resume: bool = False) -> list[Result]:
    """Run every (dataset, seed) of a loaded recipe and return the merged results."""
    system = loaded.system()
    if loaded.checkpoint is not None and is_published(loaded.checkpoint):  # official MAE / timm / HF: maezoo.hub
        loaded.checkpoint = save_published(loaded.checkpoint, run_dir / "pretrained")
    rows: list[Result] = []
    done_name = results_name(loaded.stage)
    for v in loaded.variants:
        seeds = list(getattr(v.cfg, "seeds", [0]))
        for seed in seeds:
            leaf = leaf_dir(run_dir, v.label, seed, len(seeds))
            is_leaf_root = leaf == run_dir
            done = leaf / done_name
            if resume and not is_leaf_root and done.is_file():
                print(f"{leaf}: finished before; reading its results", flush=True)
                rows += read_results(done)[1]
                continue
            ckpt = None
            if loaded.checkpoint is not None:
                ckpt = leaf_dir(loaded.checkpoint, v.label, seed, len(seeds))
                if not ckpt.exists():
                    if len(loaded.variants) > 1 or len(seeds) > 1:
                        raise ConfigError(f"checkpoint={loaded.checkpoint} has no {ckpt.relative_to(loaded.checkpoint)} "
                                          "for this dataset and seed; pass the run folder the recipe wrote, or "
                                          "choose the datasets=[...] and seeds=[...] it holds")
                    ckpt = loaded.checkpoint
            leaf.mkdir(parents=True, exist_ok=True)
            if len(seeds) > 1 or v.label:
                print(f"== {v.label or loaded.name}, seed {seed} -> {leaf}", flush=True)
            ctx = RunContext(run_dir=leaf, seed=seed, stage=loaded.stage, checkpoint=ckpt,
                             resume=resume)
            got = system.run(v.cfg, ctx)
            _barrier()  # ranks > 0 wait here while rank 0 evaluates
            if got and not is_leaf_root:
                write_results(done, got, recipe=loaded.name)
            rows += got
    return merge_seeds(rows)


def _barrier() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def merge_seeds(rows: list[Result]) -> list[Result]:
    """One row per (dataset, model, protocol, init, metric), its values and seeds gathered over seeds."""
    groups: dict[tuple, list[Result]] = {}
    for r in rows:
        key = (r.system, r.modality, r.dataset, r.model, r.protocol, r.init, r.metric)
        if r.init == "published":  # several published figures may share a metric (PatchTST/64, DLinear ...)
            key += (r.extra.get("source"), r.extra.get("setting"), r.value)
        groups.setdefault(key, []).append(r)
    out = []
    for rs in groups.values():
        first = rs[0]
        if len(rs) == 1:
            out.append(first)
            continue
        walls = [r.wall_time_s for r in rs if r.wall_time_s is not None]
        out.append(Result(**{**first.__dict__, "values": [v for r in rs for v in r.values],
                             "seeds": [s for r in rs for s in r.seeds],
                             "wall_time_s": sum(walls) if walls else None,
                             # details differ per seed: one entry per seed, in the order of `seeds`
                             "extra": {"per_seed": [r.extra for r in rs]}}))
    return out


__all__ = ["LoadedRecipe", "Variant", "leaf_dir", "load_recipe", "merge_seeds", "run_recipe"]
