"""The ``maezoo`` command.

    maezoo list                               recipes and every registered component
    maezoo run RECIPE [key=value ...]         run a recipe (stage=NAME checkpoint=PATH run one stage)
    maezoo run RECIPE --print-config          the fully resolved recipe, every default included
    maezoo resume RUN_DIR                     continue an interrupted run exactly
    maezoo visualize RUN_DIR_OR_CHECKPOINT    reconstruction PNG of held-out samples
    maezoo table RUN_DIR_OR_RESULTS ...       one table: per (dataset, protocol) pre-trained vs baseline and gain
    maezoo bench --suite quick                run (or continue) a benchmark suite, one process per recipe
    maezoo bench report --suite quick         docs/benchmarks.md, the README summary and plots from its records
    maezoo demo                               pre-train a small MAE on bundled digits and evaluate it (< 3 min)
    maezoo convert SRC DST --to maezoo|timm|hf   published checkpoints in and out (maezoo zoo lists them)
    maezoo shard DATASET DST                  WebDataset tar shards from any registered dataset

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

from maezoo.config import ConfigError, list_recipes, recipe_digest

RUN_META = "recipe.json"


def _default_run_dir(recipe: str) -> Path:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        if run_id in ("", "none"):
            raise ConfigError("with torchrun, pass --run-dir (every process must write to the same folder)")
        return Path("runs") / recipe.replace("/", "_") / f"ddp-{run_id}"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / Path(recipe).with_suffix("").as_posix().replace("/", "_") / stamp
    rd, n = base, 1
    while rd.exists():  # two runs started within the same second
        rd, n = base.with_name(f"{stamp}-{n}"), n + 1
    return rd


#: what makes a folder a run's (or part of one): reusing it by accident would mix or overwrite them
RUN_MARKERS = (RUN_META, "config.yaml", "checkpoints", "model.safetensors", "results.json", "metrics.jsonl")


def _claim_run_dir(rd: Path, *, resume: bool, overwrite: bool, stage: str | None, checkpoint: Path | None) -> bool:
    """Check that ``rd`` may be written; returns whether this call creates it (so a failure can remove it).

    A folder that holds a run is refused unless this is ``maezoo resume``, ``--overwrite`` (which deletes it),
    or a single-stage evaluation writing its ``results_<stage>.json`` beside the weights it reads.
    """
    if resume:
        if not rd.is_dir():
            raise ConfigError(f"nothing to resume: {rd} does not exist")
        return False
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 checked and claimed it for every process
        return False
    held = [m for m in RUN_MARKERS if (rd / m).exists()]
    evaluating_in_place = stage is not None and checkpoint is not None and checkpoint.resolve() == rd.resolve()
    if held and not evaluating_in_place:
        if not overwrite:
            raise ConfigError(f"{rd} already holds a run ({', '.join(held)}); continue it with `maezoo resume {rd}`, "
                              "choose another --run-dir, or pass --overwrite to delete it and start afresh")
        import shutil

        print(f"maezoo: --overwrite: deleting the run in {rd}", flush=True)
        shutil.rmtree(rd)
    created = not rd.exists()
    rd.mkdir(parents=True, exist_ok=True)
    return created


def _discard_if_empty(rd: Path) -> None:
    """Remove a run folder this command created when it failed before writing anything worth keeping (weights,
    checkpoints, results): a failed start leaves no orphan folder behind."""
    import shutil

    worth = [p for p in rd.rglob("*") if p.is_file() and (p.suffix == ".safetensors" or p.name.startswith("results"))]
    if not worth and rd.is_dir():
        shutil.rmtree(rd, ignore_errors=True)
        if rd.parent.is_dir() and not any(rd.parent.iterdir()):
            rd.parent.rmdir()


def cmd_run(recipe: str, overrides: list[str], run_dir: str | None, resume: bool = False,
            print_config: bool = False, quick: bool = False, overwrite: bool = False) -> int:
    from maezoo.engine.logging import write_provenance
    from maezoo.systems.runner import load_recipe, run_recipe

    loaded = load_recipe(recipe, overrides, quick=quick)  # every variant validated before anything is written
    if print_config:
        import yaml

        for i, (v, doc) in enumerate(zip(loaded.variants, loaded.resolved(), strict=True)):
            head = ("---\n" if i else "") + (f"# dataset: {v.label}\n" if v.label else "")
            print(head + yaml.safe_dump(doc, sort_keys=False), end="")
        return 0
    _check_devices(loaded)
    rd = Path(run_dir) if run_dir else _default_run_dir(recipe)
    main = int(os.environ.get("RANK", "0")) == 0
    resolved = loaded.resolved()
    config = resolved[0] if len(resolved) == 1 else {
        "variants": {v.label: d for v, d in zip(loaded.variants, resolved, strict=True)}}
    if resume:
        _check_same_config(Path(rd), config)
    created = _claim_run_dir(rd, resume=resume, overwrite=overwrite, stage=loaded.stage, checkpoint=loaded.checkpoint)
    try:
        if main and not resume:
            write_provenance(rd, config)
            (rd / RUN_META).write_text(json.dumps({"recipe": recipe, "overrides": overrides, "quick": quick,
                                                   "recipe_sha": recipe_digest(recipe)}, indent=2))
        if main:
            print(f"maezoo: {recipe} ({loaded.system_name}) -> {rd}", flush=True)
            for change in loaded.quick_changes or []:
                print(f"  --quick: {change}", flush=True)
        t0 = time.perf_counter()
        results = run_recipe(loaded, rd, resume=resume)
        from maezoo.engine.distributed import cleanup

        cleanup()  # the ranks of a torchrun launch leave their process group together, then exit
    except BaseException:
        if created and main:
            _discard_if_empty(rd)
        raise
    if main and results:
        from maezoo.results import results_name, write_results

        name = results_name(loaded.stage)
        write_results(rd / name, results, recipe=recipe)
        print(_table(results))
        print(f"wrote {rd / name}  ({time.perf_counter() - t0:.1f}s)")
        figures = sorted(p for p in rd.rglob("*.png") if "checkpoints" not in p.parts)
        if figures:
            print("figures: " + ", ".join(map(str, figures)))
    return 0


def _check_devices(loaded) -> None:
    """A device the recipe names must exist here (checked before any folder is made)."""
    for v in loaded.variants:
        name = str(getattr(getattr(v.cfg, "trainer", None), "device", "auto"))
        if name == "auto" or name == "cpu":
            continue
        import torch

        kind = name.split(":")[0]
        ok = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}.get(kind, lambda: True)()
        if not ok:
            raise ConfigError(f"trainer.device={name}, but this machine has no {kind.upper()} device torch can use; "
                              "set trainer.device=auto (uses a GPU when there is one) or trainer.device=cpu")


def _check_same_config(run_dir: Path, config: dict) -> None:
    """A resume must continue with the settings the run started with (the recipe file may have changed since)."""
    import yaml

    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text())
    now = yaml.safe_load(yaml.safe_dump(config, sort_keys=False))  # the same YAML round trip as the saved file
    if saved != now:
        diff = sorted(_diff_keys(saved, now))[:8]
        raise ConfigError(f"the recipe resolves differently now than when {run_dir} started (changed: "
                          f"{', '.join(diff)}); resuming would mix settings. Restore the recipe, or start a new run")


def _diff_keys(a: object, b: object, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


def _table(results) -> str:
    from maezoo.results import hardware, render_rows

    hw = hardware()
    return render_rows([(results, hw.get("gpu") or hw.get("cpu", "?"))])


def cmd_resume(run_dir: str) -> int:
    rd = Path(run_dir)
    meta = rd / RUN_META
    if not meta.is_file():
        raise ConfigError(f"{rd} is not a maezoo run folder (no {RUN_META}); pass the folder `maezoo run` printed")
    m = json.loads(meta.read_text())
    return cmd_run(m["recipe"], m["overrides"], str(rd), resume=True, quick=bool(m.get("quick")))


def cmd_visualize(target: str, out: str | None, num: int, seed: int) -> int:
    """Figure of a run (or of one of its checkpoints): reconstructions for images, embeddings for graphs."""
    import maezoo
    from maezoo.engine.checkpoint import load_model, resolve_weights
    from maezoo.systems.runner import load_recipe

    path = Path(target)
    run_dir = next((p for p in [path, *path.parents] if (p / RUN_META).is_file()), None)
    if run_dir is None:
        raise ConfigError(f"cannot find the run's {RUN_META} at or above {path}; visualize a run folder or one of its checkpoints")
    if path == run_dir and not (path / "model.safetensors").is_file():  # several datasets or seeds: the first leaf
        leaves = sorted(p.parent for p in run_dir.rglob("model.safetensors") if "checkpoints" not in p.parts)
        path = leaves[0] if leaves else path
    folder = resolve_weights(path).parent
    model, _ = load_model(folder)
    m = json.loads((run_dir / RUN_META).read_text())
    loaded = load_recipe(m["recipe"], m["overrides"])
    rel = folder.relative_to(run_dir).parts
    variant = next((v for v in loaded.variants if v.label and v.label in rel), loaded.variants[0])
    data = variant.cfg.data
    ds = maezoo.build("dataset", data.name, **{**data.args, "split": "test", "transform": "eval"})
    from maezoo.figures import visualizer_key

    viz = maezoo.get("visualizer", visualizer_key(model) or "?")
    if not getattr(viz, "whole_dataset", False):
        from maezoo.data.sampling import spread_over_classes

        ds = spread_over_classes(ds, num, seed)
    dest = Path(out) if out else folder / f"figure_{folder.name}.png"
    viz(model, ds, dest, num=num, seed=seed)
    print(f"wrote {dest}")
    return 0


def cmd_list(verbose: bool = False) -> int:
    import maezoo
    from maezoo import registry

    print("recipes:    " + ", ".join(list_recipes()))
    for kind, items in maezoo.list_components().items():
        label = {"loss": "losses"}.get(kind, kind + "s")
        if not verbose:
            print(f"{label + ':':<12}" + (", ".join(items) or "-"))
            continue
        print(f"{label}:")
        for name, where in registry.sources(kind).items():
            print(f"  {name:<28} {where}")
    return 0


def cmd_demo(run_dir: str | None, overrides: list[str], quick: bool = False, overwrite: bool = False) -> int:
    t0 = time.perf_counter()
    rc = cmd_run("image/mae_digits_demo", overrides, run_dir or str(_default_run_dir("demo")), quick=quick,
                 overwrite=overwrite)
    print(f"demo finished in {time.perf_counter() - t0:.0f}s")
    return rc


def cmd_bench(args: argparse.Namespace) -> int:
    from maezoo.bench import SUITES, get_suite

    if args.action == "list":
        for name, suite in SUITES.items():
            total = sum(e.minutes for e in suite.entries)
            print(f"{name}: {suite.description} (about {total:.0f} min)")
            for e in suite.entries:
                print(f"  {e.name:<28} {e.recipe} {' '.join(e.overrides)}  (~{e.minutes:g} min)")
        return 0
    get_suite(args.suite)
    if args.action == "report":
        from maezoo.bench.report import report

        changed = report(args.suite, Path(args.results_dir), Path(args.docs), Path(args.readme) if args.readme else None,
                         check=args.check)
        if args.check and changed:
            print(f"maezoo: out of date with the records: {', '.join(map(str, changed))}; run "
                  f"`maezoo bench report --suite {args.suite}`", file=sys.stderr)
            return 1
        print("up to date" if not changed else f"wrote {', '.join(map(str, changed))}")
        return 0
    from maezoo.bench.run import run_suite

    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    outcomes = run_suite(args.suite, Path(args.results_dir), Path(args.runs_dir), only=only)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maezoo", description="Masked autoencoders for every modality.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="recipes and registered components")
    ls.add_argument("--verbose", "-v", action="store_true", help="where each component is defined (module:function)")
    r = sub.add_parser("run", help="run a recipe")
    r.add_argument("recipe")
    r.add_argument("overrides", nargs="*", help="key=value (e.g. trainer.max_steps=200, stage=linprobe checkpoint=DIR)")
    r.add_argument("--run-dir", default=None)
    r.add_argument("--print-config", action="store_true", help="print the fully resolved recipe (every default) and exit")
    r.add_argument("--quick", action="store_true", help="every stage on the first dataset and seed, shrunk to about a "
                                                         "minute (prints what it shrank)")
    r.add_argument("--overwrite", action="store_true", help="delete what --run-dir holds and start afresh")
    s = sub.add_parser("resume", help="continue an interrupted run")
    s.add_argument("run_dir")
    v = sub.add_parser("visualize", help="reconstruction PNG of held-out samples")
    v.add_argument("target", help="run folder, checkpoint folder or .safetensors file")
    v.add_argument("--out", default=None)
    v.add_argument("--num", type=int, default=8)
    v.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("table", help="one Markdown table from run folders or results.json files of any modality")
    t.add_argument("paths", nargs="+")
    b = sub.add_parser("bench", help="run a benchmark suite (`maezoo bench --suite quick`) or render its report "
                                     "(`maezoo bench report --suite quick`)")
    b.add_argument("action", nargs="?", choices=["run", "report", "list"], default="run")
    b.add_argument("--suite", default="quick", help="suite name (maezoo bench list)")
    b.add_argument("--only", default=None, help="comma-separated entry names to run")
    b.add_argument("--results-dir", default="benchmarks/results", help="records go to RESULTS_DIR/<suite>/")
    b.add_argument("--runs-dir", default="runs/bench", help="run folders go to RUNS_DIR/<suite>/<entry>")
    b.add_argument("--docs", default="docs/benchmarks.md", help="the page `report` writes")
    b.add_argument("--readme", default="README.md", help="the README whose summary section `report` rewrites ('' for none)")
    b.add_argument("--check", action="store_true", help="report: fail if the page or README differ from the records")
    d = sub.add_parser("demo", help="small MAE on bundled digits, evaluated against random init (< 3 min)")
    d.add_argument("overrides", nargs="*")
    d.add_argument("--run-dir", default=None)
    d.add_argument("--quick", action="store_true", help="a shorter demo (every stage shrunk)")
    d.add_argument("--overwrite", action="store_true", help="delete what --run-dir holds and start afresh")
    from maezoo.hub.cli import add_parser as add_hub_parser

    add_hub_parser(sub)  # maezoo convert, maezoo zoo
    from maezoo import shard_cmd

    shard_cmd.add_parser(sub)  # maezoo shard SRC DST
    return p


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    dist = sys.modules.get("maezoo.engine.distributed")  # imported only where a run could have joined a group
    if dist is not None:
        dist.exit_if_torn_down(code)  # a torchrun rank leaves without interpreter finalisation (see there)
    return code


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # --help answers here, before torch is imported
    from maezoo.engine.trainer import BadDataError, NonFiniteLossError

    if extra:  # key=value overrides may come after options such as --run-dir
        if args.command in ("run", "demo") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "list":
            return cmd_list(args.verbose)
        if args.command == "run":
            return cmd_run(args.recipe, args.overrides, args.run_dir, print_config=args.print_config, quick=args.quick,
                           overwrite=args.overwrite)
        if args.command == "resume":
            return cmd_resume(args.run_dir)
        if args.command == "visualize":
            return cmd_visualize(args.target, args.out, args.num, args.seed)
        if args.command == "table":
            from maezoo.results import render_table

            print(render_table(args.paths))
            return 0
        if args.command == "demo":
            return cmd_demo(args.run_dir, args.overrides, quick=args.quick, overwrite=args.overwrite)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command == "shard":
            from maezoo import shard_cmd

            return shard_cmd.main(args)
        if args.command in ("convert", "zoo"):
            from maezoo.hub.cli import main as hub_main

            return hub_main(args)
    except KeyboardInterrupt:
        # Ctrl-C outside pre-training (which saves a checkpoint and exits by itself): one line, no traceback
        print("maezoo: interrupted (Ctrl-C); a run's pre-training checkpoints are kept: `maezoo resume RUN_DIR` "
              "continues it", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError, KeyError, TypeError, ValueError, NonFiniteLossError, BadDataError,
            FloatingPointError) as exc:
        # user errors: one clear line, no traceback (set MAEZOO_DEBUG=1 for the trace)
        if os.environ.get("MAEZOO_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"maezoo: error: {msg}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
