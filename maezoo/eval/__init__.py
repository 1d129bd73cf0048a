"""Downstream evaluation protocols: k-NN, linear probing, (partial) fine-tuning, from scratch.

Typical chain after pre-training a :class:`~maezoo.core.MaskedAutoencoder` ``mae``::

    from maezoo import eval as ev
    tr_f, tr_y = ev.extract_features(mae, train_loader, pool="cls")
    te_f, te_y = ev.extract_features(mae, test_loader, pool="cls")
    ev.knn_classify(tr_f, tr_y, te_f, te_y, k=20)                  # {"top1", "top5"}
    ev.linear_probe(tr_f, tr_y, te_f, te_y, epochs=90)             # {"top1", "top5", ...}
    ev.finetune(mae, train_loader, test_loader, 10, ev.FinetuneConfig(epochs=100))
    ev.finetune(mae, train_loader, test_loader, 10, ev.FinetuneConfig(trainable_blocks=1))
    ev.finetune(builder(**builder_kwargs), train_loader, test_loader, 10, ev.FinetuneConfig())  # from scratch

Importing this package registers the metrics (kind ``"metric"``): top1, top5, accuracy, mAP, mse, mae; and the
protocols (kind ``"protocol"``, :mod:`maezoo.eval.protocols`): knn, linprobe, finetune, partial_finetune,
scratch, node_linprobe, svm. This package imports no engine code (optimisers come from :mod:`maezoo.optim`).
"""

from maezoo.eval import (  # noqa: F401  (registers the metrics and protocols)
    forecast,  # noqa: F401  (registers the forecast_* protocols and mse@H/mae@H metrics)
    metrics,
    protocols,
    retrieval,  # noqa: F401  (registers the retrieval protocol)
)
from maezoo.eval.features import extract_features
from maezoo.eval.finetune import (
    Classifier,
    FinetuneConfig,
    build_finetune_optimizer,
    evaluate,
    finetune,
    set_drop_path,
    train_classifier,
)
from maezoo.eval.knn import KNNMonitor, knn_classify, knn_scores
from maezoo.eval.linprobe import LARS, LinearHead, linear_probe
from maezoo.eval.metrics import higher_is_better, topk_accuracy
from maezoo.registry import register

register("head", "linear_bn", LinearHead)  # MAE's linear-probe head: BatchNorm (no affine) + Linear
register("head", "classifier", Classifier)  # tokenizer + encoder + pooled head, for (partial) fine-tuning

__all__ = [
    "LARS", "Classifier", "FinetuneConfig", "KNNMonitor", "LinearHead", "build_finetune_optimizer", "evaluate",
    "extract_features", "finetune", "higher_is_better", "knn_classify", "knn_scores",
    "linear_probe", "metrics", "set_drop_path", "topk_accuracy", "train_classifier",
]
