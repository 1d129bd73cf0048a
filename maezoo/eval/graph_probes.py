"""Downstream protocols on frozen graph embeddings (GraphMAE's): node-level linear probe, graph-level SVM.

* :func:`node_linear_probe`: node classification; a logistic regression (one linear layer, Adam, full batch)
  trained on the public train split for ``epochs`` epochs; the test accuracy at the epoch with the best
  validation accuracy is reported (GraphMAE's "early-stopping" figure), the last epoch's too.
* :func:`svm_cv`: graph classification; pooled graph embeddings, 10-fold stratified CV (shuffled,
  ``random_state=0``), in each fold an RBF SVC with ``C`` picked by 5-fold grid search on the training part;
  mean and std of the fold accuracies (GraphMAE's ``evaluate_graph_embeddings_using_svm``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maezoo.step import OptimStep


def node_linear_probe(emb: Tensor, y: Tensor, train_mask: Tensor, val_mask: Tensor, test_mask: Tensor, *,
                 lr: float = 0.01, weight_decay: float = 1e-4, epochs: int = 300, seed: int = 0) -> dict[str, float]:
    """Accuracies (in %) of a logistic regression on frozen node embeddings ``emb`` ``[N, D]``."""
    if int(train_mask.sum()) == 0:
        raise ValueError("linear probe needs at least one training node")
    g = torch.Generator().manual_seed(seed)
    emb = emb.detach().float()
    num_classes = int(y.max()) + 1
    clf = nn.Linear(emb.shape[1], num_classes)
    with torch.no_grad():  # nn.Linear's default init, drawn from our generator for reproducibility
        bound = 1 / emb.shape[1] ** 0.5
        clf.weight.uniform_(-bound, bound, generator=g)
        clf.bias.uniform_(-bound, bound, generator=g)
    stepper = OptimStep(torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay), name="node linear probe")
    best_val, best_state, best_epoch = -1.0, None, 0

    def acc(logits: Tensor, m: Tensor) -> float:
        return float((logits[m].argmax(-1) == y[m]).float().mean()) * 100

    for epoch in range(epochs):
        clf.train()
        stepper.opt_step(F.cross_entropy(clf(emb[train_mask]), y[train_mask]), epoch, check=False)
        with torch.no_grad():
            logits = clf(emb)
            val = acc(logits, val_mask)
        if val >= best_val:
            best_val, best_epoch, best_state = val, epoch, copy.deepcopy(clf.state_dict())
    with torch.no_grad():
        final_test = acc(clf(emb), test_mask)
        clf.load_state_dict(best_state)
        test = acc(clf(emb), test_mask)
    return {"test": test, "val": best_val, "final_test": final_test, "best_epoch": best_epoch}


def svm_cv(x: np.ndarray, y: np.ndarray, *, folds: int = 10, c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1, 10),
           seed: int = 0) -> tuple[float, float]:
    """Mean and std (in %) of the fold accuracies of an RBF SVC with a grid-searched ``C``."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    accs = []
    kf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for tr, te in kf.split(x, y):
        clf = GridSearchCV(SVC(random_state=42), {"C": list(c_grid)})
        clf.fit(x[tr], y[tr])
        accs.append(float((clf.predict(x[te]) == y[te]).mean()) * 100)
    return float(np.mean(accs)), float(np.std(accs))
