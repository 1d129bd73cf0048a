"""The ``maezoo`` command.

    maezoo list                               recipes and every registered component
    maezoo run RECIPE [key=value ...]         run a recipe (stage=NAME checkpoint=PATH run one stage)
    maezoo resume RUN_DIR                     continue an interrupted run exactly
    maezoo visualize RUN_DIR_OR_CHECKPOINT    reconstruction PNG of held-out samples
    maezoo table RESULTS.json ...             one cross-modality Markdown table
    maezoo demo                               pre-train a small MAE on bundled digits and evaluate it (< 3 min)

Multi-process: ``torchrun --nproc_per_node N -m maezoo run RECIPE --run-dir DIR``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from maezoo.config import (
    ConfigError,
    from_dict,
    list_recipes,
    load_yaml,
    merge,
    parse_overrides,
    resolve_recipe,
    to_dict,
)

RUN_META = "recipe.json"


def _load_system_config(recipe: str, overrides: list[str]) -> tuple[str, Any, Any, dict, dict]:
    path = resolve_recipe(recipe)
    raw = load_yaml(path)
    special = {}
    rest = []
    for o in overrides:
        key = o.split("=", 1)[0]
        if key in ("stage", "checkpoint"):
            special[key] = o.split("=", 1)[1] if "=" in o else ""
        else:
            rest.append(o)
    raw = merge(raw, parse_overrides(rest))
    system_name = raw.pop("system", None)
    if not system_name:
        raise ConfigError(f"{path}: a recipe must name its `system` (e.g. `system: mae`)")
    import maezoo

    system_cls = maezoo.get("system", system_name)
    cfg = from_dict(system_cls.Config, raw)
    return system_name, system_cls, cfg, special, {"system": system_name, **to_dict(cfg)}


def _default_run_dir(recipe: str) -> Path:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        if run_id in ("", "none"):
            raise ConfigError("with torchrun, pass --run-dir (every process must write to the same folder)")
        return Path("runs") / recipe.replace("/", "_") / f"ddp-{run_id}"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / Path(recipe).with_suffix("").as_posix().replace("/", "_") / stamp


def cmd_run(recipe: str, overrides: list[str], run_dir: str | None, resume: bool = False) -> int:
    from maezoo.engine.logging import write_provenance
    from maezoo.engine.system import RunContext
    from maezoo.results import write_results

    system_name, system_cls, cfg, special, resolved = _load_system_config(recipe, overrides)
    rd = Path(run_dir) if run_dir else _default_run_dir(recipe)
    rd.mkdir(parents=True, exist_ok=True)
    main = int(os.environ.get("RANK", "0")) == 0
    if main and not resume:
        write_provenance(rd, resolved)
        (rd / RUN_META).write_text(json.dumps({"recipe": recipe, "overrides": overrides}, indent=2))
    ctx = RunContext(run_dir=rd, recipe=recipe, stage=special.get("stage") or None,
                     checkpoint=Path(special["checkpoint"]) if special.get("checkpoint") else None, resume=resume)
    if main:
        print(f"maezoo: {recipe} ({system_name}) -> {rd}", flush=True)
    t0 = time.perf_counter()
    results = system_cls().run(cfg, ctx)
    if main and results:
        name = "results.json" if not ctx.stage else f"results_{ctx.stage}.json"
        write_results(rd / name, results, recipe=recipe)
        print(_table(results))
        print(f"wrote {rd / name}  ({time.perf_counter() - t0:.1f}s)")
    return 0


def _table(results) -> str:
    lines = ["| protocol | init | metric | value | steps | wall s |", "|---|---|---|---|---|---|"]
    for r in results:
        steps = "" if r.steps is None else r.steps
        wall = "" if r.wall_time_s is None else f"{r.wall_time_s:.1f}"
        lines.append(f"| {r.protocol} | {r.init} | {r.metric} | {r.value:.2f} | {steps} | {wall} |")
    return "\n".join(lines)


def cmd_resume(run_dir: str) -> int:
    rd = Path(run_dir)
    meta = rd / RUN_META
    if not meta.is_file():
        raise ConfigError(f"{rd} is not a maezoo run folder (no {RUN_META}); pass the folder `maezoo run` printed")
    m = json.loads(meta.read_text())
    return cmd_run(m["recipe"], m["overrides"], str(rd), resume=True)


def cmd_visualize(target: str, out: str | None, num: int, seed: int) -> int:
    import maezoo
    from maezoo.engine.checkpoint import load_model, resolve_weights

    path = Path(target)
    folder = resolve_weights(path).parent
    model, spec = load_model(folder)
    run_dir = folder if (folder / RUN_META).is_file() else folder.parent.parent
    if not (run_dir / RUN_META).is_file():
        raise ConfigError(f"cannot find the run's recipe next to {folder}; visualize a run folder or one of its checkpoints")
    m = json.loads((run_dir / RUN_META).read_text())
    _, _, cfg, _, _ = _load_system_config(m["recipe"], m["overrides"])
    ds = maezoo.build("dataset", cfg.data.name, **{**cfg.data.args, "split": "test", "transform": "eval"})
    tok = maezoo.registry.name_of("tokenizer", type(model.tokenizer))
    viz = maezoo.get("visualizer", tok or "?")
    dest = Path(out) if out else run_dir / f"reconstructions_{folder.name}.png"
    viz(model, ds, dest, num=num, seed=seed)
    print(f"wrote {dest}")
    return 0


def cmd_list() -> int:
    import maezoo

    print("recipes:    " + ", ".join(list_recipes()))
    for kind, items in maezoo.list_components().items():
        label = {"loss": "losses"}.get(kind, kind + "s")
        print(f"{label + ':':<12}" + (", ".join(items) or "-"))
    return 0


def cmd_demo(run_dir: str | None, overrides: list[str]) -> int:
    t0 = time.perf_counter()
    rc = cmd_run("image/mae_digits_demo", overrides, run_dir or str(_default_run_dir("demo")))
    print(f"demo finished in {time.perf_counter() - t0:.0f}s")
    return rc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maezoo", description="Masked autoencoders for every modality.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="recipes and registered components")
    r = sub.add_parser("run", help="run a recipe")
    r.add_argument("recipe")
    r.add_argument("overrides", nargs="*", help="key=value (e.g. trainer.max_steps=200, stage=linprobe checkpoint=DIR)")
    r.add_argument("--run-dir", default=None)
    s = sub.add_parser("resume", help="continue an interrupted run")
    s.add_argument("run_dir")
    v = sub.add_parser("visualize", help="reconstruction PNG of held-out samples")
    v.add_argument("target", help="run folder, checkpoint folder or .safetensors file")
    v.add_argument("--out", default=None)
    v.add_argument("--num", type=int, default=8)
    v.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("table", help="one Markdown table from results.json files of any modality")
    t.add_argument("paths", nargs="+")
    d = sub.add_parser("demo", help="small MAE on bundled digits, evaluated against random init (< 3 min)")
    d.add_argument("overrides", nargs="*")
    d.add_argument("--run-dir", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come after options such as --run-dir
        if args.command in ("run", "demo") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "run":
            return cmd_run(args.recipe, args.overrides, args.run_dir)
        if args.command == "resume":
            return cmd_resume(args.run_dir)
        if args.command == "visualize":
            return cmd_visualize(args.target, args.out, args.num, args.seed)
        if args.command == "table":
            from maezoo.results import render_table

            print(render_table(args.paths))
            return 0
        if args.command == "demo":
            return cmd_demo(args.run_dir, args.overrides)
    except (ConfigError, FileNotFoundError, KeyError, TypeError, ValueError) as exc:
        # user errors: one clear line, no traceback (set MAEZOO_DEBUG=1 for the trace)
        if os.environ.get("MAEZOO_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"maezoo: error: {msg}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
