"""End-to-end fine-tuning, partial fine-tuning and training from scratch (MAE's protocol).

* :class:`Classifier` takes a pre-trained :class:`~maezoo.core.MaskedAutoencoder`, keeps (a copy of)
  its ``tokenizer`` and ``encoder``, discards the decoder, and adds a head. With ``pool="mean"``
  (MAE's fine-tuning default) the patch tokens are averaged and normalised by a new ``fc_norm``; the
  encoder's own final norm is then replaced by ``Identity`` (as MAE's ``global_pool`` does). Drop
  path rates increase linearly with depth, ``0 .. drop_path``.
* :func:`finetune` trains it with AdamW, layer-wise lr decay, per-step warm-up + cosine, gradient
  clipping, label smoothing and (where the tokenizer takes it: images) mixup/cutmix, then reports top-1/top-5 of the final
  model on the test loader (no epoch is selected on test). Multi-label data (multi-hot ``[C]`` float
  targets; ``task``) trains with binary cross-entropy on the logits and reports ``mAP`` instead.
* Partial fine-tuning (MAE paper, Fig. 9): ``trainable_blocks=k`` trains the last ``k`` blocks, the
  final norm and the head; everything before stays frozen.
* From scratch: build a fresh, randomly initialised model with the same builder and call
  :func:`finetune` with the same config (the ``scratch`` protocol).

Shapes:
    Classifier(x) -> logits ``[B, C]`` (``pool="cls"``/``"mean"``), ``[B, N, C]`` (``pool="none"``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.layers import DropPath
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import Tensor, nn

from maezoo.config import option
from maezoo.core.mae import MaskedAutoencoder, Pool, pool_features
from maezoo.core.masking import apply_drop
from maezoo.eval.features import split_xy
from maezoo.eval.metrics import mean_average_precision, topk_accuracy
from maezoo.optim import build_optimizer, cosine_lr, scaled_lr, set_lr
from maezoo.progress import Progress
from maezoo.runtime import autocast, resolve_precision, to_device
from maezoo.step import OptimStep

LogFn = Callable[[dict[str, Any]], None]


@dataclass
class FinetuneConfig:
    """MAE fine-tuning hyper-parameters (ViT-B/16 ImageNet defaults, except for ``epochs``).

    The learning rate is ``lr`` if given, else ``base_lr * batch_size / 256`` with the loader's batch
    size. The schedule runs per step over ``epochs * len(train_loader)`` steps, or ``max_steps`` if
    that is smaller; the warm-up keeps the ``warmup_epochs / epochs`` share of the run.
    """

    epochs: int = option(100, ge=1)
    max_steps: int | None = option(None, ge=1)
    lr: float | None = option(None, gt=0)
    base_lr: float = option(1e-3, gt=0)
    min_lr: float = option(1e-6, ge=0)
    warmup_epochs: float = option(5.0, ge=0)
    layer_decay: float | None = option(0.75, gt=0, le=1)
    weight_decay: float = option(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    drop_path: float = option(0.1, ge=0, lt=1)
    label_smoothing: float = option(0.1, ge=0, lt=1)
    mixup: float = option(0.8, ge=0)
    cutmix: float = option(1.0, ge=0)
    mixup_prob: float = option(1.0, ge=0, le=1)  # 0 disables mixup and cutmix
    mixup_switch_prob: float = option(0.5, ge=0, le=1)
    #: None = full fine-tuning; k = partial fine-tuning of the last k blocks (+ final norm and head)
    trainable_blocks: int | None = None
    pool: Pool = "mean"
    head_init_std: float = option(2e-5, gt=0)
    head_dropout: float = option(0.0, ge=0, lt=1)
    clip_grad: float | None = option(None, gt=0)
    #: ``auto``: bf16 where the device runs it natively, else fp32 (see :mod:`maezoo.runtime`)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    #: a registered masking strategy applied to the input tokens while training (Audio-MAE fine-tunes with
    #: ``time_frequency`` masking); the hidden tokens are dropped before the encoder. None: off
    masking: str | None = None
    masking_args: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    #: evaluate on the test loader every this many epochs, for the log only (None: only at the end)
    eval_every: int | None = option(None, ge=1)
    log_every: int = option(50, ge=1)
    #: views per test sample, averaged (multi-clip x multi-crop testing); the test set stacks them on dim 1
    views: int = option(1, ge=1)
    #: print progress with an ETA every ``log_every`` steps (a bar on a terminal)
    progress: bool = False
    #: ``classification`` (softmax cross-entropy, top-1/top-5) or ``multilabel`` (multi-hot ``[C]`` targets:
    #: binary cross-entropy with logits, mixup mixes the multi-hot rows, reports ``mAP``); ``auto`` reads it from
    #: the data (see :func:`resolve_task`)
    task: Literal["auto", "classification", "multilabel"] = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if self.trainable_blocks is not None and self.trainable_blocks < 0:
            raise ValueError(f"trainable_blocks must be None or >= 0, got {self.trainable_blocks}")
        if self.pool not in ("cls", "mean", "none"):
            raise ValueError(f"pool must be 'cls', 'mean' or 'none', got {self.pool!r}")
        if not 0.0 <= self.mixup_prob <= 1.0:
            raise ValueError(f"mixup_prob must be in [0, 1], got {self.mixup_prob}")
        if self.task not in ("auto", "classification", "multilabel"):
            raise ValueError(f"task must be 'auto', 'classification' or 'multilabel', got {self.task!r}")


class Classifier(nn.Module):
    """A pre-trained MAE's tokenizer + encoder with a classification head.

    Args:
        mae: the (pre-trained) masked autoencoder; its decoder is not kept.
        num_classes: size of the head.
        pool: ``"mean"`` (global average pooling + ``fc_norm``, MAE fine-tuning), ``"cls"`` (class
            token after the encoder's norm), or ``"none"`` (per-token logits, dense tasks).
        drop_path: stochastic depth of the last block; block ``i`` gets ``drop_path * i / (L - 1)``.
        head_init_std: std of the head's truncated-normal init (MAE: 2e-5 fine-tuning, 0.01 probing).
        copy_modules: deep-copy the tokenizer and encoder (default) so that training this classifier
            leaves ``mae`` untouched for the next protocol.

    Parameter names are ``tokenizer.*``, ``encoder.*``, ``fc_norm.*`` and ``head.*``, which
    :func:`maezoo.optim.layer_id_vit` maps to layer ids for layer-wise decay.
    """

    def __init__(
        self,
        mae: MaskedAutoencoder,
        num_classes: int,
        pool: Pool = "mean",
        drop_path: float = 0.0,
        head_init_std: float = 2e-5,
        head_dropout: float = 0.0,
        copy_modules: bool = True,
    ) -> None:
        super().__init__()
        if pool not in ("cls", "mean", "none"):
            raise ValueError(f"pool must be 'cls', 'mean' or 'none', got {pool!r}")
        self.tokenizer = copy.deepcopy(mae.tokenizer) if copy_modules else mae.tokenizer
        self.encoder = copy.deepcopy(mae.encoder) if copy_modules else mae.encoder
        self.num_prefix_tokens = int(getattr(self.encoder, "num_prefix_tokens", 0))
        if pool == "cls" and self.num_prefix_tokens == 0:
            raise ValueError("pool='cls' needs an encoder with a class token; use pool='mean'")
        self.pool: Pool = pool
        dim = int(getattr(self.encoder, "dim", 0) or self.tokenizer.embed_dim)
        self.fc_norm: nn.Module = nn.Identity()
        enc_norm = getattr(self.encoder, "norm", None)
        if pool != "cls" and isinstance(enc_norm, nn.LayerNorm):
            # MAE global_pool: no norm on the tokens, LayerNorm after averaging (fresh, unit init).
            self.encoder.norm = nn.Identity()
            self.fc_norm = nn.LayerNorm(dim, eps=enc_norm.eps)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=head_init_std)
        nn.init.zeros_(self.head.bias)
        self.drop_path_rates = set_drop_path(self.encoder, drop_path)
        #: masking strategy applied to the tokens in training mode (see :attr:`FinetuneConfig.masking`)
        self.input_masking: Any = None

    @property
    def blocks(self) -> nn.ModuleList | None:
        blocks = getattr(self.encoder, "blocks", None)
        return blocks if isinstance(blocks, nn.ModuleList) else None

    @property
    def num_layers(self) -> int | None:
        return len(self.blocks) if self.blocks is not None else None

    def features(self, x: Any) -> Tensor:
        """Pooled (and ``fc_norm``-ed) features ``[B, D]`` (``[B, N, D]`` for ``pool="none"``)."""
        tok = self.tokenizer(x)
        tokens = tok.tokens
        if self.training and self.input_masking is not None:
            if self.pool == "none":
                raise ValueError("fine-tuning with input masking needs pooled features (pool 'cls' or 'mean')")
            if tok.context.get("padding_mask") is not None:
                raise ValueError("fine-tuning with input masking drops tokens, which a padded (variable-length) "
                                 "batch cannot do densely; set finetune.masking to null")
            mask = self.input_masking(tokens.shape[0], tok.grid, device=tokens.device)
            tokens = apply_drop(tokens, mask)
        feats = self.encoder(tokens, dict(tok.context))
        padding = tok.context.get("padding_mask")
        return self.fc_norm(pool_features(feats, self.num_prefix_tokens, self.pool, padding_mask=padding))

    def forward(self, x: Any) -> Tensor:
        return self.head(self.head_drop(self.features(x)))

    def freeze_for_partial(self, trainable_blocks: int | None) -> None:
        """Partial fine-tuning: only the last ``trainable_blocks`` blocks, final norms and the head train.

        ``None`` makes everything trainable (full fine-tuning); ``0`` trains only norms and head.
        """
        for p in self.parameters():
            p.requires_grad_(trainable_blocks is None)
        if trainable_blocks is None:
            return
        blocks = self.blocks
        if blocks is None:
            raise ValueError("partial fine-tuning needs an encoder with a `blocks` ModuleList")
        if trainable_blocks > len(blocks):
            raise ValueError(f"trainable_blocks={trainable_blocks} but the encoder has {len(blocks)} blocks")
        trainable: list[nn.Module] = [self.fc_norm, self.head]
        trainable += list(blocks[len(blocks) - trainable_blocks :])
        enc_norm = getattr(self.encoder, "norm", None)
        if isinstance(enc_norm, nn.Module):
            trainable.append(enc_norm)
        for m in trainable:
            for p in m.parameters():
                p.requires_grad_(True)


def set_drop_path(encoder: nn.Module, drop_path: float) -> list[float]:
    """Give every block of ``encoder.blocks`` (timm ``Block``: ``drop_path1``/``drop_path2``) a
    ``DropPath`` with rates rising linearly from 0 to ``drop_path``; returns the rates."""
    blocks = getattr(encoder, "blocks", None)
    if blocks is None:
        if drop_path > 0:
            raise ValueError("drop_path > 0 needs an encoder with `blocks` (timm Blocks)")
        return []
    rates = torch.linspace(0, drop_path, len(blocks)).tolist()
    for blk, rate in zip(blocks, rates, strict=True):
        if not (hasattr(blk, "drop_path1") and hasattr(blk, "drop_path2")):
            if drop_path > 0:
                raise ValueError(f"block {type(blk).__name__} has no drop_path1/drop_path2 to set")
            continue
        blk.drop_path1 = DropPath(rate) if rate > 0 else nn.Identity()
        blk.drop_path2 = DropPath(rate) if rate > 0 else nn.Identity()
    return rates


def build_finetune_optimizer(clf: Classifier, cfg: FinetuneConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, with layer-wise decay when the encoder has blocks.

    Layer ids come from :func:`maezoo.core.layers.layer_ids`, which ranks the blocks of multi-stage
    (hierarchical) encoders across stages, and plain ViT blocks as before.
    """
    from maezoo.core.layers import layer_ids

    if clf.num_layers is None and not hasattr(clf.encoder, "layer_ids") and not hasattr(clf.encoder, "stages"):
        return build_optimizer(clf, lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    table, num_layers = layer_ids(clf)
    return build_optimizer(
        clf, lr, weight_decay=cfg.weight_decay, betas=cfg.betas, layer_decay=cfg.layer_decay, num_layers=num_layers,
        layer_id=lambda name, n: table.get(name, n + 1),
    )


def _batch_size(loader: Any) -> int | None:
    bs = getattr(loader, "batch_size", None)
    return int(bs) if isinstance(bs, int) else None


def _steps_per_epoch(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def view_logits(model: nn.Module, x: Tensor, views: int) -> Tensor:
    """Logits averaged over ``views`` views of each sample (video multi-clip x multi-crop testing).

    Shapes:
        x: ``[B, V, ...]`` (the views of one sample stacked on dim 1) -> ``[B, C]`` log of the mean softmax.
    """
    if x.dim() < 2 or x.shape[1] != views:
        raise ValueError(f"multi-view testing with views={views} expects inputs [B, {views}, ...], got {tuple(x.shape)}; "
                         "the test dataset must stack the views of each sample on dim 1")
    b = x.shape[0]
    logits = model(x.reshape(b * views, *x.shape[2:])).float()
    probs = logits.softmax(-1).reshape(b, views, -1).mean(1)
    return probs.clamp_min(1e-12).log()


def _dataset_multilabel(loader: Any) -> bool | None:
    """The ``multilabel`` flag of a loader's dataset (looked up through ``Subset``-style ``.dataset`` wrappers)."""
    ds = getattr(loader, "dataset", None)
    for _ in range(4):
        if ds is None:
            return None
        flag = getattr(ds, "multilabel", None)
        if isinstance(flag, bool):
            return flag
        ds = getattr(ds, "dataset", None)
    return None


def _first_label(loader: Any) -> Any:
    ds = getattr(loader, "dataset", None)
    if ds is None or not hasattr(ds, "__getitem__"):
        return None
    try:
        with torch.random.fork_rng(devices=[]):  # reading a sample leaves the global generator as it was
            return split_xy(ds[0])[1]
    except Exception:  # noqa: BLE001 - an unreadable sample is the training loop's to report, not the probe's
        return None


def resolve_task(task: str, train_loader: Any, test_loader: Any, num_classes: int) -> str:
    """``classification`` or ``multilabel`` for :attr:`FinetuneConfig.task`.

    ``auto``: a ``multilabel`` attribute of the test (else train) loader's dataset decides (the audio datasets
    set it); without one, the first test sample's label does: a float vector of ``num_classes`` entries is
    multi-hot, anything else (an integer class id) is single-label.
    """
    if task != "auto":
        return task
    for loader in (test_loader, train_loader):
        flag = _dataset_multilabel(loader)
        if flag is not None:
            return "multilabel" if flag else "classification"
    y = _first_label(test_loader) if test_loader is not None else None
    if y is not None:
        y = torch.as_tensor(y)
        if y.is_floating_point() and y.dim() == 1 and y.shape[0] == num_classes:
            return "multilabel"
    return "classification"


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable[tuple[Any, Any]], device: torch.device | str = "cpu", precision: str = "fp32",
    views: int = 1, task: str = "classification",
) -> dict[str, float]:
    """Top-1/top-5 (percent) and mean cross-entropy of ``model`` on ``loader``, in eval mode.

    Per-token logits ``[B, N, C]`` are flattened with their labels; labels ``< 0`` are ignored. With
    ``views > 1`` each sample's views (``x[:, v]``) are scored and their softmax averaged.
    ``task="multilabel"``: multi-hot labels ``[B, C]``; returns ``mAP`` (percent, :func:`mean_average_precision`
    of the logits, or of the sigmoid averaged over views) and the mean binary cross-entropy ``loss``.
    """
    if task == "multilabel":
        return _evaluate_multilabel(model, loader, device, precision, views)
    was = model.training
    model.eval()
    logits_all, labels_all = [], []
    try:
        for batch in loader:
            x, y = split_xy(batch)
            x, y = to_device(x, device), torch.as_tensor(y).to(device)
            with autocast(device, precision):
                logits = view_logits(model, x, views) if views > 1 else model(x)
            logits, y = logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1).long()
            keep = y >= 0
            logits_all.append(logits[keep].cpu())
            labels_all.append(y[keep].cpu())
    finally:
        model.train(was)
    logits, labels = torch.cat(logits_all), torch.cat(labels_all)
    acc = topk_accuracy(logits, labels, (1, 5))
    return {"top1": acc[1], "top5": acc[5], "loss": F.cross_entropy(logits, labels).item()}


@torch.no_grad()
def _evaluate_multilabel(model: nn.Module, loader: Iterable[tuple[Any, Any]], device: torch.device | str, precision: str,
                         views: int) -> dict[str, float]:
    """``{"mAP", "loss"}`` on multi-hot labels ``[B, C]`` (see :func:`evaluate`)."""
    was = model.training
    model.eval()
    scores_all, labels_all, loss_sum, n = [], [], 0.0, 0
    try:
        for batch in loader:
            x, y = split_xy(batch)
            x, y = to_device(x, device), torch.as_tensor(y).to(device).float()
            with autocast(device, precision):
                if views > 1:
                    b = x.shape[0]
                    logits = model(x.reshape(b * views, *x.shape[2:])).float().reshape(b, views, -1)
                else:
                    logits = model(x).float()
            if y.dim() != 2 or y.shape[-1] != logits.shape[-1]:
                raise ValueError(f"multi-label evaluation needs multi-hot labels [B, {logits.shape[-1]}], got "
                                 f"{tuple(y.shape)}; set finetune.task=classification for class-id labels")
            if views > 1:
                probs = logits.sigmoid().mean(1)
                scores, loss = probs, F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), y, reduction="sum")
            else:
                scores, loss = logits, F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
            scores_all.append(scores.cpu())
            labels_all.append(y.cpu())
            loss_sum, n = loss_sum + loss.item(), n + y.numel()
    finally:
        model.train(was)
    return {"mAP": mean_average_precision(torch.cat(scores_all), torch.cat(labels_all)), "loss": loss_sum / max(n, 1)}


def _make_mixup(cfg: FinetuneConfig, num_classes: int, multilabel: bool = False) -> Mixup | None:
    if cfg.mixup_prob <= 0 or (cfg.mixup <= 0 and cfg.cutmix <= 0):
        return None
    if multilabel:  # timm mixes the multi-hot rows (after its multi-label smoothing y (1 - s) + s / 2)
        return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                     switch_prob=cfg.mixup_switch_prob, label_smoothing=cfg.label_smoothing,
                     num_classes=num_classes, multi_label=True)
    return Mixup(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        label_smoothing=cfg.label_smoothing,
        num_classes=num_classes,
    )


def mixup_applies(clf: Classifier) -> bool:
    """Whether timm's batch mixup/cutmix (which mixes whole inputs and cuts boxes from their last two dimensions)
    applies to the inputs of ``clf``: its tokenizer declares it (:attr:`maezoo.core.Tokenizer.batch_mixup`)."""
    return bool(getattr(clf.tokenizer, "batch_mixup", False))


@dataclass
class _Targets:
    """How one fine-tuning run turns labels into a loss (see :func:`train_classifier`)."""

    num_classes: int
    multilabel: bool
    label_smoothing: float
    mixup: Mixup | None

    def __post_init__(self) -> None:
        self.soft_ce = SoftTargetCrossEntropy()
        s = self.label_smoothing
        self.smooth_ce: nn.Module = LabelSmoothingCrossEntropy(s) if s > 0 else nn.CrossEntropyLoss()

    def prepare(self, x: Any, y: Tensor, mix: bool) -> tuple[Any, Tensor, Tensor | None]:
        """``(x, y, soft targets or None)`` after mixup (when ``mix``) or the multi-label smoothing."""
        c = self.num_classes
        if self.multilabel and (not y.is_floating_point() or y.dim() != 2 or y.shape[1] != c):
            raise ValueError(f"multi-label fine-tuning needs multi-hot float labels [B, {c}], got "
                             f"{y.dtype} {tuple(y.shape)}; set finetune.task=classification for class ids")
        if mix and self.mixup is not None and x.shape[0] >= 2:
            if x.shape[0] % 2:
                x, y = x[:-1], y[:-1]
            x, y_soft = self.mixup(x, y.float() if self.multilabel else y.long())
            return x, y, y_soft
        if self.multilabel:
            return x, y, y.float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        # soft targets [B, C] from the dataset (e.g. waveform mixup) train with soft cross-entropy
        soft = y.is_floating_point() and y.dim() == 2 and y.shape[1] == c
        return x, y, y.float() if soft else None

    def loss(self, logits: Tensor, y: Tensor, y_soft: Tensor | None) -> Tensor:
        logits = logits.float()
        if self.multilabel:
            if logits.dim() != 2:
                raise ValueError("multi-label fine-tuning needs pooled logits [B, C] (pool 'cls' or 'mean')")
            return F.binary_cross_entropy_with_logits(logits, y_soft)
        if y_soft is not None:
            return self.soft_ce(logits, y_soft)
        if logits.dim() == 3:  # per-token labels; negatives are unlabelled
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1).long(), ignore_index=-100,
                                   label_smoothing=self.label_smoothing)
        return self.smooth_ce(logits, y.long())


def _schedule(cfg: FinetuneConfig, train_loader: Any) -> tuple[int, int, float]:
    """``(total steps, warm-up steps, peak learning rate)`` of a fine-tuning run over ``train_loader``."""
    steps_per_epoch = _steps_per_epoch(train_loader)
    if steps_per_epoch is None and cfg.max_steps is None:
        raise ValueError("the train loader has no len(); set FinetuneConfig.max_steps")
    total = cfg.epochs * steps_per_epoch if steps_per_epoch is not None else cfg.max_steps
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)  # type: ignore[type-var]
    if not total or total < 1:
        raise ValueError("fine-tuning has no steps (empty train loader?)")
    warmup = int(round(total * cfg.warmup_epochs / cfg.epochs))
    batch = _batch_size(train_loader)
    if cfg.lr is not None:
        return total, warmup, cfg.lr
    if batch is None:
        raise ValueError("cannot read the loader's batch_size for the lr scaling rule; set FinetuneConfig.lr")
    return total, warmup, scaled_lr(cfg.base_lr, batch)


def train_classifier(
    clf: Classifier,
    train_loader: Iterable[tuple[Any, Any]],
    test_loader: Iterable[tuple[Any, Any]] | None,
    num_classes: int,
    cfg: FinetuneConfig,
    device: torch.device | str = "cpu",
    log: LogFn | None = None,
) -> dict[str, Any]:
    """Train an already built :class:`Classifier` with ``cfg`` and evaluate it (see :func:`finetune`).

    Mixup/cutmix apply where the tokenizer declares them (:func:`mixup_applies`: image batches); for other inputs
    (graphs, time series, per-token labels) they are off and label smoothing uses a plain cross-entropy. Float
    labels ``[B, C]`` from the dataset (soft targets, e.g. audio waveform mixup) train with soft-target
    cross-entropy. With mixup on, an odd-sized batch loses its last sample (timm's batch mixup pairs samples).
    Multi-label (``cfg.task``, see :func:`resolve_task`): multi-hot float labels ``[B, C]`` train with
    binary cross-entropy with logits against ``y (1 - s) + s / 2`` (``s = label_smoothing``, timm's multi-label
    smoothing; image mixup/cutmix mixes the multi-hot rows the same way); the result has ``mAP`` instead of
    ``top1``/``top5``. A non-finite loss stops the run naming the step (:class:`~maezoo.step.NonFiniteLossError`).
    Seeds torch's and NumPy's global generators with ``cfg.seed`` (timm's Mixup uses NumPy's).
    """
    t0 = time.perf_counter()
    precision = resolve_precision(cfg.precision, device)
    task = resolve_task(cfg.task, train_loader, test_loader, num_classes)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)  # timm's Mixup draws from NumPy's global generator
    clf.to(device)
    clf.freeze_for_partial(cfg.trainable_blocks)
    if cfg.masking:
        from maezoo.registry import build

        clf.input_masking = build("masking", cfg.masking, **cfg.masking_args)
    total, warmup, lr = _schedule(cfg, train_loader)
    opt = build_finetune_optimizer(clf, cfg, lr)
    stepper = OptimStep(opt, precision, device, clip_grad=cfg.clip_grad,
                        params=[p for p in clf.parameters() if p.requires_grad], name="fine-tuning",
                        hint="lower the learning rate (finetune.lr or base_lr), set finetune.clip_grad, or use "
                             "finetune.precision=fp32")
    targets = _Targets(num_classes, task == "multilabel", cfg.label_smoothing,
                       _make_mixup(cfg, num_classes, task == "multilabel"))
    clf.train()
    step, epoch, loss_val, used_mixup = 0, 0, float("nan"), False
    progress = Progress(total, 0, cfg.progress, cfg.log_every, desc="finetune")
    while step < total:
        for batch in train_loader:
            if step >= total:
                break
            x, y = split_xy(batch)
            x, y = to_device(x, device), torch.as_tensor(y).to(device)
            set_lr(opt, cosine_lr(step, total, lr, warmup, cfg.min_lr))
            mix = targets.mixup is not None and mixup_applies(clf)
            x, y, y_soft = targets.prepare(x, y, mix)
            used_mixup |= mix and x.shape[0] >= 2
            with stepper.autocast():
                logits = clf(x)
            loss = targets.loss(logits, y, y_soft)
            stepper.opt_step(loss, step)
            step += 1
            if step % cfg.log_every == 0 or step == total:
                loss_val = loss.item()
                if log is not None:
                    log({"step": step, "epoch": epoch, "loss": loss_val, "lr": opt.param_groups[-1]["lr"]})
                progress.update(step, {"loss": loss_val})
        epoch += 1
        if cfg.eval_every and test_loader is not None and epoch % cfg.eval_every == 0 and step < total and log:
            log({"step": step, "epoch": epoch,
                 **{f"test_{k}": v for k, v in evaluate(clf, test_loader, device, precision, task=task).items()}})
    progress.close()
    out: dict[str, Any] = {"steps": step, "epochs": epoch, "lr": lr, "train_loss": loss_val, "mixup": used_mixup}
    if task == "multilabel":
        out["task"] = task
    if test_loader is not None:
        res = evaluate(clf, test_loader, device, precision, cfg.views, task=task)
        out.update({k: v for k, v in res.items() if k != "loss"}, test_loss=res["loss"])
    out["wall_time_s"] = time.perf_counter() - t0
    return out


def finetune(
    model: MaskedAutoencoder,
    train_loader: Iterable[tuple[Any, Any]],
    test_loader: Iterable[tuple[Any, Any]],
    num_classes: int,
    cfg: FinetuneConfig,
    device: torch.device | str = "cpu",
    log: LogFn | None = None,
    *,
    return_model: bool = False,
) -> dict[str, Any]:
    """Fine-tune (full or partial, per ``cfg.trainable_blocks``) a copy of ``model``'s encoder.

    ``model`` itself is not modified. The reported accuracy is the final model's on ``test_loader``.

    Returns:
        ``{"top1", "top5", "steps", "wall_time_s"}`` (multi-label: ``"mAP"`` and ``"task"`` instead of
        ``"top1"``/``"top5"``) plus ``"epochs"``, ``"lr"``, ``"train_loss"``,
        ``"test_loss"``, ``"mixup"`` (whether mixup/cutmix ran), ``"trainable_params"`` and, with
        ``return_model``, ``"model"`` (the trained :class:`Classifier`).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the head's init
        clf = Classifier(
            model, num_classes, pool=cfg.pool, drop_path=cfg.drop_path,
            head_init_std=cfg.head_init_std, head_dropout=cfg.head_dropout,
        )
    out = train_classifier(clf, train_loader, test_loader, num_classes, cfg, device, log)
    out["trainable_params"] = sum(p.numel() for p in clf.parameters() if p.requires_grad)
    if return_model:
        out["model"] = clf
    return out

