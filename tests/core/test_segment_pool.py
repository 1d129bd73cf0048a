"""Segment pooling (packed graphs). Every test checks values against a hand computation on a tiny model."""

from __future__ import annotations

import pytest
import torch
from core_helpers import DD, C, D, make_model

from maezoo.core import (
    MaskedAutoencoder,
    RandomMasking,
    Tokenizer,
    Tokens,
    TransformerDecoder,
    ViTEncoder,
)
from maezoo.core.mae import segment_pool


class PackedTokenizer(Tokenizer):
    """One row of ``N`` tokens holding several samples; ``x = (features [N, D], segment_ids [N])``."""

    def __init__(self, num_segments: int) -> None:
        super().__init__()
        self.embed_dim = self.target_dim = D
        self.num_segments = num_segments

    def grid(self, x):
        return (x[0].shape[0],)

    def forward(self, x):
        return Tokens(x[0][None], self.grid(x), {"segment_ids": x[1], "num_segments": self.num_segments})

    def patchify(self, x):
        return x[0][None]


def test_segment_pooling_matches_manual_per_segment_reduction():
    torch.manual_seed(0)
    seg = torch.tensor([0, 0, 1, 2, 2, 2, 0, 1, 4])  # segment 3 is empty
    model = MaskedAutoencoder(PackedTokenizer(5), ViTEncoder(D, 1, 2, cls_token=False),
                              TransformerDecoder(D, D, DD, 1, 2, num_prefix_tokens=0), RandomMasking(0.5)).eval()
    x = (torch.randn(9, D), seg)
    feats = model.encode(x, pool="none")[0]  # [N, D]
    for pool, fn in [("mean", lambda r: r.mean(0)), ("max", lambda r: r.max(0).values), ("sum", lambda r: r.sum(0))]:
        got = model.encode(x, pool=pool)
        assert got.shape == (5, D)
        for s in range(5):
            rows = feats[seg == s]
            ref = fn(rows) if len(rows) else torch.zeros(D)
            torch.testing.assert_close(got[s], ref)
    # two rows of the same packing: each row gets its own segments
    two = segment_pool(torch.stack([feats, 2 * feats]), seg, 5, "sum")
    torch.testing.assert_close(two, torch.cat([model.encode(x, pool="sum"), 2 * model.encode(x, pool="sum")]))
    # gradients flow through max pooling to the arg-max rows only
    f = feats.detach().clone().requires_grad_(True)
    segment_pool(f[None], seg, 5, "max").sum().backward()
    assert int((f.grad != 0).sum()) == 4 * D  # one winner per non-empty segment and channel
    with pytest.raises(ValueError, match="pool"):
        make_model().encode(torch.randn(1, C, 8, 8), pool="max")


def test_graph_tokenizer_segments_pool_per_graph():
    pytest.importorskip("torch_geometric")
    from torch_geometric.data import Batch, Data

    from maezoo.graph.models import graphmae

    torch.manual_seed(0)
    graphs = [Data(x=torch.rand(n, 4), edge_index=torch.tensor([[i, (i + 1) % n] for i in range(n)]).t())
              for n in (3, 5, 4)]
    batch = Batch.from_data_list(graphs)
    model = graphmae(4, hidden=8, heads=2, num_layers=1, feat_drop=0.0, attn_drop=0.0).eval()
    ctx = model.tokenizer(batch).context
    assert torch.equal(ctx["segment_ids"], ctx["batch"]) and ctx["num_segments"] == ctx["num_graphs"] == 3
    nodes = model.encode(batch, pool="none")[0]
    means = model.encode(batch, pool="mean")
    assert means.shape == (3, 8)
    for g, (lo, hi) in enumerate([(0, 3), (3, 8), (8, 12)]):
        torch.testing.assert_close(means[g], nodes[lo:hi].mean(0))
        torch.testing.assert_close(model.encode(batch, pool="max")[g], nodes[lo:hi].max(0).values)
