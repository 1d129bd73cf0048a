"""The ``mae`` system: pre-train any registered model on any registered dataset through the engine's Trainer,
then run the registered protocols the recipe lists, each reading the pre-trained weights.

It serves every modality (images, graphs, and whatever a plugin registers): a modality brings a model builder,
a dataset builder ``(split, transform, **args)`` and optionally a visualiser; nothing here is modality-specific.
Datasets may carry ``collate_fn`` (non-tensor samples), ``model_kwargs`` (e.g. a graph's feature width, passed
to the model builder unless the recipe sets it), ``targets`` and ``num_classes``.

Recipe sections (see ``docs/recipes.md``): ``model``, ``data``, ``trainer``, ``stages``, ``seeds``, ``eval``,
``monitor``, ``visualize`` and one section per protocol that needs settings (``knn``, ``linprobe``,
``finetune``, ``node_linprobe``, ``svm``, ...).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from maezoo.config import ConfigError, check_args, from_dict, option, to_dict
from maezoo.core.masking import build_masking
from maezoo.core.types import Split, Transform
from maezoo.data.sampling import spread_over_classes
from maezoo.engine.checkpoint import load_model, resolve_weights
from maezoo.engine.logging import MetricsLogger
from maezoo.engine.trainer import Trainer, TrainerConfig
from maezoo.eval.features import make_loader
from maezoo.eval.heldout import HeldoutMonitor
from maezoo.eval.knn import KNNMonitor
from maezoo.eval.metrics import higher_is_better
from maezoo.eval.protocols import EvalData, ProtocolEnv, protocol_sections, subset
from maezoo.figures import visualizer_key
from maezoo.registry import build, check_kwargs, get, name_of, register
from maezoo.results import Result
from maezoo.runtime import resolve_device, resolve_precision, resolve_threads, set_threads
from maezoo.systems.base import RunContext
from maezoo.systems.stages import check_stages, result_protocol, stage_data, stage_protocol


@dataclass
class ModelSpec:
    #: a registered model builder (``maezoo list`` shows them)
    name: str = "mae_vit"
    #: its keyword arguments; ``model.args={...}`` on the command line replaces them all
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSpec:
    #: a registered dataset builder taking ``split`` and ``transform``
    name: str = "digits"
    #: its keyword arguments (``split`` and ``transform`` are set per stage)
    args: dict[str, Any] = field(default_factory=dict)
    #: the dataset's name in results (default: ``args.name`` or ``name``)
    label: str | None = None
    #: pre-train on a random subset of this many training samples (None: all)
    pretrain_subset: int | None = option(None, ge=1)


@dataclass
class EvalSettings:
    #: batch size of feature extraction and testing
    batch_size: int = option(256, ge=1)
    num_workers: int = option(0, ge=0)
    #: also run the protocols that compare (k-NN, linear probe) on a randomly initialised model
    compare_random_init: bool = True
    #: progress with an ETA for protocols that train (fine-tuning)
    progress: bool = True


@dataclass
class MonitorSettings:
    #: run k-NN every N pre-training steps on small subsets (0: off)
    every: int = option(0, ge=0)
    train_subset: int = option(1000, ge=1)
    test_subset: int = option(500, ge=1)
    k: int = option(20, ge=1)
    pool: Literal["cls", "mean"] = "cls"
    #: score the pre-training objective on held-out (test split) samples every N steps, at fixed masks (0: off);
    #: discrete targets (text) also give masked-token accuracy and perplexity (:mod:`maezoo.eval.heldout`)
    heldout_every: int = option(0, ge=0)
    heldout_subset: int = option(1000, ge=1)


@dataclass
class PublishedRef:
    """A published figure the results table shows beside maezoo's own (never mixed with measured rows)."""

    #: the protocol it compares with (``finetune``, ``linprobe``, ``forecast`` ...)
    protocol: str
    #: the metric name as maezoo reports it (``top1``, ``mse`` ...)
    metric: str
    value: float
    #: where it comes from (paper and table, e.g. ``"VideoMAE (2203.12602) Table 6"``)
    source: str
    #: the published setting when it differs from the recipe's (e.g. ``"ViT-B, 3200 epochs"``)
    setting: str = ""
    #: dataset label it applies to (default: the recipe's); for ``datasets:`` recipes name the entry
    dataset: str | None = None
    #: the ``data.args`` values that make the dataset the published one (e.g. ``{path: ett/ETTh1.csv}``); a run
    #: whose ``data.args`` differ (another CSV through ``data.args.path=``) does not show the figure
    data_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ablation:
    """Another model pre-trained and evaluated in the same run, at the same data and trainer settings (M3AE's
    image-only MAE beside the image + text model): results name it ``<model> (<label>)``."""

    #: overrides of ``model.args`` (e.g. ``{modalities: [image]}``)
    model: dict[str, Any] = field(default_factory=dict)
    #: the stages it runs (default: every stage of the recipe after pre-training)
    stages: list[str] | None = None
    #: its name in results (default: the ablation's key)
    label: str = ""


@dataclass
class RecipeConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    #: ``pretrain`` and registered protocols, in order
    stages: list[str] = field(default_factory=lambda: ["pretrain", "knn", "linprobe"])
    #: every seed runs the whole pipeline; results carry the mean and std over seeds
    seeds: list[int] = field(default_factory=lambda: [0])
    eval: EvalSettings = field(default_factory=EvalSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    #: samples shown in the figure written after pre-training (0: none)
    visualize: int = option(8, ge=0)
    #: published figures to show beside the measured ones (results rows with ``init: published``)
    published: list[PublishedRef] = field(default_factory=list)
    #: other models pre-trained and evaluated in the same run, by name (:class:`Ablation`)
    ablations: dict[str, Ablation] = field(default_factory=dict)
    #: settings of each protocol section, keyed by section name (filled from the recipe's top-level sections)
    protocols: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.data.label or str(self.data.args.get("name") or self.data.name)


@register("system", "mae")
class PretrainSystem:
    """Pre-training through the Trainer, then registered protocols."""

    Config = RecipeConfig

    # -- configuration ------------------------------------------------------------------------------------
    @staticmethod
    def load_config(raw: dict[str, Any]) -> RecipeConfig:
        """Validate a recipe (without ``system``): typed sections, protocol sections by their ``Settings``."""
        raw = dict(raw)
        sections = protocol_sections()
        known = [f for f in RecipeConfig.__dataclass_fields__ if f != "protocols"]
        unknown = sorted(set(raw) - set(known) - set(sections))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid keys: system, {', '.join(known)}, "
                              f"datasets, per_dataset and the protocol sections {', '.join(sorted(sections))}")
        protos = {sec: from_dict(settings, raw.pop(sec, None) or {}, sec) for sec, settings in sections.items()}
        if "protocols" in raw:
            raise ConfigError("`protocols` is not a recipe key; give each protocol its own section (e.g. `knn:`)")
        cfg = from_dict(RecipeConfig, raw)
        cfg.protocols = protos
        PretrainSystem.validate(cfg)
        return cfg

    @staticmethod
    def dump_config(cfg: RecipeConfig) -> dict[str, Any]:
        """The resolved recipe (every default), with the sections of the protocols it runs."""
        d = to_dict(cfg)
        protos = d.pop("protocols")
        stages = [*cfg.stages, *(st for ab in cfg.ablations.values() for st in ab.stages or [])]
        used = {stage_protocol(s).section for s in stages if s != "pretrain"}  # type: ignore[attr-defined]
        d.update({sec: v for sec, v in protos.items() if sec in used})
        return d

    @staticmethod
    def validate(cfg: RecipeConfig) -> None:
        check_stages(cfg.stages)
        for key, ab in cfg.ablations.items():
            check_stages([s for s in ab.stages or [] if s != "pretrain"])
            check_model_args(cfg.model.name, {**cfg.model.args, **ab.model}, f"ablations.{key}.model")
        if not cfg.seeds:
            raise ConfigError("seeds must list at least one seed, e.g. seeds=[0]")
        if len(set(cfg.seeds)) != len(cfg.seeds):
            raise ConfigError(f"seeds must be distinct, got {cfg.seeds}")
        ft = cfg.protocols.get("finetune")
        if ft is not None and ft.masking and any(stage_protocol(s).section == "finetune" for s in cfg.stages if s != "pretrain"):  # type: ignore[attr-defined]
            check_kwargs(get("masking", ft.masking), ft.masking_args, f"finetune.masking {ft.masking!r}")
        try:
            check_kwargs(get("dataset", cfg.data.name), {**cfg.data.args, "split": "train", "transform": "eval"},
                         f"data.args of dataset {cfg.data.name!r}")
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
        check_model_args(cfg.model.name, cfg.model.args)

    # -- helpers ------------------------------------------------------------------------------------------
    def _dataset(self, cfg: RecipeConfig, split: Split, transform: Transform) -> Dataset:
        return build("dataset", cfg.data.name, **{**cfg.data.args, "split": split, "transform": transform})

    def _spec(self, cfg: RecipeConfig) -> dict[str, Any]:
        """Builder name and kwargs: the dataset's ``model_kwargs`` (e.g. ``in_dim``) under the recipe's args."""
        provided = dataset_model_kwargs(cfg.data.name, cfg.data.args)
        return {"name": cfg.model.name, "kwargs": {**provided, **cfg.model.args}}

    def _model(self, spec: dict[str, Any], seed: int, meta: bool = False) -> nn.Module:
        """The model at ``seed``; ``meta``: on the meta device, its initialisation recorded for the Trainer to
        replay shard by shard (``trainer.meta_init``: a large model is never whole in memory)."""
        if meta:
            from maezoo.engine.meta_init import build_on_meta

            return build_on_meta(lambda: build("model", spec["name"], **spec["kwargs"]), seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build("model", spec["name"], **spec["kwargs"])

    # -- the run ------------------------------------------------------------------------------------------
    def run(self, cfg: RecipeConfig, ctx: RunContext) -> list[Result]:
        seed, run_dir = ctx.seed, ctx.run_dir
        stages = [ctx.stage] if ctx.stage else list(cfg.stages)
        spec = self._spec(cfg)
        results: list[Result] = []
        pre: dict[str, Any] = {}
        if "pretrain" in stages:
            pre = self._pretrain(cfg, ctx, spec)
            if not _is_main():
                return []
        eval_stages = [s for s in stages if s != "pretrain"]
        if not eval_stages or not _is_main():
            return results
        source = ctx.checkpoint or run_dir
        folder = resolve_weights(Path(source)).parent
        pretrained, _ = load_model(folder)
        check_vocabulary(pretrained, cfg.data, folder, eval_stages)
        device = resolve_device(cfg.trainer.device)
        if "pretrain" not in stages:
            set_threads(resolve_threads(cfg.trainer.threads, sum(p.numel() for p in pretrained.parameters()), device))
        env = ProtocolEnv(device=device, seed=seed, precision=resolve_precision(cfg.trainer.precision, device),
                          batch_size=cfg.eval.batch_size, num_workers=cfg.eval.num_workers, run_dir=run_dir,
                          progress=cfg.eval.progress)
        data = EvalData(lambda split, tf: self._dataset(cfg, split, tf), label=cfg.label)
        logger = MetricsLogger(run_dir, tensorboard=False)
        results += self._evaluate(cfg, pretrained, spec, eval_stages, data, env, logger, pre, cfg.model.name)
        if ctx.stage is None:
            for key, ab in cfg.ablations.items():
                results += self._ablation(cfg, ctx, spec, key, ab, eval_stages, data, env, logger)
        logger.close()
        if seed == cfg.seeds[0]:
            results += self._published(cfg, _modality(pretrained))
        return results

    def _ablation(self, cfg: RecipeConfig, ctx: RunContext, spec: dict[str, Any], key: str, ab: Ablation,
                  eval_stages: list[str], data: EvalData, env: ProtocolEnv, logger: MetricsLogger) -> list[Result]:
        """Pre-train the ablation's model in ``<run>/ablations/<key>`` (resumable like the main run), then evaluate it
        on its stages (pre-trained only: the random-init rows are the main model's)."""
        folder = ctx.run_dir / "ablations" / key
        spec_ab = {"name": spec["name"], "kwargs": {**spec["kwargs"], **ab.model}}
        print(f"ablation {key!r}: pre-training {cfg.model.name} with {ab.model} in {folder}", flush=True)
        sub = RunContext(run_dir=folder, seed=ctx.seed, resume=ctx.resume)
        pre = self._pretrain(dataclasses.replace(cfg, visualize=0), sub, spec_ab)
        if not _is_main():
            return []
        model, _ = load_model(folder)
        stages = [s for s in (ab.stages or eval_stages) if s != "pretrain"]
        label = f"{cfg.model.name} ({ab.label or key})"
        return self._evaluate(cfg, model, spec_ab, stages, data, env, logger, pre, label, random_init=False)

    def _evaluate(self, cfg: RecipeConfig, pretrained: nn.Module, spec: dict[str, Any], stages: list[str],
                  data: EvalData, env: ProtocolEnv, logger: MetricsLogger, pre: dict[str, Any], model_label: str,
                  random_init: bool = True) -> list[Result]:
        """Each stage's protocol on the pre-trained model (and on a random init where the protocol compares)."""
        pretrained.to(env.device)
        modality, results = _modality(pretrained), []
        for stage in stages:
            fn = stage_protocol(stage)
            settings = cfg.protocols[fn.section]  # type: ignore[attr-defined]
            inits = ["random"] if fn.init == "random" else ["pretrained"]  # type: ignore[attr-defined]
            if random_init and fn.compares_random_init and cfg.eval.compare_random_init:  # type: ignore[attr-defined]
                inits.append("random")
            if not random_init and fn.init == "random":
                continue
            for init in inits:
                model = pretrained if init == "pretrained" else self._model(spec, env.seed).to(env.device)
                env.log = lambda row, st=stage, i=init: logger.log(int(row.get("step", 0)), {
                    f"{st}/{i}/{k}": v for k, v in row.items() if k != "step" and isinstance(v, int | float)})
                out = fn(model, stage_data(data, stage), settings, env)
                shown = "  ".join(f"{k} {v:.2f}" for k, v in out.metrics.items())
                print(f"{stage:>16} [{init:>10}] {model_label} seed {env.seed}: {shown}  ({out.wall_time_s or 0:.1f}s)",
                      flush=True)
                extra = dict(out.extra)
                if init == "pretrained" and pre.get("wall_time_s") is not None:
                    extra["pretrain_wall_time_s"] = pre["wall_time_s"]
                for metric, value in out.metrics.items():
                    results.append(Result(
                        system="mae", modality=modality, dataset=cfg.label.lower(), model=model_label,
                        protocol=result_protocol(stage), metric=metric, values=[float(value)], seeds=[env.seed],
                        init=init, higher_is_better=_higher_is_better(metric),
                        steps=pre.get("steps") if init == "pretrained" else 0, wall_time_s=out.wall_time_s,
                        extra=extra))
        return results

    @staticmethod
    def _published(cfg: RecipeConfig, modality: str) -> list[Result]:
        """The recipe's published references for this dataset, as rows marked ``init: published``."""
        label = cfg.label.lower()
        return [Result(system="mae", modality=modality, dataset=label, model=cfg.model.name, protocol=ref.protocol,
                       metric=ref.metric, values=[ref.value], seeds=[], init="published",
                       higher_is_better=_higher_is_better(ref.metric), steps=None, wall_time_s=None,
                       extra={"source": ref.source, "setting": ref.setting})
                for ref in cfg.published if _is_published_data(ref, cfg.data, label)]

    def _pretrain(self, cfg: RecipeConfig, ctx: RunContext, spec: dict[str, Any]) -> dict[str, Any]:
        run_dir, seed = ctx.run_dir, ctx.seed
        summary_path = run_dir / "pretrain_summary.json"
        if ctx.resume and (run_dir / "model.safetensors").is_file() and summary_path.is_file():
            print(f"pre-training of {run_dir} already finished; skipping it", flush=True)
            done = json.loads(summary_path.read_text())
            return {**done, "wall_time_s": done.get("total_wall_time_s") or done["wall_time_s"]}
        from maezoo.engine.checkpoint import complete_checkpoints

        model = self._model(spec, seed, meta=cfg.trainer.meta_init)
        train_ds = subset(self._dataset(cfg, "train", "pretrain"), cfg.data.pretrain_subset, seed)
        callbacks = []
        if cfg.monitor.every > 0:
            m = cfg.monitor
            tr = subset(self._dataset(cfg, "train", "eval"), m.train_subset, seed)
            te = subset(self._dataset(cfg, "test", "eval"), m.test_subset, seed)
            monitor = KNNMonitor(make_loader(tr, cfg.eval.batch_size), make_loader(te, cfg.eval.batch_size),
                                 every=m.every, k=m.k, pool=m.pool)
            callbacks.append(lambda step, mod: _prefixed(monitor.maybe_run(mod, step), "monitor/knn_"))
        heldout = None
        if cfg.monitor.heldout_every > 0:
            held = subset(self._dataset(cfg, "test", "eval"), cfg.monitor.heldout_subset, seed)
            heldout = HeldoutMonitor(make_loader(held, cfg.eval.batch_size), cfg.monitor.heldout_every, seed)
            callbacks.append(lambda step, mod: _prefixed(heldout.maybe_run(mod, step), "monitor/heldout_"))
        trainer = Trainer(cfg.trainer, seed=seed)
        resume = ctx.resume and bool(complete_checkpoints(run_dir))
        s = trainer.fit(model, train_ds, run_dir, spec, resume=resume, callbacks=callbacks)
        summary = s.to_dict()
        if heldout is not None and heldout.history:
            summary["heldout"] = heldout.history
        if _is_main():
            tmp = summary_path.with_name(".pretrain_summary.json.tmp")
            tmp.write_text(json.dumps(summary, indent=2))
            tmp.replace(summary_path)
            where = (f", steps {s.resumed_from}-{s.steps} in this process (resumed; {s.total_wall_time_s:.1f}s over "
                     "all processes)" if s.resumed_from is not None else "")
            print(f"pre-training: {s.steps} steps in {s.wall_time_s:.1f}s{where}, {s.samples_per_s:.1f} samples/s, "
                  f"data wait {s.data_wait_share:.1%}, final loss {s.final_loss:.4f}, bad samples {s.bad_samples}",
                  flush=True)
            if cfg.visualize and s.steps == trainer.plan(len(train_ds))[0]:  # type: ignore[arg-type]
                self._visualize(model, cfg, run_dir / "reconstructions.png")
        return {**summary, "wall_time_s": s.total_wall_time_s}

    def _visualize(self, model: nn.Module, cfg: RecipeConfig, path: Path) -> Path | None:
        tok_name = visualizer_key(model)
        try:
            viz = get("visualizer", tok_name or "")
        except KeyError:
            print(f"no figure: no visualizer is registered for tokenizer {tok_name!r} (group maezoo.visualizers; "
                  "set visualize=0 to skip this note)", flush=True)
            return None
        path = path.with_name(getattr(viz, "filename", path.name))
        test = self._dataset(cfg, "test", "eval")
        shown = test if getattr(viz, "whole_dataset", False) else spread_over_classes(test, cfg.visualize)
        return viz(model, shown, path, num=cfg.visualize, seed=0)


def check_model_args(name: str, args: dict[str, Any], where: str = "model.args") -> None:
    """``model.args`` checked against the builder's typed signature and declared ranges, and its masking built
    (a cheap object, no tensors), before any folder or dataset exists; raises :class:`ConfigError`."""
    builder = get("model", name)
    check_args(builder, args, where)
    given = {**_defaults(builder), **args}
    if isinstance(given.get("masking"), str) and ("mask_ratio" in given or "masking_args" in given):
        try:
            build_masking(given["masking"], ratio=given.get("mask_ratio"), args=given.get("masking_args"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"model.args.masking={given['masking']!r}: {exc}") from None


def check_vocabulary(model: nn.Module, data: DataSpec, folder: Path, stages: list[str] | None = None) -> None:
    """A text model evaluated on data whose word pieces are not the ones it was trained with reads garbage: refuse it.

    Compares the dataset's vocabulary file (its ``model_kwargs["vocab_file"]``) with the one the model keeps
    (``tokenizer.vocab_json``, written beside its weights as ``tokenizer.json``). Stages that read another
    modality only (``linprobe@image``) do not read text and pass whatever the word pieces.
    """
    kept = getattr(getattr(model, "tokenizer", None), "vocab_json", None)
    if not isinstance(kept, str):
        return
    if stages and all("@" in s and s.split("@", 1)[1] != "text" for s in stages):
        return
    given = dataset_model_kwargs(data.name, data.args).get("vocab_file")
    if given is None or not Path(given).is_file():
        return
    if _pieces(Path(given).read_text()) != _pieces(kept):
        params = inspect.signature(get("dataset", data.name)).parameters
        arg = next((a for a in ("vocab_file", "tokenizer") if a in params), "vocab_file")
        raise ConfigError(f"dataset {data.name!r} encodes text with the word pieces of {given}, but the model in "
                          f"{folder} was trained with others (its tokenizer.json). Fix: give the dataset the model's "
                          f"vocabulary (data.args.{arg}={folder / 'tokenizer.json'}) or "
                          "evaluate a model trained on this data")


def _pieces(tokenizer_json: str) -> Any:
    doc = json.loads(tokenizer_json)
    return doc.get("model", {}).get("vocab", doc)


def dataset_model_kwargs(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The model arguments dataset ``name`` provides (e.g. a graph's ``in_dim``), without building it.

    A dataset builder declares them with a ``model_kwargs(**args) -> dict`` attribute, called with the
    builder's defaults under ``args`` (computed from the arguments or a cheap read); for a builder without one
    (a plugin's), the training split is built and its ``model_kwargs`` attribute read.
    """
    builder = get("dataset", name)
    declared = getattr(builder, "model_kwargs", None)
    if callable(declared):
        return dict(declared(**{**_defaults(builder), **args}))
    ds = build("dataset", name, **{**args, "split": "train", "transform": "pretrain"})
    return dict(getattr(ds, "model_kwargs", None) or {})


def _defaults(fn: Any) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def _is_published_data(ref: PublishedRef, data: DataSpec, label: str) -> bool:
    """Whether ``ref`` was published for this run's dataset: its label and the data arguments it names."""
    if ref.dataset is not None and ref.dataset.lower() != label:
        return False
    return all(data.args.get(k) == v for k, v in ref.data_args.items())


def _higher_is_better(metric: str) -> bool:
    try:
        return higher_is_better(metric)
    except KeyError:  # a plugin protocol's own metric, not registered as a metric
        return True


def _modality(model: nn.Module) -> str:
    tok = getattr(model, "tokenizer", None)
    declared = getattr(tok, "modality", None)  # a tokenizer (a plugin's too) may name its modality
    if isinstance(declared, str) and declared:
        return declared
    mod = type(tok).__module__.split(".")
    if mod[0] == "maezoo" and len(mod) > 2:
        return mod[1]
    return name_of("tokenizer", type(tok)) or "unknown"


def _prefixed(d: dict | None, prefix: str) -> dict | None:
    return {f"{prefix}{k}": v for k, v in d.items()} if d else None


def _is_main() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
