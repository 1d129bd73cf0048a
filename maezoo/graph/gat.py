"""Graph attention on a cached CSR graph: PyG ``GATConv``'s function, faster for full-graph training.

PyG's ``GATConv`` gathers ``[E, H, C]`` messages, multiplies them by the attention and scatters them back,
and computes each node's attention logits as ``(W x * a).sum(-1)`` over an ``[N, H, C]`` product. Here the
same layer, with the same parameters (those of the ``GATConv`` module, so checkpoints are unchanged), is:

    * one matrix product ``x @ [W; a_src W; a_dst W; W_res]^T``: the projection, both attention logits
      (``a . (W x) = (W^T a) . x``) and the residual in one pass over ``x``;
    * a softmax over each target's incoming edges on the CSR row of that target;
    * the attention-weighted sum as one sparse (CSR) times dense product over a block-diagonal matrix of
      the ``H`` heads, and in the backward pass the transposed product for the features and a sampled dense
      product (SDDMM, ``torch.sparse.sampled_addmm``) for the attention.

The function and its gradients are ``GATConv``'s up to float rounding (tests/graph/test_graph_fast.py checks both).
Attention dropout is drawn on the edges in CSR order, which is the tokenizer's edge order.

Shapes (``R`` target rows, ``N`` source nodes, ``E`` edges, ``H`` heads, ``C`` channels per head):
    :class:`CSRGraph`: ``crow [R + 1]``, ``col [E]`` source of each edge in row order, ``row [E]`` its row,
    ``dst [E]`` its target node id (``== row`` unless the rows are a subset of the nodes).
    :func:`gat_conv`: ``x [N, in] -> [R, H * C]``.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(eq=False)
class CSRGraph:
    """Edges grouped by target row (CSR), with the transpose (grouped by source) for the backward pass.

    Shapes: ``crow [R + 1]``, ``col/row/dst [E]``; ``crow_t [N + 1]``, ``col_t [E]`` (row of each edge in
    source order), ``perm_t [E]`` (position in row order of each edge in source order).
    """

    num_rows: int
    num_cols: int
    crow: Tensor
    col: Tensor
    row: Tensor
    dst: Tensor
    crow_t: Tensor
    col_t: Tensor
    perm_t: Tensor
    _heads: dict[int, CSRGraph] = field(default_factory=dict, repr=False)

    @property
    def num_edges(self) -> int:
        return int(self.col.numel())

    @classmethod
    def build(cls, src: Tensor, row: Tensor, num_rows: int, num_cols: int, dst: Tensor | None = None,
              is_sorted: bool = False) -> CSRGraph:
        """From edges ``src -> row`` (``dst``: the target node ids when rows are a subset of the nodes).

        ``is_sorted``: the edges are already ordered by ``(row, src)`` (the tokenizer's order), so no sort.
        """
        src, row = src.long(), row.long()
        dst = row if dst is None else dst.long()
        if not is_sorted:
            order = torch.argsort(row * num_cols + src)
            src, row, dst = src[order], row[order], dst[order]
        crow = _offsets(row, num_rows)
        perm_t = torch.argsort(src * num_rows + row)
        return cls(num_rows, num_cols, crow, src.contiguous(), row.contiguous(), dst.contiguous(),
                   _offsets(src, num_cols), row[perm_t].contiguous(), perm_t)

    def rows_subset(self, keep_rows: Tensor) -> CSRGraph:
        """The sub-graph of the edges into the rows where ``keep_rows`` (``[R]`` bool) is set; its rows are
        those rows in order (``dst`` keeps their node ids). One host synchronisation (the edge count)."""
        keep = keep_rows.index_select(0, self.row)
        rank = keep_rows.long().cumsum(0) - 1
        src, dst = self.col[keep], self.dst[keep]
        row = rank.index_select(0, self.row[keep])
        return CSRGraph.build(src, row, int(keep_rows.sum()), self.num_cols, dst=dst, is_sorted=True)

    def heads(self, h: int) -> CSRGraph:
        """The block-diagonal graph of ``h`` copies (one per attention head), cached."""
        if h == 1:
            return self
        g = self._heads.get(h)
        if g is None:
            e, r, c = self.num_edges, self.num_rows, self.num_cols
            k = torch.arange(h, device=self.col.device)

            def blocks(ptr: Tensor, n_edges: int) -> Tensor:
                return torch.cat([(ptr[:-1].unsqueeze(0) + (k * n_edges).unsqueeze(1)).reshape(-1),
                                  ptr.new_tensor([h * n_edges])])

            g = CSRGraph(h * r, h * c, blocks(self.crow, e), (self.col.unsqueeze(0) + (k * c).unsqueeze(1)).reshape(-1),
                         (self.row.unsqueeze(0) + (k * r).unsqueeze(1)).reshape(-1), self.dst.repeat(h),
                         blocks(self.crow_t, e), (self.col_t.unsqueeze(0) + (k * r).unsqueeze(1)).reshape(-1),
                         (self.perm_t.unsqueeze(0) + (k * e).unsqueeze(1)).reshape(-1))
            self._heads[h] = g
        return g


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A sparse CSR tensor (torch warns once that CSR support is beta; the products used here are tested)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _offsets(index: Tensor, n: int) -> Tensor:
    out = torch.zeros(n + 1, dtype=torch.long, device=index.device)
    out[1:] = torch.bincount(index, minlength=n).cumsum(0)
    return out


_CACHE: dict[tuple, tuple[weakref.ref, CSRGraph]] = {}


def csr_graph(edge_index: Tensor, num_nodes: int) -> CSRGraph:
    """The :class:`CSRGraph` of ``edge_index`` (``[2, E]`` source, target), cached for this very tensor while it
    is alive and unchanged (full-graph training passes the tokenizer's cached edge index every step)."""
    key = (edge_index.data_ptr(), tuple(edge_index.shape), edge_index._version, num_nodes, str(edge_index.device))
    entry = _CACHE.get(key)
    if entry is None or entry[0]() is not edge_index:
        src, dst = edge_index[0], edge_index[1]
        step_up = (dst[1:] > dst[:-1]) | ((dst[1:] == dst[:-1]) & (src[1:] >= src[:-1]))
        in_order = bool(step_up.all())  # the tokenizer's order (target, source): no sort needed
        entry = (weakref.ref(edge_index), CSRGraph.build(src, dst, num_nodes, num_nodes, is_sorted=in_order))
        if len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = entry
    return entry[1]


class _SpMM(torch.autograd.Function):
    """``A @ B`` with ``A`` sparse (the graph's pattern, ``values [E]``) and ``B`` dense ``[num_cols, C]``."""

    @staticmethod
    def forward(ctx, values: Tensor, dense: Tensor, g: CSRGraph) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(values, dense)
        ctx.g = g
        with torch.autocast(dense.device.type, enabled=False):  # sparse kernels are float32 (no bf16 on CPU)
            a = _csr(g.crow, g.col, values, (g.num_rows, g.num_cols))
            return a @ dense

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        values, dense = ctx.saved_tensors
        g: CSRGraph = ctx.g
        grad = grad.float().contiguous()
        with torch.autocast(dense.device.type, enabled=False):
            return _SpMM._backward(ctx, values, dense, g, grad)

    @staticmethod
    def _backward(ctx, values: Tensor, dense: Tensor, g: CSRGraph, grad: Tensor):
        g_values = g_dense = None
        if ctx.needs_input_grad[1]:
            at = _csr(g.crow_t, g.col_t, values.index_select(0, g.perm_t), (g.num_cols, g.num_rows))
            g_dense = at @ grad
        if ctx.needs_input_grad[0]:
            pattern = _csr(g.crow, g.col, torch.zeros_like(values), (g.num_rows, g.num_cols))
            g_values = torch.sparse.sampled_addmm(pattern, grad, dense.t(), beta=0.0).values()
        return g_values, g_dense, None


def aggregate(alpha: Tensor, h: Tensor, g: CSRGraph) -> Tensor:
    """``out[r, k] = sum over edges e into r of alpha[e, k] * h[src_e, k]`` for every head ``k`` (float32).

    Shapes: alpha ``[E, H]``, h ``[N, H, C]`` -> ``[R, H, C]``
    """
    n, heads, c = h.shape
    gh = g.heads(heads)
    values = alpha.float().t().reshape(-1)
    dense = h.float().permute(1, 0, 2).reshape(heads * n, c)
    return _SpMM.apply(values, dense, gh).view(heads, g.num_rows, c).permute(1, 0, 2)


def edge_softmax(logits: Tensor, g: CSRGraph) -> Tensor:
    """Softmax of ``logits`` over the incoming edges of each row (PyG's ``softmax``: max-shifted, ``+1e-16``).

    Shapes: logits ``[E, H]`` -> ``[E, H]``
    """
    e, heads = logits.shape
    row = g.row.unsqueeze(-1).expand(e, heads)
    top = logits.new_zeros(g.num_rows, heads).scatter_reduce(0, row, logits.detach(), "amax", include_self=False)
    ex = (logits - top.index_select(0, g.row)).exp()
    total = ex.new_zeros(g.num_rows, heads).index_add(0, g.row, ex)
    return ex / (total.index_select(0, g.row) + 1e-16)


def fits_gat_conv(conv: nn.Module) -> bool:
    """A PyG ``GATConv`` this module computes: one shared projection, concatenated heads, no edge features."""
    return (getattr(conv, "lin", None) is not None and getattr(conv, "concat", False)
            and getattr(conv, "lin_edge", None) is None)


def gat_weight(conv: nn.Module) -> Tensor:
    """``[W; a_src W; a_dst W; W_res]`` (``[H * C + 2H (+ H * C), in]``): one product with it gives the projection,
    both attention logits of every head (``a . (W x) = (W^T a) . x``) and the residual."""
    heads, c = conv.heads, conv.out_channels
    w = conv.lin.weight  # [H*C, in]
    wh = w.view(heads, c, -1)
    att_src = torch.einsum("hc,hci->hi", conv.att_src.view(heads, c), wh)  # [H, in]
    att_dst = torch.einsum("hc,hci->hi", conv.att_dst.view(heads, c), wh)
    return torch.cat([w, att_src, att_dst] + ([conv.res.weight] if conv.res is not None else []), 0)


def gat_attend(conv: nn.Module, z: Tensor, g: CSRGraph) -> Tensor:
    """The rest of ``GATConv`` given ``z = x @ gat_weight(conv).T``: attention softmax, dropout, aggregation,
    residual and bias.

    Shapes: z ``[N, H * C + 2H (+ H * C)]`` -> ``[R, H * C]``
    """
    heads, c = conv.heads, conv.out_channels
    hc = heads * c
    h, a_src, a_dst = z[:, :hc], z[:, hc : hc + heads], z[:, hc + heads : hc + 2 * heads]
    logits = a_src.index_select(0, g.col) + a_dst.index_select(0, g.dst)
    alpha = edge_softmax(F.leaky_relu(logits.float(), conv.negative_slope), g)
    alpha = F.dropout(alpha, p=conv.dropout, training=conv.training)
    out = aggregate(alpha, h.reshape(-1, heads, c), g).reshape(g.num_rows, hc)
    if conv.res is not None:
        if g.num_rows != z.shape[0]:
            raise ValueError("a residual GATConv needs the whole graph (one output row per input node)")
        out = out + z[:, hc + 2 * heads :]
    if conv.bias is not None:
        out = out + conv.bias
    return out


def gat_conv(conv: nn.Module, x: Tensor, g: CSRGraph) -> Tensor:
    """PyG ``GATConv(x, edge_index)`` (``add_self_loops=False``, ``concat=True``) on the CSR graph ``g``,
    with the module's own parameters.

    Shapes: x ``[N, in]`` -> ``[R, H * C]`` (``R == N`` for a whole graph)
    """
    if not fits_gat_conv(conv):
        raise ValueError("gat_conv computes a GATConv with one shared projection (`lin`), concat=True and no "
                         "edge features; call the module itself for other configurations")
    return gat_attend(conv, F.linear(x, gat_weight(conv)), g)


__all__ = ["CSRGraph", "aggregate", "csr_graph", "edge_softmax", "fits_gat_conv", "gat_attend", "gat_conv",
           "gat_weight"]
