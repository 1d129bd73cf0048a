"""A test-only peer of THUDM/GraphMAE's ``pyg`` branch (``graphmae/models/{edcoder,gat,gin}.py``): the official
module structure and parameter names, re-implemented here (the official code is not a package), random weights.

Names: ``enc_mask_token`` ``[1, F]``, ``encoder.gat_layers.<l>.{lin_src,lin_dst}.weight`` (one shared module),
``att_src``/``att_dst`` ``[1, H, C]``, ``bias``, ``norm.*``, ``activation.weight`` (PReLU); the GAT's own unused
``encoder.activation.weight``; ``encoder_to_decoder.weight`` (no bias); the decoder a one-layer GAT (``nhead_out``
heads of ``F`` features, no activation) or ``decoder.layers.0.nn.{linears,norms,activations}`` (GIN). The GIN
encoder: ``encoder.layers.<l>.nn.{mlp.{linears,norms,activations},norm,act}``, ``eps``. The custom GATConv adds no
self-loops (the data loader does) and applies bias, then norm, then activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import softmax


def activation(name: str | None) -> nn.Module:
    return {"relu": nn.ReLU, "gelu": nn.GELU, "prelu": nn.PReLU, "elu": nn.ELU, None: nn.Identity}[name]()


def norm_class(name: str | None):
    return {"layernorm": nn.LayerNorm, "batchnorm": nn.BatchNorm1d}.get(name or "", nn.Identity)


class PygLinear(nn.Module):
    """``torch_geometric.nn.dense.linear.Linear`` without bias: a ``weight`` ``[out, in]``."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(o, i))
        nn.init.xavier_normal_(self.weight, gain=1.414)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class GATConv(nn.Module):
    def __init__(self, i: int, c: int, heads: int, norm=None, act: str | None = None) -> None:
        super().__init__()
        self.heads, self.c = heads, c
        self.register_buffer("res_fc", None)
        self.lin_src = PygLinear(i, heads * c)
        self.lin_dst = self.lin_src
        self.norm = norm(heads * c) if norm is not None and norm is not nn.Identity else None
        self.att_src = nn.Parameter(torch.empty(1, heads, c))
        self.att_dst = nn.Parameter(torch.empty(1, heads, c))
        self.bias = nn.Parameter(torch.zeros(heads * c))
        nn.init.xavier_normal_(self.att_src, gain=1.414)
        nn.init.xavier_normal_(self.att_dst, gain=1.414)
        self.activation = activation(act) if act else None

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.lin_src(x).view(-1, self.heads, self.c)
        src, dst = edge_index
        a = (h * self.att_src).sum(-1)[src] + (h * self.att_dst).sum(-1)[dst]
        alpha = softmax(F.leaky_relu(a, 0.2), dst, num_nodes=x.shape[0])
        out = torch.zeros_like(h).index_add_(0, dst, alpha.unsqueeze(-1) * h[src])
        out = out.view(-1, self.heads * self.c) + self.bias
        if self.norm is not None:
            out = self.norm(out)
        return self.activation(out) if self.activation else out


class GAT(nn.Module):
    def __init__(self, in_dim: int, num_hidden: int, out_dim: int, num_layers: int, nhead: int, nhead_out: int,
                 act: str | None, norm: str | None, encoding: bool) -> None:
        super().__init__()
        self.activation = activation(act)  # registered by the official GAT, unused in its forward
        last_act, last_norm = (act, norm_class(norm)) if encoding else (None, None)
        layers = []
        if num_layers == 1:  # the official one-layer branch passes no activation, encoding or not
            layers.append(GATConv(in_dim, out_dim, nhead_out, last_norm, None))
        else:
            layers.append(GATConv(in_dim, num_hidden, nhead, norm_class(norm), act))
            layers += [GATConv(num_hidden * nhead, num_hidden, nhead, norm_class(norm), act) for _ in range(num_layers - 2)]
            layers.append(GATConv(num_hidden * nhead, out_dim, nhead_out, last_norm, last_act))
        self.gat_layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        for layer in self.gat_layers:
            x = layer(x, edge_index)
        return x


class MLP(nn.Module):
    def __init__(self, i: int, hidden: int, o: int, act: str | None, norm: str | None) -> None:
        super().__init__()
        self.linears = nn.ModuleList([nn.Linear(i, hidden), nn.Linear(hidden, o)])
        self.norms = nn.ModuleList([norm_class(norm)(hidden)])
        self.activations = nn.ModuleList([activation(act)])

    def forward(self, x: Tensor) -> Tensor:
        return self.linears[1](self.activations[0](self.norms[0](self.linears[0](x))))


class ApplyNodeFunc(nn.Module):
    def __init__(self, mlp: MLP, o: int, act: str | None, norm: str | None) -> None:
        super().__init__()
        self.mlp, self.norm, self.act = mlp, norm_class(norm)(o), activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.mlp(x)))


class GINConv(nn.Module):
    """PyG's ``GINConv(nn, train_eps=False)``: ``nn((1 + eps) x_i + sum_j x_j)``, ``eps`` a buffer."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.nn = net
        self.register_buffer("eps", torch.zeros(1))

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        agg = torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]])
        return self.nn((1 + self.eps) * x + agg)


class GIN(nn.Module):
    def __init__(self, in_dim: int, num_hidden: int, out_dim: int, num_layers: int, act: str | None, norm: str | None,
                 encoding: bool) -> None:
        super().__init__()
        layers = []
        if num_layers == 1:
            layers.append(GINConv(MLP(in_dim, num_hidden, out_dim, act, norm)))  # the decoder (not encoding)
        else:
            dims = [in_dim] + [num_hidden] * (num_layers - 1)
            layers += [GINConv(ApplyNodeFunc(MLP(d, num_hidden, num_hidden, act, norm), num_hidden, act, norm))
                       for d in dims]
            if not encoding:
                raise ValueError("only the one-layer GIN decoder is built here")
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, edge_index)
        return x


class PreModel(nn.Module):
    """``edcoder.PreModel`` (eval path: hidden nodes all get the mask token; ``concat_hidden=False``)."""

    def __init__(self, in_dim: int = 12, num_hidden: int = 16, num_layers: int = 2, nhead: int = 4, nhead_out: int = 1,
                 act: str | None = "prelu", norm: str | None = None, encoder_type: str = "gat",
                 decoder_type: str = "gat", alpha_l: float = 3.0) -> None:
        super().__init__()
        self.decoder_type, self.alpha_l = decoder_type, alpha_l
        if encoder_type == "gat":
            self.encoder = GAT(in_dim, num_hidden // nhead, num_hidden // nhead, num_layers, nhead, nhead, act, norm, True)
        else:
            self.encoder = GIN(in_dim, num_hidden, num_hidden, num_layers, act, norm, True)
        if decoder_type == "gat":
            self.decoder = GAT(num_hidden, num_hidden // nhead_out, in_dim, 1, nhead, nhead_out, act, norm, False)
        elif decoder_type == "gin":
            self.decoder = GIN(num_hidden, num_hidden, in_dim, 1, act, norm, False)
        else:
            self.decoder = nn.Sequential(nn.Linear(num_hidden, num_hidden), nn.PReLU(), nn.Dropout(0.2),
                                         nn.Linear(num_hidden, in_dim))
        self.enc_mask_token = nn.Parameter(torch.zeros(1, in_dim))
        self.encoder_to_decoder = nn.Linear(num_hidden, num_hidden, bias=False)

    def embed(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.encoder(x, edge_index)

    def mask_attr_prediction(self, x: Tensor, edge_index: Tensor, mask_nodes: Tensor) -> tuple[Tensor, Tensor]:
        """``(loss, recon)`` with the given hidden nodes (all mask tokens, as at ``replace_rate`` 0)."""
        use_x = x.clone()
        use_x[mask_nodes] = 0.0
        use_x[mask_nodes] += self.enc_mask_token
        rep = self.encoder_to_decoder(self.encoder(use_x, edge_index))
        if self.decoder_type in ("mlp", "linear"):
            recon = self.decoder(rep)
        else:
            rep[mask_nodes] = 0
            recon = self.decoder(rep, edge_index)
        a, b = F.normalize(recon[mask_nodes], dim=-1), F.normalize(x[mask_nodes], dim=-1)
        return (1 - (a * b).sum(-1)).pow(self.alpha_l).mean(), recon


def official_graphmae(**kw) -> PreModel:
    """The peer with random weights (every parameter perturbed; batch-norm statistics set away from 0/1)."""
    torch.manual_seed(0)
    model = PreModel(**kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model
