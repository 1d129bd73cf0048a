"""The encoder's first product on the masked input without building the masked input: ``dropout(x~) @ W^T``.

In GraphMAE's replace mode the encoder's input ``x~`` is the node features with the hidden nodes' rows
replaced: most by the mask token, some (``replace_rate``) by another node's features. Building ``x~``
densely and multiplying it costs three ``[N, F] x [F, out]`` products per step (forward, weight gradient,
input gradient) and several passes over ``[N, F]`` (replace, dropout, their backward), although

    * the feature rows are sparse (Cora's bag-of-words rows hold ~18 of 1,433 words): their product is a
      sparse times dense product, dropout is drawn only for their non-zeros (a dropped zero is still zero,
      so the distribution is the same), and they need no input gradient (features are data);
    * the token rows all hold the same vector ``t``: after dropout ``t * k_i / (1 - p)`` with a keep mask
      ``k_i``, so their product is ``K @ (t[:, None] * W^T) / (1 - p)`` and its backward gives ``W``'s and
      ``t``'s gradients from one product ``K^T @ G``.

:func:`replaced_input_linear` computes that, given the replacement the core drew (:class:`Replacement`:
mask, kind of each hidden row, substitute rows, token), with the same value and gradients as
``dropout(x~) @ W^T`` up to float rounding and the dropout draws (tests/graph/test_graph.py). Features that are
not sparse (density above ``DENSE_ABOVE``) are gathered densely instead.

Shapes: x ``[B, N, F]``; weight ``[out, F]``; returns ``[B * N, out]``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from maezoo.core.masking import REPLACE_MASK, REPLACE_RANDOM
from maezoo.graph.gat import CSRGraph, _SpMM

#: feature density above which the feature rows are multiplied densely
DENSE_ABOVE = 0.25


@dataclass
class Replacement:
    """The core's replace-mode draw for one batch, handed to an encoder that builds its input itself.

    Shapes: ``ids_masked [B, M]`` hidden positions; ``kind [B, M]`` int (0 mask token, 1 random substitute,
    2 kept); ``source [B, M]`` flat row ``b * N + n`` of each substitute (read where ``kind == 1``) or ``None``;
    ``token [F]`` the mask token.
    """

    ids_masked: Tensor
    kind: Tensor
    source: Tensor | None
    token: Tensor

    @classmethod
    def of(cls, obj: object) -> Replacement:
        """From any object (or mapping) with ``ids_masked``/``mask``, ``kind``, ``source`` and ``token``."""
        get = (lambda k: obj.get(k)) if isinstance(obj, dict) else (lambda k: getattr(obj, k, None))
        ids = get("ids_masked")
        if ids is None:
            ids = get("mask").ids_masked
        return cls(ids, get("kind"), get("source"), get("token"))


@dataclass
class _RowsCSR:
    crow: Tensor
    col: Tensor
    val: Tensor
    density: float


_CSR_CACHE: dict[tuple, tuple[weakref.ref, _RowsCSR]] = {}


def rows_csr(x: Tensor) -> _RowsCSR:
    """CSR of a ``[N, F]`` matrix, cached for this very tensor while it is alive and unchanged."""
    key = (x.data_ptr(), tuple(x.shape), x._version, str(x.device), x.dtype)
    entry = _CSR_CACHE.get(key)
    if entry is None or entry[0]() is not x:
        nz = x != 0
        row, col = nz.nonzero(as_tuple=True)
        crow = torch.zeros(x.shape[0] + 1, dtype=torch.long, device=x.device)
        crow[1:] = nz.sum(1).cumsum(0)
        entry = (weakref.ref(x), _RowsCSR(crow, col, x[row, col], row.numel() / max(x.numel(), 1)))
        if len(_CSR_CACHE) >= 4:
            _CSR_CACHE.pop(next(iter(_CSR_CACHE)))
        _CSR_CACHE[key] = entry
    return entry[1]


def _select_rows(m: _RowsCSR, rows: Tensor, num_cols: int) -> tuple[CSRGraph, Tensor]:
    """The CSR pattern (as a :class:`CSRGraph` of ``len(rows)`` rows over the columns) and values of ``rows``."""
    start = m.crow.index_select(0, rows)
    counts = m.crow.index_select(0, rows + 1) - start
    r = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
    offsets = torch.zeros(rows.numel() + 1, dtype=torch.long, device=rows.device)
    offsets[1:] = counts.cumsum(0)
    pos = start.index_select(0, r) + torch.arange(r.numel(), device=rows.device) - offsets.index_select(0, r)
    col, val = m.col.index_select(0, pos), m.val.index_select(0, pos)
    return CSRGraph.build(col, r, rows.numel(), num_cols, is_sorted=True), val


def replaced_input_linear(x: Tensor, rep: Replacement, weight: Tensor, p: float, training: bool) -> Tensor:
    """``dropout(replace(x)) @ weight.T`` (see the module docstring), rows in ``b * N + n`` order.

    Shapes: x ``[B, N, F]`` (no gradient: data); weight ``[out, F]``; returns ``[B * N, out]``
    """
    b, n, f = x.shape
    xf = x.reshape(b * n, f)
    drop = training and p > 0
    dev = x.device
    hidden = (rep.ids_masked + torch.arange(b, device=dev).unsqueeze(1) * n).reshape(-1)
    kind = rep.kind.reshape(-1)
    reads = torch.arange(b * n, device=dev)  # the feature row each non-token row holds
    if rep.source is not None:
        rnd = kind == REPLACE_RANDOM
        reads = reads.index_put((hidden[rnd],), rep.source.reshape(-1)[rnd].to(reads.dtype))
    is_token = torch.zeros(b * n, dtype=torch.bool, device=dev).index_fill_(0, hidden[kind == REPLACE_MASK], True)
    tok_rows, feat_rows = is_token.nonzero().squeeze(-1), (~is_token).nonzero().squeeze(-1)
    out = torch.empty(b * n, weight.shape[0], dtype=torch.promote_types(weight.dtype, torch.float32), device=dev)
    parts = []
    if feat_rows.numel():
        src_rows = reads.index_select(0, feat_rows)
        m = rows_csr(xf.detach())
        if m.density > DENSE_ABOVE:
            feats = xf.index_select(0, src_rows)
            if drop:
                feats = feats * torch.rand(feats.shape, device=dev, dtype=feats.dtype).ge_(p).div_(1.0 - p)
            parts.append((feat_rows, torch.nn.functional.linear(feats, weight)))
        else:
            pattern, val = _select_rows(m, src_rows, f)
            if drop:
                val = val * torch.rand(val.shape, device=dev, dtype=val.dtype).ge_(p).div_(1.0 - p)
            parts.append((feat_rows, _SpMM.apply(val.float(), weight.float().t(), pattern)))
    if tok_rows.numel():
        scaled = rep.token.unsqueeze(1) * weight.t()  # [F, out]: t_j W_j
        if drop:
            keep = torch.rand(tok_rows.numel(), f, device=dev).ge_(p).to(weight.dtype).div_(1.0 - p)
            parts.append((tok_rows, keep @ scaled))
        else:
            parts.append((tok_rows, (rep.token.unsqueeze(0) @ weight.t()).expand(tok_rows.numel(), -1)))
    for rows, val in parts:
        out = out.index_copy(0, rows, val.to(out.dtype))
    return out


__all__ = ["DENSE_ABOVE", "Replacement", "replaced_input_linear", "rows_csr"]
