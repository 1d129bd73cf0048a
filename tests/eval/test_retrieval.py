"""Cross-modal retrieval (maezoo/eval/retrieval.py): recall with ties broken at random, in expectation."""

import torch

from maezoo.eval.retrieval import recall_at


def test_recall_counts_the_partner_and_splits_ties():
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.5, 0.8], [0.1, 0.2, 0.7]])
    assert abs(recall_at(sim, 1) - 100 * 2 / 3) < 1e-4  # row 1's partner (0.5) is second
    assert recall_at(sim, 2) == 100.0
    tied = torch.tensor([[0.5, 0.5, 0.5, 0.1], [0.5, 0.5, 0.5, 0.1], [0.5, 0.5, 0.5, 0.1], [0.0, 0.0, 0.0, 1.0]])
    # three identical captions: each query ranks its own first with probability 1/3, in the top 2 with 2/3
    assert abs(recall_at(tied, 1) - 100 * (3 * (1 / 3) + 1) / 4) < 1e-4
    assert abs(recall_at(tied, 2) - 100 * (3 * (2 / 3) + 1) / 4) < 1e-4
