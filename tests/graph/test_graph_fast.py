"""The fast GAT paths (maezoo.graph.gat, maezoo.graph.sparse_input) against PyG's GATConv and the dense masked
input: the same values and gradients up to float rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maezoo.graph.gat import CSRGraph, csr_graph, gat_conv
from maezoo.graph.models import GATEncoder, graphmae, replace_dense
from maezoo.graph.sparse_input import Replacement, replaced_input_linear
from maezoo.graph.tokenizer import add_self_loops_cached


def random_graph(n: int = 30, e: int = 90, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    ei = torch.cat([ei, ei[:, :5]], 1)  # duplicate edges
    full = add_self_loops_cached(ei, n)  # every node has an edge into it
    return full[:, torch.randperm(full.shape[1], generator=g)]  # unsorted


def grads(out: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), inputs,
                                    allow_unused=True))


@pytest.mark.parametrize("heads,residual", [(1, False), (4, False), (2, True)])
def test_gat_conv_matches_pyg(heads, residual):
    from torch_geometric.nn import GATConv

    torch.manual_seed(0)
    n = 30
    conv = GATConv(7, 6, heads, concat=True, add_self_loops=False, residual=residual).eval()
    torch.nn.init.normal_(conv.bias)
    ei = random_graph(n)
    x = torch.randn(n, 7, requires_grad=True)
    params = [x] + list(conv.parameters())
    ref = conv(x, ei)
    got = gat_conv(conv, x, csr_graph(ei, n))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads(got, params), grads(ref, params)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_csr_graph_cached_and_transposed():
    ei = random_graph()
    g = csr_graph(ei, 30)
    assert csr_graph(ei, 30) is g  # cached for the same tensor
    dense = torch.zeros(30, 30)
    dense.index_put_((g.row, g.col), torch.ones(g.num_edges), accumulate=True)
    ref = torch.zeros(30, 30).index_put_((ei[1], ei[0]), torch.ones(ei.shape[1]), accumulate=True)
    assert torch.equal(dense, ref)
    # the transpose lists the same edges grouped by source
    assert torch.equal(g.col[g.perm_t], torch.repeat_interleave(torch.arange(30), g.crow_t.diff()))
    assert torch.equal(g.col_t, g.row[g.perm_t])
    heads = g.heads(3)
    assert heads.num_rows == 90 and heads.num_edges == 3 * g.num_edges and g.heads(3) is heads


def test_rows_subset_keeps_the_edges_into_those_rows():
    ei = random_graph()
    g = csr_graph(ei, 30)
    keep = torch.arange(30) % 3 == 0
    sub = g.rows_subset(keep)
    assert sub.num_rows == 10 and bool(keep[sub.dst].all())
    assert sub.num_edges == int(keep[ei[1]].sum())
    assert torch.equal(sub.dst, keep.nonzero().squeeze(-1)[sub.row])


def test_gat_conv_under_bf16_autocast_is_close_to_fp32():
    from torch_geometric.nn import GATConv

    torch.manual_seed(0)
    conv = GATConv(16, 8, 4, add_self_loops=False).eval()
    ei, x = random_graph(), torch.randn(30, 16)
    ref = gat_conv(conv, x, csr_graph(ei, 30))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gat_conv(conv, x, csr_graph(ei, 30))
    assert got.dtype == torch.float32 and torch.allclose(got, ref, atol=0.05, rtol=0.05)


def sparse_features(n: int, f: int, density: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, f, generator=g) * (torch.rand(n, f, generator=g) < density)
    return x / x.sum(1, keepdim=True).clamp_min(1e-9)


def a_replacement(b: int, n: int, m: int, f: int, seed: int = 0) -> Replacement:
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(n, generator=g)[:m].sort().values for _ in range(b)])
    kind = torch.randint(0, 3, (b, m), generator=g).to(torch.int8)  # token, random substitute, kept
    source = torch.randint(0, b * n, (b, m), generator=g)
    return Replacement(ids, kind, source, torch.randn(f, generator=g, requires_grad=True))


@pytest.mark.parametrize("density", [0.05, 0.9])  # the sparse and the dense path
@pytest.mark.parametrize("b", [1, 2])
def test_replaced_input_linear_equals_the_dense_masked_input(density, b):
    n, f, out = 20, 12, 5
    x = torch.stack([sparse_features(n, f, density, seed=i) for i in range(b)])
    rep = a_replacement(b, n, 8, f)
    w = torch.randn(out, f, requires_grad=True)
    for training in (True, False):  # p = 0: no dropout draws, so both must agree exactly
        ref = F.linear(replace_dense(x, rep).reshape(b * n, f), w)
        got = replaced_input_linear(x, rep, w, 0.0, training)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        for a, c in zip(grads(got, [w, rep.token]), grads(ref, [w, rep.token])):
            torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


def test_replaced_input_dropout_keeps_the_share_of_entries():
    torch.manual_seed(0)
    n, f, p = 400, 50, 0.3
    x = sparse_features(n, f, 0.1) + 0.0
    rep = Replacement(torch.arange(0, n, 2).unsqueeze(0), torch.zeros(1, n // 2, dtype=torch.int8), None,
                      torch.ones(f))
    out = replaced_input_linear(x.unsqueeze(0), rep, torch.eye(f), p, True)
    tok, feat = out[0::2], out[1::2]  # token rows: t * keep / (1 - p); feature rows: their non-zeros dropped
    assert abs(float((tok == 0).float().mean()) - p) < 0.02 and torch.allclose(tok[tok != 0], torch.tensor(1 / (1 - p)))
    nz = x[1::2] != 0
    kept = (feat[nz] != 0).float().mean()
    assert abs(float(kept) - (1 - p)) < 0.03 and bool((feat[~nz] == 0).all())
    torch.testing.assert_close(feat[feat != 0], x[1::2][feat != 0] / (1 - p))


def test_encoder_with_replacement_equals_encoder_on_masked_tokens():
    from torch_geometric.data import Data

    torch.manual_seed(0)
    n, f = 25, 10
    enc = GATEncoder(f, hidden=8, num_layers=2, heads=2, feat_drop=0.0, attn_drop=0.0).train()
    x = sparse_features(n, f, 0.2).unsqueeze(0)
    model = graphmae(f, hidden=8, heads=2)
    ctx = model.tokenizer.structure(Data(x=x[0], edge_index=random_graph(n)))
    rep = a_replacement(1, n, 12, f)
    params = [rep.token] + list(enc.parameters())
    got = enc(x, {**ctx, "replace": rep})
    ref = enc(replace_dense(x, rep), ctx)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    for a, c in zip(grads(got, params), grads(ref, params)):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)
    enc.blocks[0].fast = False  # the reference layer reads the dense masked input
    torch.testing.assert_close(enc(x, {**ctx, "replace": rep}), ref, atol=1e-5, rtol=1e-5)


def test_model_fast_and_pyg_paths_agree():
    from torch_geometric.data import Data

    torch.manual_seed(0)
    n, f = 40, 9
    data = Data(x=sparse_features(n, f, 0.3), edge_index=random_graph(n, 120))
    model = graphmae(f, hidden=16, heads=4, feat_drop=0.0, attn_drop=0.0).eval()
    torch.nn.init.normal_(model.mask_token)
    mask = model.sample_mask(data, generator=torch.Generator().manual_seed(1))
    outs = []
    for fast in (True, False):
        for m in model.modules():
            if hasattr(m, "fast"):
                m.fast = fast
        out = model(data, mask=mask)
        outs.append((out, torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)))
    (a, ga), (b, gb) = outs
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=1e-5)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None) and (x is None or torch.allclose(x, y, atol=1e-5, rtol=1e-4))


def test_csr_graph_build_sorts_edges():
    src, dst = torch.tensor([2, 0, 1, 0]), torch.tensor([1, 1, 0, 2])
    g = CSRGraph.build(src, dst, 3, 3)
    assert g.crow.tolist() == [0, 1, 3, 4] and g.col.tolist() == [1, 0, 2, 0] and g.row.tolist() == [0, 1, 1, 2]


def test_model_same_loss_and_gradients_with_or_without_the_replace_context():
    # An encoder declaring `consumes = "replace"` gets the unmasked tokens plus context["replace"] (drawn as
    # apply_replace_rule draws); its sparse first layer must give the dense masked input's loss and gradients.
    from torch_geometric.data import Data

    torch.manual_seed(0)
    n, f = 40, 9
    data = Data(x=sparse_features(n, f, 0.2), edge_index=random_graph(n, 120))
    model = graphmae(f, hidden=16, heads=4, feat_drop=0.0, attn_drop=0.0, replace_rate=0.3).train()
    torch.nn.init.normal_(model.mask_token)
    outs = []
    for consumes in ("replace", "tokens"):
        model.encoder.consumes = consumes
        assert model.input_mode == {"replace": "consumes_replace", "tokens": "replace"}[consumes]
        out = model(data, generator=torch.Generator().manual_seed(2))
        outs.append((out, torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)))
    (a, ga), (b, gb) = outs
    assert torch.equal(a.mask.mask, b.mask.mask)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=1e-5)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None) and (x is None or torch.allclose(x, y, atol=1e-5, rtol=1e-4))
