"""Graph nodes as tokens (GraphMAE).

A graph (or a mini-batch of graphs merged into one disjoint graph, as PyG's ``Batch`` does) becomes
one sample of ``N`` tokens, the node features: ``tokens`` is ``[1, N, F]`` and the grid is ``(N,)``.
The tokenizer does not embed anything: GraphMAE's mask token lives in the input feature space, so
``embed_dim == target_dim == F`` and the encoder's first GNN layer is the embedding.

The graph structure travels in :attr:`Tokens.context`:
    ``edge_index``: ``[2, E']`` the edges with self-loops added (GraphMAE's preprocessing), cached
        per graph so that full-batch training builds it once;
    ``batch``: ``[N]`` graph id of each node (zeros for a single graph);
    ``num_graphs``: number of graphs in the batch;
    ``num_nodes``: ``N``;
    ``segment_ids``/``num_segments``: the same as ``batch``/``num_graphs`` under the core's names, so
        ``model.encode(data, pool="mean"|"max"|"sum")`` returns one row per graph, ``[num_graphs, D]``.

Bad input fails in :meth:`validate` with a ``ValueError`` naming the problem:
    * no node features (``x is None``): build features first, e.g. with
      :func:`maezoo.graph.data.degree_features` (one-hot degrees, GraphMAE's choice) or one-hot labels;
    * features that are not a 2-D float matrix, contain NaN/inf, or have the wrong width;
    * an empty graph (0 nodes);
    * edge indices that are negative or ``>= num_nodes``, or an ``edge_index`` not of shape ``[2, E]``.
Documented treatments (no error):
    * a graph with no edges or with isolated nodes: self-loops are added, so every node attends at
      least to itself (a GAT layer then acts like a per-node MLP on those nodes);
    * a single node: valid for encoding; with mask ratio 0.5 no node is hidden (``int(1 * 0.5) == 0``),
      so the reconstruction loss is 0 with zero gradients.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

from maezoo.core.tokenizer import Tokenizer, Tokens
from maezoo.registry import register


def _graph_parts(x: Any) -> tuple[Tensor | None, Tensor | None, Tensor | None, int]:
    """``(x, edge_index, batch, num_nodes)`` of a PyG ``Data``/``Batch`` or a plain mapping."""
    get = (lambda k: x.get(k)) if isinstance(x, dict) else (lambda k: getattr(x, k, None))
    feats, ei, batch = get("x"), get("edge_index"), get("batch")
    n = get("num_nodes")
    if n is None:
        n = feats.shape[0] if isinstance(feats, Tensor) and feats.dim() >= 1 else 0
    return feats, ei, batch, int(n)


def add_self_loops_cached(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Remove existing self-loops, add one per node, sort by destination (PyG's aggregation order)."""
    from torch_geometric.utils import add_self_loops, remove_self_loops

    ei = remove_self_loops(edge_index)[0]
    ei = add_self_loops(ei, num_nodes=num_nodes)[0]
    order = torch.argsort(ei[1] * num_nodes + ei[0])
    return ei[:, order].contiguous()


def _checked_key(x: Any) -> list | None:
    """Weak references to a graph's tensors with their versions: identifies exactly these, unchanged, tensors."""
    feats, ei, batch, n = _graph_parts(x)
    if not isinstance(feats, Tensor) or not isinstance(ei, Tensor):
        return None
    return [n] + [(weakref.ref(t), t._version) for t in (feats, ei, batch) if isinstance(t, Tensor)]


def _same_tensors(a: list, b: list) -> bool:
    if len(a) != len(b) or a[0] != b[0]:
        return False
    return all(ra() is not None and ra() is rb() and va == vb for (ra, va), (rb, vb) in zip(a[1:], b[1:]))


@register("tokenizer", "graph_nodes")
class GraphNodeTokenizer(Tokenizer):
    """Node features as tokens, graph structure in the context (see the module docstring)."""

    def __init__(self, in_dim: int, self_loops: bool = True, cache_size: int = 4) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"graph tokenizer needs in_dim >= 1 node features, got {in_dim}")
        self.embed_dim = self.target_dim = int(in_dim)
        self.self_loops = self_loops
        self.cache_size = cache_size
        self._cache: dict[tuple, tuple[weakref.ref, Tensor]] = {}

    # -- checks ---------------------------------------------------------------------------------------
    def validate(self, x: Any) -> None:
        """Check a graph; the value checks (finite features, edge ids in range) are skipped for tensors already
        checked unchanged (same storage and version), as full-graph training passes the same graph every step."""
        key = _checked_key(x)
        last = getattr(self, "_checked", None)
        if key is not None and last is not None and _same_tensors(key, last):
            return
        self._check(x)
        self._checked = key

    def _check(self, x: Any) -> None:
        feats, ei, batch, n = _graph_parts(x)
        if feats is None:
            raise ValueError(
                "graph has no node features (x is None); give it features first, e.g. one-hot degrees with "
                "maezoo.graph.data.degree_features(data) (GraphMAE's choice for IMDB) or one-hot node labels"
            )
        if not isinstance(feats, Tensor) or feats.dim() != 2:
            raise ValueError(f"node features must be a [num_nodes, F] tensor, got {type(feats).__name__} "
                             f"{tuple(getattr(feats, 'shape', ()))}")
        if feats.shape[0] == 0:
            raise ValueError("graph has no nodes; drop empty graphs from the dataset")
        if feats.shape[0] != n:
            raise ValueError(f"x has {feats.shape[0]} rows but the graph has num_nodes={n}")
        if not feats.is_floating_point():
            raise ValueError(f"node features must be floating point, got {feats.dtype}; call x.float()")
        if feats.shape[1] != self.embed_dim:
            raise ValueError(f"graph has {feats.shape[1]} node features but the tokenizer expects {self.embed_dim}")
        if not bool(torch.isfinite(feats).all()):
            raise ValueError("node features contain NaN or inf")
        if ei is None:
            raise ValueError("graph has no edge_index; use torch.empty(2, 0, dtype=torch.long) for a graph without edges")
        if not isinstance(ei, Tensor) or ei.dim() != 2 or ei.shape[0] != 2:
            raise ValueError(f"edge_index must be a [2, num_edges] integer tensor, got shape {tuple(getattr(ei, 'shape', ()))}")
        if ei.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"edge_index must hold integers, got {ei.dtype}")
        if ei.numel():
            lo, hi = int(ei.min()), int(ei.max())
            if lo < 0 or hi >= n:
                raise ValueError(f"edge_index refers to node {lo if lo < 0 else hi} but the graph has {n} nodes "
                                 f"(valid ids are 0..{n - 1})")
        if batch is not None and (batch.dim() != 1 or batch.shape[0] != n):
            raise ValueError(f"batch vector must be [num_nodes]={n}, got {tuple(batch.shape)}")

    # -- tokens ---------------------------------------------------------------------------------------
    def grid(self, x: Any) -> tuple[int, ...]:
        return (_graph_parts(x)[3],)

    def structure(self, x: Any) -> dict[str, Any]:
        """The context: cached self-loop ``edge_index``, ``batch``, ``num_graphs``, ``num_nodes``, and
        ``segment_ids``/``num_segments`` (= ``batch``/``num_graphs``) for per-graph pooling."""
        feats, ei, batch, n = _graph_parts(x)
        ei = ei.long()
        if self.self_loops:
            key = (ei.data_ptr(), tuple(ei.shape), ei._version, n, str(ei.device))
            entry = self._cache.get(key)
            # the entry must belong to this very tensor: a freed tensor's address can be reused by another graph
            if entry is None or entry[0]() is not ei:
                entry = (weakref.ref(ei), add_self_loops_cached(ei, n))
                if len(self._cache) >= self.cache_size:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = entry
            ei = entry[1]
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=feats.device)
            num_graphs = 1
        else:
            num_graphs = int(getattr(x, "num_graphs", 0) or (int(batch.max()) + 1 if n else 0))
        return {"edge_index": ei, "batch": batch, "num_graphs": num_graphs, "num_nodes": n,
                "segment_ids": batch, "num_segments": num_graphs}

    def forward(self, x: Any) -> Tokens:
        feats = _graph_parts(x)[0]
        return Tokens(tokens=feats.unsqueeze(0), grid=(feats.shape[0],), context=self.structure(x))

    def patchify(self, x: Any) -> Tensor:
        """The raw node features ``[1, N, F]``, GraphMAE's reconstruction target."""
        return _graph_parts(x)[0].unsqueeze(0)

    def example_input(self, batch_size: int = 2) -> Any:
        """A small random graph (a ring of 12 nodes plus chords) with ``in_dim`` features, for smoke tests."""
        from torch_geometric.data import Data

        n = 12
        src = torch.arange(n)
        ring = torch.stack([src, (src + 1) % n])
        chords = torch.stack([src[::3], (src[::3] + 5) % n])
        edge_index = torch.cat([ring, ring.flip(0), chords, chords.flip(0)], dim=1)
        return Data(x=torch.rand(n, self.embed_dim), edge_index=edge_index)

    def unpatchify(self, patches: Tensor, grid: tuple[int, ...]) -> Tensor:
        """``[1, N, F] -> [N, F]`` node features."""
        if patches.dim() != 3 or patches.shape[0] != 1 or patches.shape[1] != grid[0]:
            raise ValueError(f"expected [1, {grid[0]}, F] node predictions, got {tuple(patches.shape)}")
        return patches[0]
