"""GraphMAE encoders and decoders from PyG layers, and the ``graphmae`` model builder.

Interfaces (the core's):
    encoder: ``forward(tokens [B, N, D], context) -> [B, N, hidden]``, ``num_prefix_tokens = 0``;
    decoder: ``forward(latent [B, N, hidden], mask, grid, context) -> [B, N, out_dim]``.
``B`` is normally 1 (a mini-batch of graphs is one disjoint graph); ``B > 1`` copies of the same graph
are handled by offsetting ``edge_index``.

GraphMAE (Hou et al., KDD'22) details kept here:
    * GAT encoder: multi-head GATConv with concatenated heads, dropout on each layer's input
      (``feat_drop``), attention dropout, optional residual and norm, activation after every layer
      (the last one too, since it encodes); GraphMAE's xavier-normal (gain 1.414) initialisation.
    * GIN encoder for graph tasks: GINConv (eps = 0) with a 2-layer MLP (norm + activation inside),
      then norm + activation.
    * Decoder: ``encoder_to_decoder`` linear (no bias), re-mask (hidden nodes' codes set to 0),
      then one GNN layer (GAT with ``out_heads`` heads or GIN) without activation. MLP/linear decoders
      (the paper's ablation) skip the re-mask, as GraphMAE does.
    * Speed: GAT layers run on a cached CSR graph (:mod:`maezoo.graph.gat`, PyG ``GATConv``'s function and
      parameters); each block's ``fast = False`` calls the PyG module instead (the reference path).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maezoo.core.losses import MaskedMSE, ScaledCosineError
from maezoo.core.mae import MaskedAutoencoder
from maezoo.core.masking import REPLACE_MASK, REPLACE_RANDOM, Mask, build_masking
from maezoo.core.ops import dropout
from maezoo.core.types import Divides, NonNegative, Positive, Rate, Ratio, Size
from maezoo.graph.gat import (
    CSRGraph,
    aggregate,
    csr_graph,
    edge_softmax,
    fits_gat_conv,
    gat_attend,
    gat_conv,
    gat_weight,
)
from maezoo.graph.sparse_input import Replacement, replaced_input_linear
from maezoo.graph.tokenizer import GraphNodeTokenizer
from maezoo.registry import register

NORMS = (None, "none", "batchnorm", "layernorm", "graphnorm")


def make_activation(name: str | None) -> nn.Module:
    acts = {"prelu": nn.PReLU, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, None: nn.Identity, "none": nn.Identity}
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; choose from {[k for k in acts if k]}")
    return acts[name]()


class GraphNorm(nn.Module):
    """Norm wrapper: ``batchnorm``/``layernorm`` on nodes, or PyG's GraphNorm (per graph, uses ``batch``)."""

    def __init__(self, kind: str | None, dim: int) -> None:
        super().__init__()
        if kind not in NORMS:
            raise ValueError(f"unknown norm {kind!r}; choose from {[k for k in NORMS if k]}")
        self.kind = None if kind == "none" else kind
        if self.kind == "batchnorm":
            self.norm = nn.BatchNorm1d(dim)
        elif self.kind == "layernorm":
            self.norm = nn.LayerNorm(dim)
        elif self.kind == "graphnorm":
            from torch_geometric.nn.norm import GraphNorm as PygGraphNorm

            self.norm = PygGraphNorm(dim)
        else:
            self.norm = nn.Identity()

    def forward(self, x: Tensor, batch: Tensor | None = None) -> Tensor:
        if self.kind == "graphnorm":
            return self.norm(x, batch)
        return self.norm(x)


def replace_dense(tokens: Tensor, rep: Replacement) -> Tensor:
    """The masked input ``rep`` describes, built densely (the reference for the sparse first layer).

    Shapes: tokens ``[B, N, F]`` -> ``[B, N, F]``
    """
    b, n, f = tokens.shape
    flat = tokens.reshape(b * n, f)
    hidden = (rep.ids_masked + torch.arange(b, device=tokens.device).unsqueeze(1) * n).reshape(-1)
    kind = rep.kind.reshape(-1)
    rows = flat.index_select(0, hidden)
    if rep.source is not None:
        rnd = (kind == REPLACE_RANDOM).unsqueeze(-1)
        rows = torch.where(rnd, flat.index_select(0, rep.source.reshape(-1).clamp(0, b * n - 1)), rows)
    rows = torch.where((kind == REPLACE_MASK).unsqueeze(-1), rep.token.to(rows.dtype).expand_as(rows), rows)
    return flat.index_copy(0, hidden, rows).view(b, n, f)


def _flatten(tokens: Tensor, context: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
    """``[B, N, D] -> [B*N, D]`` with edges (and batch vector) repeated for each of the ``B`` copies."""
    if context is None or "edge_index" not in context:
        raise ValueError("graph encoders need context['edge_index']; tokenize with the 'graph_nodes' tokenizer")
    b, n, d = tokens.shape
    ei, batch = context["edge_index"], context.get("batch")
    if b > 1:
        off = (torch.arange(b, device=ei.device) * n).repeat_interleave(ei.shape[1])
        ei = ei.repeat(1, b) + off
        if batch is not None:
            ng = int(context.get("num_graphs", int(batch.max()) + 1))
            batch = torch.cat([batch + i * ng for i in range(b)])
    return tokens.reshape(b * n, d), ei, batch


def graphmae_init_(conv: nn.Module) -> None:
    """GraphMAE's GATConv initialisation: xavier-normal with gain 1.414, zero bias."""
    for lin in (conv.lin, conv.lin_src, conv.lin_dst, conv.res):
        if lin is not None and hasattr(lin, "weight"):
            nn.init.xavier_normal_(lin.weight, gain=1.414)
    nn.init.xavier_normal_(conv.att_src, gain=1.414)
    nn.init.xavier_normal_(conv.att_dst, gain=1.414)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class GATBlock(nn.Module):
    """dropout -> GATConv (concatenated heads, + residual) -> norm -> activation.

    ``fast`` (default): the GATConv is computed by :func:`maezoo.graph.gat.gat_conv` on the cached CSR graph
    (the same function and parameters, faster); ``False`` calls the PyG module (the reference path).
    """

    def __init__(self, in_dim, out_per_head, heads, feat_drop, attn_drop, negative_slope, residual, norm, activation):
        super().__init__()
        from torch_geometric.nn import GATConv

        self.feat_drop = feat_drop
        self.conv = GATConv(in_dim, out_per_head, heads, concat=True, negative_slope=negative_slope,
                            dropout=attn_drop, add_self_loops=False, residual=residual)
        graphmae_init_(self.conv)
        self.norm = GraphNorm(norm, out_per_head * heads)
        self.act = make_activation(activation)
        self.fast = True

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> Tensor:
        x = dropout(x, self.feat_drop, self.training)
        if self.fast and fits_gat_conv(self.conv):
            h = gat_conv(self.conv, x, csr_graph(edge_index, x.shape[0]))
        else:
            h = self.conv(x, edge_index)
        return self.act(self.norm(h, batch))

    def forward_replaced(self, tokens: Tensor, rep: Replacement, edge_index: Tensor,
                         batch: Tensor | None = None) -> Tensor:
        """The block on the masked input described by ``rep``, without building it
        (:func:`~maezoo.graph.sparse_input.replaced_input_linear`).

        Shapes: tokens ``[B, N, F]`` -> ``[B * N, out]``
        """
        z = replaced_input_linear(tokens, rep, gat_weight(self.conv), self.feat_drop, self.training)
        return self.act(self.norm(gat_attend(self.conv, z, csr_graph(edge_index, z.shape[0])), batch))


@register("encoder", "gat")
class GATEncoder(nn.Module):
    """GraphMAE's GAT encoder: ``num_layers`` GAT layers of ``heads`` concatenated heads, ``hidden`` wide.

    Given ``context["replace"]`` (the core's replace-mode draw, :class:`~maezoo.graph.sparse_input.Replacement`)
    and the unmasked tokens, the first layer computes its product on the masked input without building it
    (sparse feature rows, one shared token row); otherwise it reads the masked tokens as they are.
    """

    num_prefix_tokens = 0
    #: asks the core (replace mode) for the unmasked tokens plus ``context["replace"]`` instead of masked tokens
    consumes = "replace"

    def __init__(self, in_dim: int, hidden: int = 512, num_layers: int = 2, heads: int = 4, feat_drop: float = 0.2,
                 attn_drop: float = 0.1, negative_slope: float = 0.2, residual: bool = False, norm: str | None = None,
                 activation: str = "prelu") -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"GAT hidden size {hidden} must divide by heads {heads}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.dim, self.depth = hidden, num_layers
        dims = [in_dim] + [hidden] * num_layers
        self.blocks = nn.ModuleList(
            GATBlock(dims[i], hidden // heads, heads, feat_drop, attn_drop, negative_slope, residual, norm, activation)
            for i in range(num_layers)
        )

    def forward(self, tokens: Tensor, context: dict[str, Any] | None = None) -> Tensor:
        b, n, _ = tokens.shape
        x, ei, batch = _flatten(tokens, context)
        blocks = list(self.blocks)
        if context.get("replace") is not None:
            first = blocks.pop(0)
            if first.fast and fits_gat_conv(first.conv):
                x = first.forward_replaced(tokens, Replacement.of(context["replace"]), ei, batch)
            else:
                x = first(replace_dense(tokens, Replacement.of(context["replace"])).reshape(b * n, -1), ei, batch)
        for blk in blocks:
            x = blk(x, ei, batch)
        return x.view(b, n, -1)


class GINMLP(nn.Module):
    """GraphMAE's GIN update: Linear -> norm -> act -> Linear (then, when ``outer``, norm -> act)."""

    def __init__(self, in_dim, hidden, out_dim, norm, activation, outer: bool) -> None:
        super().__init__()
        self.lin1, self.norm1, self.act1 = nn.Linear(in_dim, hidden), GraphNorm(norm, hidden), make_activation(activation)
        self.lin2 = nn.Linear(hidden, out_dim)
        self.outer = outer
        if outer:
            self.norm2, self.act2 = GraphNorm(norm, out_dim), make_activation(activation)
        self.batch: Tensor | None = None  # set by the encoder for graphnorm

    def forward(self, x: Tensor) -> Tensor:
        x = self.lin2(self.act1(self.norm1(self.lin1(x), self.batch)))
        if self.outer:
            x = self.act2(self.norm2(x, self.batch))
        return x


@register("encoder", "gin")
class GINEncoder(nn.Module):
    """GraphMAE's GIN encoder for graph-level tasks (sum aggregation, eps = 0, self-loops in the graph)."""

    num_prefix_tokens = 0

    def __init__(self, in_dim: int, hidden: int = 512, num_layers: int = 2, feat_drop: float = 0.2,
                 norm: str | None = "batchnorm", activation: str = "prelu") -> None:
        super().__init__()
        from torch_geometric.nn import GINConv

        self.dim, self.depth, self.feat_drop = hidden, num_layers, feat_drop
        dims = [in_dim] + [hidden] * num_layers
        self.blocks = nn.ModuleList(
            GINConv(GINMLP(dims[i], hidden, hidden, norm, activation, outer=True), train_eps=False)
            for i in range(num_layers)
        )

    def forward(self, tokens: Tensor, context: dict[str, Any] | None = None) -> Tensor:
        b, n, _ = tokens.shape
        x, ei, batch = _flatten(tokens, context)
        for conv in self.blocks:
            conv.nn.batch = batch
            x = conv(dropout(x, self.feat_drop, self.training), ei)
        return x.view(b, n, -1)


def gat_project_last(conv: nn.Module, x: Tensor, graph: CSRGraph) -> Tensor:
    """A one-head PyG ``GATConv`` (no residual) evaluated as ``W (sum_j a_ij x_j) + b`` on a CSR graph.

    ``GATConv`` computes ``sum_j a_ij (W x_j) + b``. With one head the projection ``W`` commutes with the
    attention-weighted sum, and the attention logits ``att_src . W x_j`` equal ``(W^T att_src) . x_j``, so
    aggregating in the input width (512 for GraphMAE's decoder) and projecting afterwards is the same
    function with the same parameters (``conv``'s own, so checkpoints stay ``GATConv``'s) and the same
    gradients, up to float rounding. For the decoder, whose output is the input-feature width (1,433 on
    Cora), this moves the per-edge work from 1,433 to 512 values per edge; on a graph whose rows are a
    subset of the nodes (:meth:`CSRGraph.rows_subset`, the hidden nodes) only those rows are projected.

    Shapes:
        x: ``[N, in]``; graph: ``R`` rows over ``N`` nodes
        returns: ``[R, out]``
    """
    if conv.heads != 1 or conv.lin is None or getattr(conv, "res", None) is not None:
        raise ValueError("gat_project_last needs a one-head GATConv with a shared projection and no residual")
    w = conv.lin.weight  # [out, in]
    att = torch.cat([conv.att_src.reshape(1, -1), conv.att_dst.reshape(1, -1)]) @ w  # [2, in]
    a = F.linear(x, att)  # [N, 2]
    logits = a[:, 0].index_select(0, graph.col) + a[:, 1].index_select(0, graph.dst)
    alpha = edge_softmax(F.leaky_relu(logits.float(), conv.negative_slope).unsqueeze(-1), graph)
    alpha = F.dropout(alpha, p=conv.dropout, training=conv.training)
    agg = aggregate(alpha, x.unsqueeze(1), graph).reshape(graph.num_rows, -1)  # [R, in]
    return F.linear(agg, w, conv.bias)


@register("decoder", "gnn")
class GNNDecoder(nn.Module):
    """``encoder_to_decoder`` linear, re-mask (hidden codes -> 0), one GAT or GIN layer to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, conv: str = "gat", heads: int = 1, feat_drop: float = 0.2,
                 attn_drop: float = 0.1, negative_slope: float = 0.2, norm: str | None = None,
                 activation: str = "prelu", remask: bool = True, masked_only: bool = True,
                 project_last: bool = True) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv, GINConv

        self.remask, self.feat_drop, self.kind = remask, feat_drop, conv
        #: message passing only into hidden nodes (the only rows the loss reads); exact for the loss and its
        #: gradients, and halves the decoder's cost at mask ratio 0.5. Visible rows of ``pred`` then hold
        #: the layer's output without messages (bias only for GAT) and carry no meaning.
        self.masked_only = masked_only
        #: one-head GAT evaluated as projection after aggregation (:func:`gat_project_last`); same function
        self.project_last = project_last
        #: GAT on the cached CSR graph (:mod:`maezoo.graph.gat`); ``False``: the PyG module (reference path)
        self.fast = True
        self.encoder_to_decoder = nn.Linear(in_dim, in_dim, bias=False)
        if conv == "gat":
            if out_dim % heads:
                raise ValueError(f"decoder out_dim {out_dim} must divide by heads {heads}")
            self.conv = GATConv(in_dim, out_dim // heads, heads, concat=True, negative_slope=negative_slope,
                                dropout=attn_drop, add_self_loops=False)
            graphmae_init_(self.conv)
        elif conv == "gin":
            self.conv = GINConv(GINMLP(in_dim, in_dim, out_dim, norm, activation, outer=False), train_eps=False)
        else:
            raise ValueError(f"decoder conv must be 'gat' or 'gin', got {conv!r}")

    def forward(self, latent: Tensor, mask: Mask, grid: tuple[int, ...], context: dict[str, Any] | None = None) -> Tensor:
        b, n, d = latent.shape
        if self.remask:
            # hidden rows are zeroed right after the projection: project only the visible rows (the same values
            # and gradients; the hidden rows' codes get no gradient either way)
            vis = (~mask.mask).reshape(-1).nonzero().squeeze(-1)
            flat = latent.reshape(b * n, d)
            proj = self.encoder_to_decoder(flat.index_select(0, vis))
            x = proj.new_zeros(b * n, proj.shape[-1]).index_copy(0, vis, proj).view(b, n, -1)
        else:
            x = self.encoder_to_decoder(latent)
        x, ei, batch = _flatten(x, context)
        hidden = mask.mask.reshape(-1)
        restrict = self.masked_only and self.kind == "gat" and bool(hidden.any())
        x = dropout(x, self.feat_drop, self.training)
        if self.kind == "gin":
            self.conv.nn.batch = batch
            return self.conv(x, ei).view(b, n, -1)
        if self.fast and fits_gat_conv(self.conv):
            graph = csr_graph(ei, b * n)
            if restrict:
                graph = graph.rows_subset(hidden)
            if self.project_last and self.conv.heads == 1 and self.conv.res is None:
                out = gat_project_last(self.conv, x, graph)
            else:
                out = gat_conv(self.conv, x, graph)
        else:
            out = self.conv(x, ei[:, hidden[ei[1]]] if restrict else ei)
            if not restrict:
                return out.view(b, n, -1)
            out = out[hidden]
        if not restrict:
            return out.view(b, n, -1)
        # messages reach only the hidden nodes; the visible rows hold the bias (no messages) and carry no meaning
        rows = hidden.nonzero().squeeze(-1)
        full = (self.conv.bias.to(out.dtype).expand(b * n, -1) if self.conv.bias is not None
                else out.new_zeros(b * n, out.shape[-1]))
        return full.index_copy(0, rows, out).view(b, n, -1)


@register("decoder", "mlp")
class MLPDecoder(nn.Module):
    """The ablation decoders: ``encoder_to_decoder`` then an MLP (``hidden`` set) or a linear layer; no re-mask."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None, dropout: float = 0.2,
                 activation: str = "prelu") -> None:
        super().__init__()
        self.encoder_to_decoder = nn.Linear(in_dim, in_dim, bias=False)
        if hidden:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), make_activation(activation), nn.Dropout(dropout),
                                     nn.Linear(hidden, out_dim))
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def forward(self, latent: Tensor, mask: Mask, grid: tuple[int, ...], context: dict[str, Any] | None = None) -> Tensor:
        return self.net(self.encoder_to_decoder(latent))


@register("model", "graphmae")
def graphmae(
    in_dim: Size,
    encoder: Literal["gat", "gin"] = "gat",
    decoder: Literal["gat", "gin", "mlp", "linear"] = "gat",
    hidden: Size = 512,
    num_layers: Size = 2,
    heads: Annotated[Size, Divides("hidden")] = 4,
    out_heads: Annotated[Size, Divides("in_dim")] = 1,
    feat_drop: Rate = 0.2,
    attn_drop: Rate = 0.1,
    negative_slope: NonNegative = 0.2,
    residual: bool = False,
    norm: Literal["none", "batchnorm", "layernorm", "graphnorm"] | None = None,
    activation: Literal["prelu", "relu", "elu", "gelu", "none"] | None = "prelu",
    mask_ratio: Ratio = 0.5,
    replace_rate: Rate = 0.05,
    loss: Literal["sce", "mse"] = "sce",
    alpha: Positive = 3.0,
    mlp_hidden: Size | None = None,
    decode_masked_only: bool = True,
) -> MaskedAutoencoder:
    """GraphMAE as a :class:`MaskedAutoencoder` (defaults: the paper's Cora configuration).

    ``decoder``: ``gat`` or ``gin`` (one GNN layer, re-mask), ``mlp`` or ``linear`` (ablation).
    ``decode_masked_only``: the GAT decoder passes messages only into hidden nodes, the only rows the loss
    reads (the same loss and gradients, half the decoder's cost at mask ratio 0.5).
    """
    tok = GraphNodeTokenizer(in_dim)
    if encoder == "gat":
        enc: nn.Module = GATEncoder(in_dim, hidden, num_layers, heads, feat_drop, attn_drop, negative_slope,
                                    residual, norm, activation)
    elif encoder == "gin":
        enc = GINEncoder(in_dim, hidden, num_layers, feat_drop, norm, activation)
    else:
        raise ValueError(f"encoder must be 'gat' or 'gin', got {encoder!r}")
    if decoder in ("gat", "gin"):
        dec: nn.Module = GNNDecoder(hidden, in_dim, decoder, out_heads, feat_drop, attn_drop, negative_slope, norm,
                                    activation, masked_only=decode_masked_only)
    elif decoder == "mlp":
        dec = MLPDecoder(hidden, in_dim, mlp_hidden or hidden, activation=activation)
    elif decoder == "linear":
        dec = MLPDecoder(hidden, in_dim, None)
    else:
        raise ValueError(f"decoder must be 'gat', 'gin', 'mlp' or 'linear', got {decoder!r}")
    if loss == "sce":
        loss_fn: Any = ScaledCosineError(alpha)
    elif loss == "mse":
        loss_fn = MaskedMSE()
    else:
        raise ValueError(f"loss must be 'sce' or 'mse', got {loss!r}")
    model = MaskedAutoencoder(tok, enc, dec, build_masking("node", ratio=mask_ratio), target="raw", loss=loss_fn,
                              mask_mode="replace", replace_rate=replace_rate)
    # GraphMAE initialises its mask token to zeros. The core's N(0, 0.02) token has a norm of ~0.76 over
    # Cora's 1433 dimensions, three times a row-normalised feature row's (~0.24), and measurably hurts
    # (linear probe after 60 epochs: 71.1 vs 76.5).
    nn.init.zeros_(model.mask_token)
    return model


graphmae.smoke_kwargs = {"in_dim": 8, "hidden": 16, "heads": 2}  # type: ignore[attr-defined]  (tests/core/test_registry.py)
