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
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maezoo.core.losses import MaskedMSE, ScaledCosineError
from maezoo.core.mae import MaskedAutoencoder
from maezoo.core.masking import Mask, NodeMasking
from maezoo.core.ops import dropout
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
    """dropout -> GATConv (concatenated heads, + residual) -> norm -> activation."""

    def __init__(self, in_dim, out_per_head, heads, feat_drop, attn_drop, negative_slope, residual, norm, activation):
        super().__init__()
        from torch_geometric.nn import GATConv

        self.feat_drop = feat_drop
        self.conv = GATConv(in_dim, out_per_head, heads, concat=True, negative_slope=negative_slope,
                            dropout=attn_drop, add_self_loops=False, residual=residual)
        graphmae_init_(self.conv)
        self.norm = GraphNorm(norm, out_per_head * heads)
        self.act = make_activation(activation)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> Tensor:
        x = dropout(x, self.feat_drop, self.training)
        return self.act(self.norm(self.conv(x, edge_index), batch))


@register("encoder", "gat")
class GATEncoder(nn.Module):
    """GraphMAE's GAT encoder: ``num_layers`` GAT layers of ``heads`` concatenated heads, ``hidden`` wide."""

    num_prefix_tokens = 0

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
        for blk in self.blocks:
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


def gat_project_last(conv: nn.Module, x: Tensor, edge_index: Tensor, rows: Tensor | None = None) -> Tensor:
    """A one-head PyG ``GATConv`` (no residual) evaluated as ``W (sum_j a_ij x_j) + b``.

    ``GATConv`` computes ``sum_j a_ij (W x_j) + b``. With one head the projection ``W`` commutes with the
    attention-weighted sum, and the attention logits ``att_src . W x_j`` equal ``(W^T att_src) . x_j``, so
    aggregating in the input width (512 for GraphMAE's decoder) and projecting afterwards is the same
    function with the same parameters (``conv``'s own, so checkpoints stay ``GATConv``'s) and the same
    gradients, up to float rounding. For the decoder, whose output is the input-feature width (1,433 on
    Cora), this moves the per-edge gather/multiply/scatter from 1,433 to 512 values per edge; with
    ``rows`` only those rows are projected (the loss reads only the hidden nodes).

    Shapes:
        x: ``[N, in]``; edge_index: ``[2, E]`` (source, target); rows: ``[R]`` node ids or ``None``
        returns: ``[R, out]`` (or ``[N, out]`` when ``rows`` is ``None``)
    """
    from torch_geometric.utils import scatter, softmax

    if conv.heads != 1 or conv.lin is None or getattr(conv, "res", None) is not None:
        raise ValueError("gat_project_last needs a one-head GATConv with a shared projection and no residual")
    n = x.shape[0]
    w = conv.lin.weight  # [out, in]
    a_src = conv.att_src.reshape(1, -1) @ w  # [1, in]
    a_dst = conv.att_dst.reshape(1, -1) @ w
    src, dst = edge_index[0], edge_index[1]
    # index_select, not x[idx]: its backward is index_add_ rather than the much slower index_put_ (CPU)
    logit = (x @ a_src.t()).squeeze(-1).index_select(0, src) + (x @ a_dst.t()).squeeze(-1).index_select(0, dst)  # [E]
    alpha = softmax(F.leaky_relu(logit, conv.negative_slope), dst, num_nodes=n)
    alpha = F.dropout(alpha, p=conv.dropout, training=conv.training)
    agg = scatter(alpha.unsqueeze(-1) * x.index_select(0, src), dst, dim=0, dim_size=n, reduce="sum")  # [N, in]
    if rows is not None:
        agg = agg.index_select(0, rows)
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
        if restrict:
            ei = ei[:, hidden[ei[1]]]
        x = dropout(x, self.feat_drop, self.training)
        if self.kind == "gat" and self.project_last and self.conv.heads == 1:
            if not restrict:
                return gat_project_last(self.conv, x, ei).view(b, n, -1)
            rows = hidden.nonzero().squeeze(-1)
            out = gat_project_last(self.conv, x, ei, rows)  # [M, out]
            full = (self.conv.bias.to(out.dtype).expand(b * n, -1) if self.conv.bias is not None
                    else out.new_zeros(b * n, out.shape[-1]))
            return full.index_copy(0, rows, out).view(b, n, -1)
        if self.kind == "gin":
            self.conv.nn.batch = batch
        return self.conv(x, ei).view(b, n, -1)


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
    in_dim: int,
    encoder: str = "gat",
    decoder: str = "gat",
    hidden: int = 512,
    num_layers: int = 2,
    heads: int = 4,
    out_heads: int = 1,
    feat_drop: float = 0.2,
    attn_drop: float = 0.1,
    negative_slope: float = 0.2,
    residual: bool = False,
    norm: str | None = None,
    activation: str = "prelu",
    mask_ratio: float = 0.5,
    replace_rate: float = 0.05,
    loss: str = "sce",
    alpha: float = 3.0,
    mlp_hidden: int | None = None,
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
    model = MaskedAutoencoder(tok, enc, dec, NodeMasking(mask_ratio), target="raw", loss=loss_fn,
                              mask_mode="replace", replace_rate=replace_rate)
    # GraphMAE initialises its mask token to zeros. The core's N(0, 0.02) token has a norm of ~0.76 over
    # Cora's 1433 dimensions, three times a row-normalised feature row's (~0.24), and measurably hurts
    # (linear probe after 60 epochs: 71.1 vs 76.5).
    nn.init.zeros_(model.mask_token)
    return model


graphmae.smoke_kwargs = {"in_dim": 8, "hidden": 16, "heads": 2}  # type: ignore[attr-defined]  (tests/test_registry.py)
