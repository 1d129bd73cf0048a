"""The ``graphmae`` system: pre-train GraphMAE, save it, evaluate it (linear probe or SVM), per seed.

Run folder contents (``ctx.run_dir``):
    ``config.json``                the validated config (written atomically)
    ``config_<NAME>.json``         the settings one dataset ran with, where ``per_dataset`` changes them
    ``model_seed<S>.safetensors``  weights after pre-training, one file per seed (atomic)
    ``model_seed<S>.json``         what is needed to rebuild the model (builder kwargs, dataset)
    ``metrics.jsonl``              one JSON line per epoch (seed, epoch, loss, lr, time) and per evaluation
    ``embeddings_seed<S>.png``     2-D PCA/t-SNE of node embeddings coloured by class (node tasks, first seed)
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from maezoo.engine.system import RunContext
from maezoo.registry import register
from maezoo.results import Result


@dataclass
class DataConfig:
    #: ``planetoid`` (Cora, CiteSeer, PubMed: node classification) or ``tu`` (MUTAG, ...: graph classification)
    kind: Literal["planetoid", "tu"] = "planetoid"
    names: list[str] = field(default_factory=lambda: ["Cora"])
    #: dataset cache folder; default ``data_root()/planetoid`` or ``data_root()/tu``
    root: str | None = None
    #: folder to copy the raw files from when absent in ``root``; default ``../shared/data`` beside the repo
    source: str | None = None
    normalize_features: bool = True
    max_degree: int = 400


@dataclass
class ModelConfig:
    encoder: Literal["gat", "gin"] = "gat"
    decoder: Literal["gat", "gin", "mlp", "linear"] = "gat"
    hidden: int = 512
    num_layers: int = 2
    heads: int = 4
    out_heads: int = 1
    feat_drop: float = 0.2
    attn_drop: float = 0.1
    negative_slope: float = 0.2
    residual: bool = False
    norm: str | None = None
    activation: str = "prelu"
    mask_ratio: float = 0.5
    replace_rate: float = 0.05
    loss: Literal["sce", "mse"] = "sce"
    alpha: float = 3.0


@dataclass
class TrainConfig:
    epochs: int = 1500
    lr: float = 0.001
    weight_decay: float = 2e-4
    #: GraphMAE's per-epoch cosine factor ``(1 + cos(pi * e / epochs)) / 2``
    scheduler: bool = True
    batch_size: int = 32
    #: reshuffle the graphs every epoch (graph tasks); GraphMAE's own loader keeps the dataset order
    shuffle: bool = True
    #: bfloat16 autocast for the forward pass (CPU or CUDA)
    bf16: bool = False
    #: only edges into hidden nodes in the decoder (exact for the loss; see GNNDecoder)
    decode_masked_only: bool = True
    device: str = "cpu"
    threads: int | None = None
    log_every: int = 50


@dataclass
class EvalConfig:
    #: ``linprobe`` for node tasks, ``svm`` for graph tasks
    protocol: Literal["linprobe", "svm"] = "linprobe"
    probe_lr: float = 0.01
    probe_weight_decay: float = 1e-4
    probe_epochs: int = 300
    pooling: Literal["mean", "max", "sum"] = "mean"
    folds: int = 10
    svm_c: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0])
    #: write a 2-D projection of the node embeddings (``pca`` or ``tsne``; ``none`` to skip)
    visualize: Literal["pca", "tsne", "none"] = "tsne"


@dataclass
class GraphMAEConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    #: settings for one dataset, e.g. ``{"MUTAG": {"model": {"hidden": 32}, "train": {"epochs": 20}}}``:
    #: merged over the sections above for that dataset only (GraphMAE tunes each TU set). They take
    #: precedence over the top-level sections; change one on the command line with
    #: ``per_dataset.MUTAG.model.hidden=64``. Entries for datasets not in ``data.names`` are unused.
    per_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_dataset(self, name: str) -> GraphMAEConfig:
        """This config with ``per_dataset[name]`` merged in (itself when there is no entry)."""
        from maezoo.config import ConfigError, from_dict, merge

        entry = self.per_dataset.get(name)
        if not entry:
            return self
        if not isinstance(entry, dict):
            raise ConfigError(f"per_dataset.{name} must be a mapping of sections, got {entry!r}")
        if "per_dataset" in entry or "names" in (entry.get("data") or {}):
            raise ConfigError(f"per_dataset.{name} may not set per_dataset or data.names")
        base = asdict(self)
        base["per_dataset"] = {}
        return from_dict(GraphMAEConfig, merge(base, entry), f"per_dataset.{name}")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_model(model: torch.nn.Module, path: Path, meta: dict[str, Any]) -> None:
    """Weights as safetensors plus a JSON sidecar, both written to a temp file then renamed."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=2).encode())


def load_model(path: Path) -> torch.nn.Module:
    """Rebuild a model saved by :func:`save_model`."""
    from safetensors.torch import load_file

    from maezoo.registry import build

    meta = json.loads(Path(path).with_suffix(".json").read_text())
    model = build("model", "graphmae", **meta["model_kwargs"])
    model.load_state_dict(load_file(str(path)))
    return model


class MetricsLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **row: Any) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


@register("system", "graphmae")
class GraphMAESystem:
    """GraphMAE pre-training and evaluation on Planetoid (linear probe) or TU sets (SVM)."""

    Config = GraphMAEConfig
    modality = "graph"

    def run(self, cfg: GraphMAEConfig, ctx: RunContext) -> list[Result]:
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        run_dir = Path(ctx.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "config.json", json.dumps(asdict(cfg), indent=2).encode())
        log = MetricsLog(run_dir / "metrics.jsonl")
        if not cfg.seeds:
            raise ValueError("seeds must list at least one seed")
        per_name = {name: cfg.for_dataset(name) for name in cfg.data.names}  # all checked before any training
        for name, cfg_n in per_name.items():
            if cfg_n is not cfg:  # the settings this set actually runs with
                atomic_write_bytes(run_dir / f"config_{name}.json", json.dumps(asdict(cfg_n), indent=2).encode())
        results = []
        for name, cfg_n in per_name.items():
            if cfg_n.data.kind == "planetoid":
                results.append(self._run_node(cfg_n, ctx, name, run_dir, log))
            else:
                results.append(self._run_graph(cfg_n, ctx, name, run_dir, log))
        return results

    # -- shared ---------------------------------------------------------------------------------------
    def _model_kwargs(self, cfg: GraphMAEConfig, in_dim: int) -> dict[str, Any]:
        kw = asdict(cfg.model)
        kw["in_dim"] = int(in_dim)
        return kw

    def _build(self, cfg: GraphMAEConfig, in_dim: int) -> torch.nn.Module:
        from maezoo.registry import build

        model = build("model", "graphmae", **self._model_kwargs(cfg, in_dim))
        if hasattr(model.decoder, "masked_only"):
            model.decoder.masked_only = cfg.train.decode_masked_only
        return model.to(cfg.train.device)

    def _checkpoint(self, ctx: RunContext, seed: int) -> Path | None:
        if ctx.stage in ("linprobe", "svm", "eval") and ctx.checkpoint is not None:
            ck = Path(ctx.checkpoint)
            return ck if ck.is_file() else ck / f"model_seed{seed}.safetensors"
        return None

    def _pretrain(self, cfg: GraphMAEConfig, model, batches, seed: int, log: MetricsLog, dataset: str) -> tuple[int, float]:
        """Adam (+ GraphMAE's cosine factor per epoch); returns (optimizer steps, seconds)."""
        tc = cfg.train
        opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        sched = None
        if tc.scheduler:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: (1 + math.cos(e * math.pi / tc.epochs)) * 0.5)
        gen = torch.Generator().manual_seed(seed)
        dev = torch.device(tc.device)
        steps, t0 = 0, time.perf_counter()
        for epoch in range(tc.epochs):
            model.train()
            losses = []
            for batch in batches(epoch, gen):
                batch = batch.to(dev)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=tc.bf16):
                    out = model(batch, generator=gen)
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
                steps += 1
                losses.append(out.loss.detach())
            lr = opt.param_groups[0]["lr"]
            if sched is not None:
                sched.step()
            loss = float(torch.stack(losses).mean())
            if not math.isfinite(loss):
                raise FloatingPointError(f"{dataset} seed {seed}: loss became {loss} at epoch {epoch}")
            log.write(dataset=dataset, seed=seed, epoch=epoch, loss=loss, lr=lr,
                      time_s=round(time.perf_counter() - t0, 3))
            if tc.log_every and (epoch + 1) % tc.log_every == 0:
                print(f"[graphmae] {dataset} seed {seed} epoch {epoch + 1}/{tc.epochs} loss {loss:.4f} "
                      f"({time.perf_counter() - t0:.0f}s)", flush=True)
        return steps, time.perf_counter() - t0

    # -- node classification (Planetoid) --------------------------------------------------------------
    def _run_node(self, cfg, ctx, name, run_dir, log) -> Result:
        from maezoo.graph.data import load_planetoid
        from maezoo.graph.evaluate import linear_probe

        data = load_planetoid(name, cfg.data.root, cfg.data.source, cfg.data.normalize_features)
        dev = torch.device(cfg.train.device)
        data_dev = data.to(dev)
        values, finals, steps_total, t_start = [], [], 0, time.perf_counter()
        for i, seed in enumerate(cfg.seeds):
            set_seed(seed)
            model = self._build(cfg, data.num_features)
            ck = self._checkpoint(ctx, seed)
            if ck is not None:
                from safetensors.torch import load_file

                model.load_state_dict(load_file(str(ck)))
            else:
                steps, _ = self._pretrain(cfg, model, lambda epoch, gen: [data_dev], seed, log, name)
                steps_total += steps
                save_model(model, run_dir / f"model_seed{seed}.safetensors",
                           {"model_kwargs": self._model_kwargs(cfg, data.num_features), "dataset": name, "seed": seed})
            model.eval()
            with torch.no_grad():
                emb = model.encode(data_dev, pool="none")[0].float().cpu()
            ec = cfg.eval
            r = linear_probe(emb, data.y, data.train_mask, data.val_mask, data.test_mask, lr=ec.probe_lr,
                             weight_decay=ec.probe_weight_decay, epochs=ec.probe_epochs, seed=seed)
            log.write(dataset=name, seed=seed, stage="linprobe", **r)
            print(f"[graphmae] {name} seed {seed}: linear probe test {r['test']:.2f} (val {r['val']:.2f}, "
                  f"last epoch {r['final_test']:.2f})", flush=True)
            values.append(r["test"])
            finals.append(r["final_test"])
            if i == 0 and ec.visualize != "none":
                from maezoo.graph.visualize import plot_embeddings

                plot_embeddings(emb, data.y, run_dir / f"embeddings_{name}_seed{seed}.png", method=ec.visualize,
                                title=f"GraphMAE {name} node embeddings (seed {seed})")
        return Result(system="graphmae", modality="graph", dataset=name.lower(), model=f"graphmae_{cfg.model.encoder}",
                      protocol="linprobe", metric="accuracy", values=values, seeds=list(cfg.seeds),
                      steps=steps_total or None, wall_time_s=round(time.perf_counter() - t_start, 1),
                      extra={"final_epoch_test": finals, "epochs": cfg.train.epochs,
                             "selection": "test accuracy at the probe epoch with the best validation accuracy"})

    # -- graph classification (TU) --------------------------------------------------------------------
    def _run_graph(self, cfg, ctx, name, run_dir, log) -> Result:
        from torch_geometric.data import Batch

        from maezoo.graph.data import load_tu
        from maezoo.graph.evaluate import pool_graphs, svm_cv

        graphs, in_dim, _ = load_tu(name, cfg.data.root, cfg.data.source, cfg.data.max_degree)
        bs = cfg.train.batch_size
        dev = torch.device(cfg.train.device)

        def batches(epoch, gen):
            order = (torch.randperm(len(graphs), generator=gen) if cfg.train.shuffle else torch.arange(len(graphs))).tolist()
            return [Batch.from_data_list([graphs[j] for j in order[k:k + bs]]) for k in range(0, len(order), bs)]

        y = np.array([int(g.y) for g in graphs])
        values, stds, steps_total, t_start = [], [], 0, time.perf_counter()
        for seed in cfg.seeds:
            set_seed(seed)
            model = self._build(cfg, in_dim)
            ck = self._checkpoint(ctx, seed)
            if ck is not None:
                from safetensors.torch import load_file

                model.load_state_dict(load_file(str(ck)))
            else:
                steps, _ = self._pretrain(cfg, model, batches, seed, log, name)
                steps_total += steps
                save_model(model, run_dir / f"model_{name}_seed{seed}.safetensors",
                           {"model_kwargs": self._model_kwargs(cfg, in_dim), "dataset": name, "seed": seed})
            model.eval()
            feats = []
            with torch.no_grad():
                for k in range(0, len(graphs), bs):
                    b = Batch.from_data_list(graphs[k:k + bs]).to(dev)
                    node = model.encode(b, pool="none")[0].float()
                    feats.append(pool_graphs(node, b.batch, b.num_graphs, cfg.eval.pooling).cpu())
            x = torch.cat(feats).numpy()
            acc, std = svm_cv(x, y, folds=cfg.eval.folds, c_grid=tuple(cfg.eval.svm_c))
            log.write(dataset=name, seed=seed, stage="svm", accuracy=acc, fold_std=std)
            print(f"[graphmae] {name} seed {seed}: SVM {cfg.eval.folds}-fold accuracy {acc:.2f} ± {std:.2f}", flush=True)
            values.append(acc)
            stds.append(std)
        return Result(system="graphmae", modality="graph", dataset=name.lower(), model=f"graphmae_{cfg.model.encoder}",
                      protocol="svm", metric="accuracy", values=values, seeds=list(cfg.seeds),
                      steps=steps_total or None, wall_time_s=round(time.perf_counter() - t_start, 1),
                      extra={"fold_std": stds, "epochs": cfg.train.epochs, "pooling": cfg.eval.pooling})
