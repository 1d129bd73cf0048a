"""Forecasting protocols: a head reading every encoder token predicts the next ``H`` steps (PatchTST's head).

Modality-agnostic: the model is any :class:`~maezoo.core.mae.MaskedAutoencoder` whose tokenizer maps a
batch ``[B, C, L]`` to a token batch of ``B' = r * B`` rows (``r = C`` for a channel-independent tokenizer,
1 for a channel-mixing one). The forecaster keeps (copies of) its tokenizer and encoder, reads the encoder's
tokens as ``encode(x, pool="none")`` does (``[B', N, D]``), flattens them and maps each row linearly to its
``C * H / r`` future values (time-major, channel fastest), which :meth:`Tokenizer.inverse` puts back on the
input's scale (RevIN de-normalisation) with the context of the same batch.

Data: a dataset of ``(x [C, L], y [C, H])`` windows with ``with_horizon(h)`` (the same split for horizon ``h``;
see :mod:`maezoo.timeseries.data`); splits ``train``/``val``/``test``. MSE and MAE are computed on the
dataset's (standardised) scale over every test window, channel and step, the field's convention. The head and
the encoder are selected on the validation MSE (early stopping with ``patience``), never on test.

Protocols (one recipe section, ``forecast:``):
    ``forecast_linprobe``  head only, frozen encoder (also on a random-init model when the recipe compares)
    ``forecast_finetune``  head only for ``head_epochs``, then end to end for ``epochs`` (PatchTST)
    ``forecast_scratch``   the same model from random initialisation, end to end for ``epochs``
Metrics: ``mse@H`` and ``mae@H`` for every horizon ``H`` (registered, lower is better). With a run folder, each
horizon also writes ``forecast_<mode>_H<h>.png`` (look-back, truth and forecast of the first test window).

Shapes:
    Forecaster(x ``[B, C, L]``) -> ``[B, C, H]``
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from maezoo.config import ConfigError, option
from maezoo.core.mae import MaskedAutoencoder, pool_features
from maezoo.eval.features import make_loader, split_xy
from maezoo.eval.metrics import mae as mae_metric
from maezoo.eval.metrics import metric
from maezoo.eval.metrics import mse as mse_metric
from maezoo.eval.protocols import EvalData, ProtocolEnv, ProtocolOutput, protocol, subset
from maezoo.figures import pyplot, save_figure
from maezoo.optim import cosine_lr, set_lr
from maezoo.progress import Progress
from maezoo.registry import names
from maezoo.runtime import autocast
from maezoo.step import OptimStep

#: horizons whose metrics are registered at import (others are registered when a recipe names them)
STANDARD_HORIZONS = (12, 24, 36, 48, 60, 96, 168, 192, 336, 720)


def register_horizon_metrics(horizon: int) -> None:
    """Register ``mse@H`` and ``mae@H`` (lower is better) once."""
    for name, fn in (("mse", mse_metric), ("mae", mae_metric)):
        key = f"{name}@{int(horizon)}"
        if key not in names("metric"):
            metric(key, higher_is_better=False)(lambda p, t, f=fn: f(p, t))


for _h in STANDARD_HORIZONS:
    register_horizon_metrics(_h)


@dataclass
class ForecastSettings:
    """Settings shared by ``forecast_linprobe``, ``forecast_finetune`` and ``forecast_scratch``."""

    horizons: list[int] = field(default_factory=lambda: [96, 192, 336, 720])
    #: end-to-end epochs (``forecast_finetune`` after the head phase; ``forecast_scratch``)
    epochs: int = option(10, ge=1)
    #: head-only epochs (``forecast_linprobe``: all of its training; ``forecast_finetune``: the first phase)
    head_epochs: int = option(10, ge=0)
    #: cap on optimizer steps per epoch (None: the whole training split)
    max_steps_per_epoch: int | None = option(None, ge=1)
    batch_size: int = option(64, ge=1)
    #: learning rate of end-to-end training
    lr: float = option(1e-4, gt=0)
    #: learning rate of head-only training
    head_lr: float = option(1e-3, gt=0)
    min_lr: float = option(0.0, ge=0)
    warmup_steps: int = option(0, ge=0)
    weight_decay: float = option(0.0, ge=0)
    head_dropout: float = option(0.0, ge=0, lt=1)
    clip_grad: float | None = option(None, gt=0)
    #: stop a phase after this many epochs without a better validation MSE (None: run every epoch)
    patience: int | None = option(3, ge=1)
    #: windows used: a seeded random subset of train, evenly spaced windows of val/test (None: all)
    train_subset: int | None = option(None, ge=1)
    val_subset: int | None = option(None, ge=1)
    test_subset: int | None = option(None, ge=1)
    #: ``auto``: the run's precision
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    #: write ``forecast_<mode>_H<h>.png`` (look-back, truth and forecast of the first test window) to the run folder
    figure: bool = True

    def __post_init__(self) -> None:
        if not self.horizons or any(int(h) < 1 for h in self.horizons):
            raise ValueError(f"forecast.horizons must list positive horizons, got {self.horizons}")
        self.horizons = [int(h) for h in self.horizons]
        for h in self.horizons:
            register_horizon_metrics(h)


class Forecaster(nn.Module):
    """Tokenizer + encoder of a (pre-trained) MAE and a flatten-linear head (PatchTST's ``Flatten_Head``).

    Args:
        mae: the masked autoencoder (its decoder is not kept; tokenizer and encoder are copied).
        num_tokens: ``N`` tokens per row; rows_per_sample: ``r = B' / B``; channels: ``C``; horizon: ``H``.
    """

    def __init__(self, mae: MaskedAutoencoder, num_tokens: int, rows_per_sample: int, channels: int, horizon: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if (channels * horizon) % rows_per_sample:
            raise ValueError(f"{rows_per_sample} token rows per sample do not split {channels} channels")
        self.tokenizer, self.encoder = copy.deepcopy(mae.tokenizer), copy.deepcopy(mae.encoder)
        self.num_prefix_tokens = int(getattr(self.encoder, "num_prefix_tokens", 0))
        self.rows, self.channels, self.horizon = rows_per_sample, channels, horizon
        dim = int(self.tokenizer.embed_dim)
        self.head = nn.Sequential(nn.Flatten(1), nn.Dropout(dropout),
                                  nn.Linear(num_tokens * dim, channels * horizon // rows_per_sample))

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("head.")]

    def forward(self, x: Tensor) -> Tensor:
        tok = self.tokenizer(x)
        feats = pool_features(self.encoder(tok.tokens, tok.context), self.num_prefix_tokens, "none")
        out = self.head(feats).unsqueeze(1)  # [B', 1, C*H/r]
        out = self.tokenizer.inverse(out, tok.context)
        b, r, c = x.shape[0], self.rows, self.channels
        return out.reshape(b, r, self.horizon, c // r).permute(0, 1, 3, 2).reshape(b, c, self.horizon)


def _spaced(ds: Dataset, n: int | None) -> Dataset:
    """``n`` evenly spaced windows (first and last included), or ``ds`` itself."""
    total = len(ds)  # type: ignore[arg-type]
    if n is None or n >= total:
        return ds
    idx = torch.linspace(0, total - 1, n).round().long().unique().tolist()
    return Subset(ds, idx)


def _horizon_split(data: EvalData, split: str, transform: str, horizon: int) -> Dataset:
    ds = data.get(split, transform)
    fn = getattr(ds, "with_horizon", None)
    if fn is None:
        raise ConfigError(f"the forecast protocols need a dataset of (x [C, L], y [C, H]) windows with with_horizon(h); "
                          f"{data.label or type(ds).__name__} has none (use a maezoo.timeseries dataset such as `series`)")
    return fn(horizon)


@torch.no_grad()
def evaluate_forecast(model: Forecaster, loader: Any, device: torch.device, precision: str = "fp32") -> dict[str, float]:
    """MSE and MAE over every window, channel and step of ``loader`` (float64 sums)."""
    model.eval()
    se = ae = 0.0
    count = 0
    for batch in loader:
        x, y = split_xy(batch)
        x, y = x.to(device), y.to(device)
        with autocast(device, precision):
            pred = model(x)
        err = pred.double() - y.double()
        se += float(err.pow(2).sum())
        ae += float(err.abs().sum())
        count += err.numel()
    if count == 0:
        raise ValueError("forecast evaluation got no windows; check the split lengths and test_subset")
    return {"mse": se / count, "mae": ae / count}


@torch.no_grad()
def save_forecast_figure(model: nn.Module, dataset: Dataset, path: str | Path, index: int = 0, channels: int = 3
                         ) -> Path:
    """Look-back, truth and forecast of window ``index`` for the first ``channels`` channels, as a PNG.

    Shapes: ``model(x [1, C, L]) -> [1, C, H]``; ``dataset[index] = (x [C, L], y [C, H])``
    """
    plt = pyplot()

    x, y = dataset[index]
    model.eval()
    pred = model(x.unsqueeze(0).to(next(model.parameters()).device))[0].float().cpu()
    names = getattr(dataset, "columns", None) or getattr(getattr(dataset, "dataset", None), "columns", None)
    n, lb, h = min(channels, x.shape[0]), x.shape[-1], y.shape[-1]
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.8 * n), squeeze=False)
    for c in range(n):
        ax = axes[c][0]
        ax.plot(range(lb), x[c].numpy(), color="black", lw=0.8, label="look-back")
        ax.plot(range(lb, lb + h), y[c].numpy(), color="black", lw=0.8, ls="--", label="truth")
        ax.plot(range(lb, lb + h), pred[c].numpy(), color="tab:red", lw=1.0, label="forecast")
        ax.set_ylabel(str(names[c]) if names else f"channel {c}", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=7, loc="upper left", ncol=3)
    return save_figure(fig, path, dpi=100)


def _fit(model: Forecaster, params: list[nn.Parameter], train: Dataset, val_loader: Any, s: ForecastSettings,
         epochs: int, lr: float, env: ProtocolEnv, precision: str, phase: str, step0: int = 0) -> int:
    """Train ``params`` for up to ``epochs`` (MSE), keep the weights of the best validation epoch. Returns steps."""
    if epochs <= 0:
        return step0
    loader = make_loader(train, min(s.batch_size, len(train)), shuffle=True, seed=env.seed + step0,  # type: ignore[arg-type]
                         num_workers=env.num_workers)
    per_epoch = min(len(loader), s.max_steps_per_epoch or len(loader))
    total = per_epoch * epochs
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=s.weight_decay)
    stepper = OptimStep(opt, precision, env.device, clip_grad=s.clip_grad, params=params, name=f"forecast {phase}",
                        hint="the inputs are finite, so lower the learning rate (forecast.lr / head_lr) or set "
                             "forecast.clip_grad")
    trained = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)
    best, best_state, bad, step = math.inf, None, 0, step0
    progress = Progress(total, 0, env.progress, max(1, total // 10), desc=f"forecast {phase}")
    for epoch in range(epochs):
        model.train()
        for i, batch in enumerate(loader):
            if i >= per_epoch:
                break
            set_lr(opt, cosine_lr(step - step0, total, lr, s.warmup_steps, s.min_lr))
            x, y = split_xy(batch)
            x, y = x.to(env.device), y.to(env.device)
            with stepper.autocast():
                pred = model(x)
            loss = F.mse_loss(pred.float(), y.float())
            stepper.opt_step(loss, step)
            step += 1
            progress.update(step - step0, {"loss": loss.item()})
        val = evaluate_forecast(model, val_loader, env.device, precision)["mse"]
        if env.log is not None:
            env.log({"step": step, f"{phase}_val_mse": val, f"{phase}_epoch": epoch})
        if val < best:
            best, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if s.patience is not None and bad >= s.patience:
                break
    progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    for p in model.parameters():
        p.requires_grad_(True)
    return step


def run_forecast(model: MaskedAutoencoder, data: EvalData, s: ForecastSettings, env: ProtocolEnv,
                 mode: Literal["linprobe", "finetune", "scratch"]) -> ProtocolOutput:
    """Train and test one forecaster per horizon (see the module docstring)."""
    t0 = time.perf_counter()
    precision = env.precision if s.precision == "auto" else s.precision
    metrics: dict[str, float] = {}
    extra: dict[str, Any] = {"mode": mode, "per_horizon": {}}
    total_steps = 0
    for h in s.horizons:
        th = time.perf_counter()
        train = subset(_horizon_split(data, "train", "finetune", h), s.train_subset, env.seed)
        val = _spaced(_horizon_split(data, "val", "eval", h), s.val_subset)
        test = _spaced(_horizon_split(data, "test", "eval", h), s.test_subset)
        x0 = train[0][0].unsqueeze(0).to(env.device)
        rows = int(model.tokenizer.token_batch_size(x0))
        grid = model.tokenizer.grid(x0)
        f = Forecaster(model, math.prod(grid), rows, int(x0.shape[1]), h, s.head_dropout).to(env.device)
        val_loader = make_loader(val, env.batch_size, num_workers=env.num_workers)
        steps = 0
        if mode in ("linprobe", "finetune"):
            steps = _fit(f, list(f.head.parameters()), train, val_loader, s, s.head_epochs, s.head_lr, env, precision, "head")
        if mode in ("finetune", "scratch"):
            steps = _fit(f, list(f.parameters()), train, val_loader, s, s.epochs, s.lr, env, precision, "end_to_end", steps)
        res = evaluate_forecast(f, make_loader(test, env.batch_size, num_workers=env.num_workers), env.device, precision)
        metrics[f"mse@{h}"], metrics[f"mae@{h}"] = res["mse"], res["mae"]
        if s.figure and env.run_dir is not None:
            save_forecast_figure(f, test, Path(env.run_dir) / f"forecast_{mode}_H{h}.png")
        total_steps += steps
        extra["per_horizon"][str(h)] = {"steps": steps, "train_windows": len(train), "val_windows": len(val),  # type: ignore[arg-type]
                                        "test_windows": len(test), "wall_time_s": time.perf_counter() - th}  # type: ignore[arg-type]
        print(f"  forecast_{mode} H={h}: mse {res['mse']:.4f}  mae {res['mae']:.4f}  ({steps} steps, "
              f"{len(test)} test windows, {time.perf_counter() - th:.0f}s)", flush=True)  # type: ignore[arg-type]
    return ProtocolOutput(metrics, steps=total_steps, wall_time_s=time.perf_counter() - t0, extra=extra)


@protocol("forecast_linprobe", ForecastSettings, section="forecast", compares_random_init=True)
def forecast_linprobe(model: nn.Module, data: EvalData, s: ForecastSettings, env: ProtocolEnv) -> ProtocolOutput:
    return run_forecast(model, data, s, env, "linprobe")  # type: ignore[arg-type]


@protocol("forecast_finetune", ForecastSettings, section="forecast")
def forecast_finetune(model: nn.Module, data: EvalData, s: ForecastSettings, env: ProtocolEnv) -> ProtocolOutput:
    return run_forecast(model, data, s, env, "finetune")  # type: ignore[arg-type]


@protocol("forecast_scratch", ForecastSettings, section="forecast", init="random", baseline_of="forecast_finetune")
def forecast_scratch(model: nn.Module, data: EvalData, s: ForecastSettings, env: ProtocolEnv) -> ProtocolOutput:
    return run_forecast(model, data, s, env, "scratch")  # type: ignore[arg-type]


__all__ = ["ForecastSettings", "Forecaster", "evaluate_forecast", "register_horizon_metrics", "run_forecast",
           "save_forecast_figure"]
