"""The ``mae`` system: pre-train any registered MAE model on any registered ``(x, label)`` dataset, then
run the downstream protocols the recipe lists, each stage reading the previous stage's checkpoint.

Stages (``stages:`` in a recipe, in this order):
    ``pretrain``           train with the engine, write weights, checkpoints, metrics and the reconstruction figure
    ``knn``                k-NN on frozen features (and on a random-init encoder when ``compare_random_init``)
    ``linprobe``           linear probe on cached frozen features (same comparison)
    ``finetune``           full fine-tuning (optionally on ``labels_per_class`` labels per class)
    ``partial_finetune``   fine-tune only the last ``partial_blocks`` blocks
    ``scratch``            the fine-tuning schedule from random initialisation
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from maezoo.config import ConfigError, to_dict
from maezoo.engine.checkpoint import load_model, resolve_weights
from maezoo.engine.system import RunContext
from maezoo.engine.trainer import Trainer, TrainerConfig, resolve_device
from maezoo.eval.features import extract_features
from maezoo.eval.finetune import FinetuneConfig, finetune
from maezoo.eval.knn import KNNMonitor, knn_classify
from maezoo.eval.linprobe import linear_probe
from maezoo.registry import build, check_kwargs, get, name_of, register
from maezoo.results import Result

STAGES = ("pretrain", "knn", "linprobe", "finetune", "partial_finetune", "scratch")


@dataclass
class DataConfig:
    #: a registered dataset builder returning ``(x, label)`` samples
    name: str = "cifar10"
    #: keyword arguments of the builder (``split`` and ``transform`` are set per stage)
    args: dict[str, Any] = field(default_factory=dict)
    #: pre-train on a random subset of this many training samples (None: all)
    pretrain_subset: int | None = None
    #: samples of the train/test split used by k-NN and the linear probe (None: all)
    eval_train_subset: int | None = None
    eval_test_subset: int | None = None


@dataclass
class ModelConfig:
    name: str = "mae_vit"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class KNNConfig:
    k: int = 20
    temperature: float = 0.07
    pool: str = "cls"


@dataclass
class LinprobeConfig:
    epochs: int = 90
    batch_size: int = 256
    base_lr: float = 0.1
    weight_decay: float = 0.0
    pool: str = "cls"


@dataclass
class MonitorConfig:
    #: run k-NN every N pre-training steps on small subsets (0: off)
    every: int = 0
    train_subset: int = 1000
    test_subset: int = 500
    k: int = 20


@dataclass
class MAESystemConfig:
    seed: int = 0
    dataset_label: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    stages: list[str] = field(default_factory=lambda: ["pretrain", "knn", "linprobe"])
    compare_random_init: bool = True
    knn: KNNConfig = field(default_factory=KNNConfig)
    linprobe: LinprobeConfig = field(default_factory=LinprobeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    #: few-label fine-tuning: labels kept per class (None: all labels)
    labels_per_class: int | None = None
    finetune_batch_size: int = 64
    partial_blocks: int = 1
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    #: samples shown in the reconstruction figure (0: none)
    visualize: int = 8
    eval_batch_size: int = 256
    num_workers: int = 2


@register("system", "mae")
class MAESystem:
    Config = MAESystemConfig
    modality = "any"

    def validate(self, cfg: MAESystemConfig) -> None:
        bad = [s for s in cfg.stages if s not in STAGES]
        if bad:
            raise ConfigError(f"unknown stage(s) {bad}; valid stages: {', '.join(STAGES)}")
        check_kwargs(get("model", cfg.model.name), cfg.model.args, f"model {cfg.model.name!r}")
        check_kwargs(get("dataset", cfg.data.name), {**cfg.data.args, "split": "train", "transform": "eval"},
                     f"dataset {cfg.data.name!r}")

    # -- helpers -----------------------------------------------------------------------------------------
    def _dataset(self, cfg: MAESystemConfig, split: str, transform: str) -> Dataset:
        return build("dataset", cfg.data.name, **{**cfg.data.args, "split": split, "transform": transform})

    def _model(self, cfg: MAESystemConfig, seed: int | None = None):
        torch.manual_seed(cfg.seed if seed is None else seed)
        return build("model", cfg.model.name, **cfg.model.args)

    def _spec(self, cfg: MAESystemConfig) -> dict[str, Any]:
        return {"name": cfg.model.name, "kwargs": cfg.model.args}

    def _loader(self, ds: Dataset, cfg: MAESystemConfig, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        g = torch.Generator().manual_seed(cfg.seed)
        return DataLoader(ds, batch_size=batch_size or cfg.eval_batch_size, shuffle=shuffle, generator=g,
                          num_workers=cfg.num_workers, persistent_workers=False, drop_last=shuffle)

    def _subset(self, ds: Dataset, n: int | None, seed: int) -> Dataset:
        if n is None or n >= len(ds):  # type: ignore[arg-type]
            return ds
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]  # type: ignore[arg-type]
        return Subset(ds, idx.tolist())

    def _few_labels(self, ds: Dataset, per_class: int | None, seed: int) -> Dataset:
        if per_class is None:
            return ds
        targets = torch.as_tensor(_targets(ds))
        g = torch.Generator().manual_seed(seed)
        keep = []
        for c in targets.unique().tolist():
            idx = (targets == c).nonzero().squeeze(1)
            keep += idx[torch.randperm(len(idx), generator=g)[:per_class]].tolist()
        return Subset(ds, sorted(keep))

    def _result(self, cfg, ctx, protocol, metrics, init, steps=None, wall=None, extra=None) -> list[Result]:
        label = cfg.dataset_label or cfg.data.name
        modality = self._modality
        rows = []
        for metric in ("top1", "top5"):
            if metric in metrics:
                rows.append(Result(system="mae", modality=modality, dataset=label, model=cfg.model.name,
                                   protocol=protocol, metric=metric, values=[float(metrics[metric])], seeds=[cfg.seed],
                                   init=init, steps=steps, wall_time_s=wall, extra=extra or {}))
        return rows

    # -- the run -----------------------------------------------------------------------------------------
    def run(self, cfg: MAESystemConfig, ctx: RunContext) -> list[Result]:
        self.validate(cfg)
        stages = [ctx.stage] if ctx.stage else list(cfg.stages)
        run_dir = ctx.run_dir
        device = resolve_device(cfg.trainer.device)
        results: list[Result] = []
        pre_steps, pre_wall = None, None

        if "pretrain" in stages:
            model = self._model(cfg)
            train_ds = self._subset(self._dataset(cfg, "train", "pretrain"), cfg.data.pretrain_subset, cfg.seed)
            callbacks = []
            if cfg.monitor.every > 0:
                mon_train = self._subset(self._dataset(cfg, "train", "eval"), cfg.monitor.train_subset, cfg.seed)
                mon_test = self._subset(self._dataset(cfg, "test", "eval"), cfg.monitor.test_subset, cfg.seed)
                monitor = KNNMonitor(self._loader(mon_train, cfg, False), self._loader(mon_test, cfg, False),
                                     every=cfg.monitor.every, k=cfg.monitor.k, pool=cfg.knn.pool)
                callbacks.append(lambda step, m: _prefixed(monitor.maybe_run(m, step), "monitor/knn_"))
            trainer = Trainer(cfg.trainer, seed=cfg.seed)
            summary = trainer.fit(model, train_ds, run_dir, self._spec(cfg), resume=ctx.resume, callbacks=callbacks)
            pre_steps, pre_wall = summary.steps, summary.wall_time_s
            (run_dir / "pretrain_summary.json").write_text(_json(summary.to_dict()))
            print(f"pre-training: {summary.steps} steps in {summary.wall_time_s:.1f}s, "
                  f"{summary.samples_per_s:.1f} samples/s, data wait {summary.data_wait_share:.1%}, "
                  f"final loss {summary.final_loss:.4f}, bad samples {summary.bad_samples}", flush=True)
            if cfg.visualize and _is_main():
                self._visualize(model, cfg, run_dir / "reconstructions.png")
            if not _is_main():
                return []
        if not _is_main():
            return []

        eval_stages = [s for s in stages if s != "pretrain"]
        if not eval_stages:
            return results
        source = ctx.checkpoint or run_dir
        pretrained, _ = load_model(resolve_weights(Path(source)).parent)
        pretrained.to(device)
        self._modality = name_of("tokenizer", type(pretrained.tokenizer)) or "unknown"

        if "knn" in eval_stages or "linprobe" in eval_stages:
            tr = self._subset(self._dataset(cfg, "train", "eval"), cfg.data.eval_train_subset, cfg.seed)
            te = self._subset(self._dataset(cfg, "test", "eval"), cfg.data.eval_test_subset, cfg.seed + 1)
            inits = [("pretrained", pretrained)] + ([("random", self._model(cfg).to(device))] if cfg.compare_random_init else [])
            for init, m in inits:
                for stage in ("knn", "linprobe"):
                    if stage not in eval_stages:
                        continue
                    pool = cfg.knn.pool if stage == "knn" else cfg.linprobe.pool
                    t0 = time.perf_counter()
                    ftr, ytr = extract_features(m, self._loader(tr, cfg, False), pool=pool, device=device)
                    fte, yte = extract_features(m, self._loader(te, cfg, False), pool=pool, device=device)
                    if stage == "knn":
                        met = knn_classify(ftr, ytr, fte, yte, k=cfg.knn.k, temperature=cfg.knn.temperature)
                    else:
                        lp = cfg.linprobe
                        met = linear_probe(ftr, ytr, fte, yte, epochs=lp.epochs, batch_size=lp.batch_size,
                                           base_lr=lp.base_lr, weight_decay=lp.weight_decay, seed=cfg.seed)
                    wall = time.perf_counter() - t0
                    print(f"{stage:>9} [{init:>10}]: top-1 {met['top1']:.2f}%  ({wall:.1f}s)", flush=True)
                    extra = {"train_samples": len(tr), "test_samples": len(te)}
                    if init == "pretrained" and pre_wall is not None:
                        extra["pretrain_wall_time_s"] = pre_wall
                    results += self._result(cfg, ctx, stage, met, init, pre_steps if init == "pretrained" else 0, wall, extra)

        ft_runs = [("finetune", "pretrained", None), ("partial_finetune", "pretrained", cfg.partial_blocks),
                   ("scratch", "random", None)]
        for stage, init, blocks in ft_runs:
            if stage not in eval_stages:
                continue
            train = self._few_labels(self._dataset(cfg, "train", "finetune"), cfg.labels_per_class, cfg.seed)
            test = self._subset(self._dataset(cfg, "test", "eval"), cfg.data.eval_test_subset, cfg.seed + 1)
            if init == "pretrained":
                m, _ = load_model(resolve_weights(Path(source)).parent)
            else:
                m = self._model(cfg)
            fcfg = FinetuneConfig(**{**to_dict(cfg.finetune), "trainable_blocks": blocks, "seed": cfg.seed})
            bs = min(cfg.finetune_batch_size, len(train))
            met = finetune(m, self._loader(train, cfg, True, bs), self._loader(test, cfg, False),
                           num_classes=_num_classes(train), cfg=fcfg, device=device)
            protocol = "finetune" if stage == "scratch" else stage
            print(f"{stage:>9} [{init:>10}]: top-1 {met['top1']:.2f}%  ({met.get('wall_time_s', 0):.1f}s, "
                  f"{len(train)} labelled samples)", flush=True)
            results += self._result(cfg, ctx, protocol, met, init, met.get("steps"), met.get("wall_time_s"),
                                    {"labelled_samples": len(train), "labels_per_class": cfg.labels_per_class,
                                     "trainable_blocks": blocks})
        return results

    def _visualize(self, model, cfg: MAESystemConfig, path: Path) -> Path | None:
        tok_name = name_of("tokenizer", type(model.tokenizer))
        try:
            viz = get("visualizer", tok_name or "")
        except KeyError:
            return None
        return viz(model, self._dataset(cfg, "test", "eval"), path, num=cfg.visualize, seed=cfg.seed)


def _targets(ds: Dataset) -> list[int]:
    if isinstance(ds, Subset):
        base = _targets(ds.dataset)
        return [base[i] for i in ds.indices]
    t = getattr(ds, "targets", None)
    if t is None:
        raise ConfigError("few-label fine-tuning needs a dataset with a `targets` attribute")
    return list(t)


def _num_classes(ds: Dataset) -> int:
    while isinstance(ds, Subset):
        ds = ds.dataset
    n = getattr(ds, "num_classes", None)
    return int(n) if n else int(max(_targets(ds))) + 1


def _prefixed(d: dict | None, prefix: str) -> dict | None:
    return {f"{prefix}{k}": v for k, v in d.items()} if d else None


def _json(d: dict) -> str:
    import json

    return json.dumps(d, indent=2)


def _is_main() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
