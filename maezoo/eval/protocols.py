"""Downstream protocols as a registered kind: each is a function ``(model, data, settings, env) -> ProtocolOutput``.

A recipe lists protocols by name in ``stages:`` and configures each in a section of its own (``knn:``,
``linprobe:``, ``finetune:`` ...), validated against the protocol's ``Settings`` dataclass. Systems compose
them; a third-party package adds one through the ``maezoo.protocols`` entry-point group::

    @protocol("my_probe", MyProbeSettings)
    def my_probe(model, data, settings, env) -> ProtocolOutput: ...

Built-ins:
    ``knn``               weighted k-NN on frozen pooled features (DINO's protocol)
    ``linprobe``          linear probe on cached frozen features (MAE's protocol)
    ``finetune``          end-to-end fine-tuning (optionally few labels, input masking, multi-view testing)
    ``partial_finetune``  fine-tune the last ``partial_blocks`` blocks only (MAE Fig. 9)
    ``scratch``           the fine-tuning schedule from random initialisation
    ``node_linprobe``     node classification on frozen node embeddings (GraphMAE, Planetoid split)
    ``svm``               graph classification: pooled embeddings, RBF SVM, k-fold CV (GraphMAE, TU sets)
    ``retrieval``         one modality of a pair finds its partner among all partners (:mod:`maezoo.eval.retrieval`)
Any protocol runs on some modalities of paired data with a stage suffix (``linprobe@image``, maezoo.systems.stages).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from maezoo.config import ConfigError, option
from maezoo.eval.features import extract_features, make_loader, split_xy
from maezoo.eval.finetune import FinetuneConfig, finetune
from maezoo.eval.knn import knn_classify, knn_multilabel
from maezoo.eval.linprobe import infer_task, linear_probe, linear_probe_dense
from maezoo.progress import Progress
from maezoo.registry import get, names, register
from maezoo.runtime import to_device


@dataclass
class EvalData:
    """The splits of one dataset, built lazily by ``build(split, transform)`` and cached.

    Splits are ``train``/``val``/``test``; transforms ``eval`` (deterministic), ``finetune`` (augmenting).
    Datasets evaluated by cross-validation (TU graph sets) return every sample for any split.
    """

    build: Callable[[str, str], Dataset]
    label: str = ""
    _cache: dict[tuple[str, str], Dataset] = field(default_factory=dict, repr=False)

    def get(self, split: str, transform: str = "eval") -> Dataset:
        key = (split, transform)
        if key not in self._cache:
            self._cache[key] = self.build(split, transform)
        return self._cache[key]


@dataclass
class ProtocolEnv:
    """How a protocol runs: device, precision, seed, batch size for feature extraction, where to write."""

    device: torch.device
    seed: int = 0
    precision: str = "fp32"
    batch_size: int = 256
    num_workers: int = 0
    run_dir: Path | None = None
    progress: bool = True
    log: Callable[[dict[str, Any]], None] | None = None


@dataclass
class ProtocolOutput:
    """What a protocol measured: ``metrics`` (e.g. ``{"top1": 71.2, "top5": 95.0}``) plus cost and details."""

    metrics: dict[str, float]
    steps: int | None = None
    wall_time_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


ProtocolFn = Callable[[nn.Module, EvalData, Any, ProtocolEnv], ProtocolOutput]


def protocol(name: str, settings: type, *, section: str | None = None, init: str = "pretrained",
             compares_random_init: bool = False, baseline_of: str | None = None) -> Callable[[ProtocolFn], ProtocolFn]:
    """Register ``fn`` as protocol ``name`` with its ``Settings`` dataclass.

    ``section``: the recipe section holding its settings (default ``name``; ``partial_finetune`` and ``scratch``
    share ``finetune``). ``init="random"``: the system passes a randomly initialised model (from scratch).
    ``compares_random_init``: the system also runs it on a random-init model when the recipe asks.
    ``baseline_of``: with ``init="random"``, the protocol whose from-scratch baseline this is; its results are
    reported under that protocol's name with ``init: random`` (``scratch`` is ``finetune``'s), so tables pair them.
    """
    if baseline_of is not None and init != "random":
        raise ValueError(f"protocol {name!r}: baseline_of needs init='random' (a baseline trains from scratch)")

    def deco(fn: ProtocolFn) -> ProtocolFn:
        fn.Settings = settings  # type: ignore[attr-defined]
        fn.section = section or name  # type: ignore[attr-defined]
        fn.init = init  # type: ignore[attr-defined]
        fn.compares_random_init = compares_random_init  # type: ignore[attr-defined]
        fn.baseline_of = baseline_of  # type: ignore[attr-defined]
        return register("protocol", name, fn)

    return deco


def get_protocol(name: str) -> ProtocolFn:
    fn = get("protocol", name)
    for attr in ("Settings", "section", "init"):
        if not hasattr(fn, attr):
            raise ConfigError(f"protocol {name!r} lacks `{attr}`; register it with maezoo.eval.protocols.protocol()")
    return fn


def protocol_sections() -> dict[str, type]:
    """``{section: Settings}`` for every registered protocol (plugins included)."""
    return {get_protocol(n).section: get_protocol(n).Settings for n in names("protocol")}  # type: ignore[attr-defined]


# -- helpers ------------------------------------------------------------------------------------------------
def subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """A seeded random subset of ``n`` samples (``ds`` itself when ``n`` is None or not smaller)."""
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]  # type: ignore[arg-type]
    return _Subset(ds, idx.tolist())


class _Subset(Subset):
    """A ``Subset`` that keeps the dataset's ``collate_fn``, ``targets`` and ``num_classes``."""

    def __init__(self, ds: Dataset, indices: list[int]) -> None:
        super().__init__(ds, indices)
        self.collate_fn = getattr(ds, "collate_fn", None)
        self.num_classes = getattr(ds, "num_classes", None)

    @property
    def targets(self) -> list[int]:
        base = targets(self.dataset)
        return [base[i] for i in self.indices]


def targets(ds: Dataset) -> list[int]:
    t = getattr(ds, "targets", None)
    if t is None:
        raise ConfigError(f"few-label fine-tuning needs a dataset with a `targets` attribute ({type(ds).__name__} has none)")
    return list(t)


def few_labels(ds: Dataset, per_class: int | None, seed: int) -> Dataset:
    """``per_class`` samples of every class (seeded), or ``ds`` when ``per_class`` is None."""
    if per_class is None:
        return ds
    y = torch.as_tensor(targets(ds))
    g = torch.Generator().manual_seed(seed)
    keep: list[int] = []
    for c in y.unique().tolist():
        idx = (y == c).nonzero().squeeze(1)
        keep += idx[torch.randperm(len(idx), generator=g)[:per_class]].tolist()
    return _Subset(ds, sorted(keep))


def num_classes(ds: Dataset) -> int:
    n = getattr(ds, "num_classes", None)
    return int(n) if n else int(max(targets(ds))) + 1


def _features(model: nn.Module, ds: Dataset, pool: str, env: ProtocolEnv):
    loader = make_loader(ds, env.batch_size, num_workers=env.num_workers)
    return extract_features(model, loader, pool=pool, device=env.device, amp_dtype=env.precision)  # type: ignore[arg-type]


def _train_test_features(model: nn.Module, data: EvalData, s: Any, env: ProtocolEnv):
    """The (subsets of the) train and test splits and their frozen pooled features, for k-NN and probes."""
    tr, te = subset(data.get("train"), s.train_subset, env.seed), subset(data.get("test"), s.test_subset, env.seed + 1)
    return tr, te, _features(model, tr, s.pool, env), _features(model, te, s.pool, env)


# -- k-NN and linear probe ----------------------------------------------------------------------------------
@dataclass
class KNNSettings:
    k: int = option(20, ge=1)
    temperature: float = option(0.07, gt=0)
    pool: Literal["cls", "mean", "max", "sum"] = "cls"
    #: samples of the train/test split used (None: all)
    train_subset: int | None = option(None, ge=1)
    test_subset: int | None = option(None, ge=1)


@protocol("knn", KNNSettings, compares_random_init=True)
def knn(model: nn.Module, data: EvalData, s: KNNSettings, env: ProtocolEnv) -> ProtocolOutput:
    t0 = time.perf_counter()
    tr, te, (ftr, ytr), (fte, yte) = _train_test_features(model, data, s, env)
    task = infer_task(ytr)
    if task == "multilabel":  # neighbour votes of the multi-hot rows score every class: mAP
        met = knn_multilabel(ftr, ytr, fte, yte, k=s.k, temperature=s.temperature)
    elif task != "classification":
        raise ConfigError(f"knn classifies integer or multi-hot labels; {data.label or 'this dataset'} has {task} "
                          "targets: use the linprobe protocol (MSE and MAE)")
    else:
        met = knn_classify(ftr, ytr, fte, yte, k=s.k, temperature=s.temperature)
    return ProtocolOutput(dict(met), wall_time_s=time.perf_counter() - t0,
                          extra={"train_samples": len(tr), "test_samples": len(te), "task": task})  # type: ignore[arg-type]


@dataclass
class LinprobeSettings:
    epochs: int = option(90, ge=1)
    batch_size: int = option(256, ge=1)
    base_lr: float = option(0.1, gt=0)
    weight_decay: float = option(0.0, ge=0)
    optimizer: Literal["sgd", "lars"] = "sgd"
    pool: Literal["cls", "mean", "max", "sum"] = "cls"
    train_subset: int | None = option(None, ge=1)
    test_subset: int | None = option(None, ge=1)
    #: ``auto`` reads it from the labels: integer classes (top-1/top-5), 0/1 multi-hot rows (mAP), or real
    #: values (regression: MSE and MAE)
    task: Literal["auto", "classification", "multilabel", "regression"] = "auto"


@protocol("linprobe", LinprobeSettings, compares_random_init=True)
def linprobe(model: nn.Module, data: EvalData, s: LinprobeSettings, env: ProtocolEnv) -> ProtocolOutput:
    t0 = time.perf_counter()
    tr, te, (ftr, ytr), (fte, yte) = _train_test_features(model, data, s, env)
    task = infer_task(ytr) if s.task == "auto" else s.task
    progress = Progress(s.epochs, 0, env.progress, max(1, s.epochs // 10), desc="linprobe")

    def log(row: dict[str, Any]) -> None:
        if env.log is not None:
            env.log(row)
        progress.update(int(row["epoch"]) + 1, {"loss": row["train_loss"]})

    if task == "classification":
        met = linear_probe(ftr, ytr, fte, yte, epochs=s.epochs, batch_size=s.batch_size, base_lr=s.base_lr,
                           weight_decay=s.weight_decay, optimizer=s.optimizer, seed=env.seed, log=log)
        metrics = {"top1": met["top1"], "top5": met["top5"]}
    else:
        met = linear_probe_dense(ftr, ytr, fte, yte, task, epochs=s.epochs, batch_size=s.batch_size,  # type: ignore[arg-type]
                                 base_lr=s.base_lr, weight_decay=s.weight_decay, seed=env.seed, log=log)
        metrics = {k: met[k] for k in ("mAP", "mse", "mae") if k in met}
    progress.close()
    return ProtocolOutput(metrics, steps=met["steps"], wall_time_s=time.perf_counter() - t0,
                          extra={"train_samples": len(tr), "test_samples": len(te), "task": task})  # type: ignore[arg-type]


# -- fine-tuning --------------------------------------------------------------------------------------------
@dataclass
class FinetuneSettings(FinetuneConfig):
    """MAE's fine-tuning recipe (:class:`~maezoo.eval.finetune.FinetuneConfig`) plus what data it sees."""

    batch_size: int = option(64, ge=1)
    #: few-label fine-tuning: labels kept per class (None: all labels)
    labels_per_class: int | None = option(None, ge=1)
    #: blocks trained by ``partial_finetune``
    partial_blocks: int = option(1, ge=0)
    test_subset: int | None = option(None, ge=1)


def _finetune(model: nn.Module, data: EvalData, s: FinetuneSettings, env: ProtocolEnv,
              blocks: int | None) -> ProtocolOutput:
    train = few_labels(data.get("train", "finetune"), s.labels_per_class, env.seed)
    test = subset(data.get("test"), s.test_subset, env.seed + 1)
    base = {k: v for k, v in asdict(s).items() if k in FinetuneConfig.__dataclass_fields__}
    precision = env.precision if s.precision == "auto" else s.precision
    cfg = FinetuneConfig(**{**base, "trainable_blocks": blocks, "seed": env.seed, "precision": precision,
                            "progress": env.progress})
    bs = min(s.batch_size, len(train))  # type: ignore[arg-type]
    met = finetune(model, make_loader(train, bs, shuffle=True, seed=env.seed, num_workers=env.num_workers),
                   make_loader(test, env.batch_size, num_workers=env.num_workers), num_classes=num_classes(train),
                   cfg=cfg, device=env.device, log=env.log)
    metrics = {k: met[k] for k in ("top1", "top5", "mAP") if k in met}  # mAP: multi-label data
    return ProtocolOutput(metrics, steps=met["steps"], wall_time_s=met["wall_time_s"],
                          extra={"labelled_samples": len(train), "labels_per_class": s.labels_per_class,  # type: ignore[arg-type]
                                 "trainable_blocks": blocks, "epochs": met["epochs"]})


@protocol("finetune", FinetuneSettings)
def finetune_protocol(model: nn.Module, data: EvalData, s: FinetuneSettings, env: ProtocolEnv) -> ProtocolOutput:
    return _finetune(model, data, s, env, None)


@protocol("partial_finetune", FinetuneSettings, section="finetune")
def partial_finetune(model: nn.Module, data: EvalData, s: FinetuneSettings, env: ProtocolEnv) -> ProtocolOutput:
    return _finetune(model, data, s, env, s.partial_blocks)


@protocol("scratch", FinetuneSettings, section="finetune", init="random", baseline_of="finetune")
def scratch(model: nn.Module, data: EvalData, s: FinetuneSettings, env: ProtocolEnv) -> ProtocolOutput:
    return _finetune(model, data, s, env, None)


# -- graphs -------------------------------------------------------------------------------------------------
@dataclass
class NodeLinprobeSettings:
    lr: float = option(0.01, gt=0)
    weight_decay: float = option(1e-4, ge=0)
    epochs: int = option(300, ge=1)


@protocol("node_linprobe", NodeLinprobeSettings, compares_random_init=True)
def node_linprobe(model: nn.Module, data: EvalData, s: NodeLinprobeSettings, env: ProtocolEnv) -> ProtocolOutput:
    """Logistic regression on frozen node embeddings; test accuracy at the best validation epoch (GraphMAE)."""
    from maezoo.eval.graph_probes import node_linear_probe

    t0 = time.perf_counter()
    graph = data.get("train")[0]
    for key in ("y", "train_mask", "val_mask", "test_mask"):
        if getattr(graph, key, None) is None:
            raise ConfigError(f"node_linprobe needs a graph with `{key}` (a Planetoid-style split); "
                              f"{data.label or 'this dataset'} has none")
    model.eval()
    with torch.no_grad():
        emb = model.encode(to_device(graph, env.device), pool="none")[0].float().cpu()
    y, tr, va, te = (t.cpu() for t in (graph.y, graph.train_mask, graph.val_mask, graph.test_mask))
    r = node_linear_probe(emb, y, tr, va, te, lr=s.lr,
                          weight_decay=s.weight_decay, epochs=s.epochs, seed=env.seed)
    return ProtocolOutput({"accuracy": r["test"]}, steps=s.epochs, wall_time_s=time.perf_counter() - t0,
                          extra={"val": r["val"], "final_epoch_test": r["final_test"], "best_epoch": r["best_epoch"],
                                 "selection": "test accuracy at the probe epoch with the best validation accuracy"})


@dataclass
class SVMSettings:
    #: how node embeddings become one vector per graph
    pool: Literal["mean", "max", "sum"] = "mean"
    folds: int = option(10, ge=2)
    svm_c: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0])

    def __post_init__(self) -> None:
        if not self.svm_c or any(c <= 0 for c in self.svm_c):
            raise ValueError(f"svm.svm_c must list positive values of C, got {self.svm_c}")


@protocol("svm", SVMSettings, compares_random_init=True)
def svm(model: nn.Module, data: EvalData, s: SVMSettings, env: ProtocolEnv) -> ProtocolOutput:
    """Pooled graph embeddings, RBF SVM with ``C`` grid-searched, stratified k-fold CV (GraphMAE's TU protocol)."""
    from maezoo.eval.graph_probes import svm_cv

    t0 = time.perf_counter()
    ds = data.get("train")
    loader = make_loader(ds, env.batch_size, num_workers=env.num_workers)
    feats, labels = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            x, y = split_xy(batch)
            x = to_device(x, env.device)
            feats.append(model.encode(x, pool=s.pool).float().cpu())  # one vector per graph (segment pooling)
            labels.append(torch.as_tensor(y).view(-1))
    acc, std = svm_cv(torch.cat(feats).numpy(), torch.cat(labels).numpy(), folds=s.folds, c_grid=tuple(s.svm_c))
    return ProtocolOutput({"accuracy": acc}, wall_time_s=time.perf_counter() - t0,
                          extra={"fold_std": std, "graphs": len(ds), "pool": s.pool})  # type: ignore[arg-type]


__all__ = [
    "EvalData", "FinetuneSettings", "KNNSettings", "LinprobeSettings", "NodeLinprobeSettings", "ProtocolEnv",
    "ProtocolOutput", "SVMSettings", "few_labels", "get_protocol", "num_classes", "protocol", "protocol_sections",
    "subset",
]
