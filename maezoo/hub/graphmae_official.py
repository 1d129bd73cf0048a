"""THUDM/GraphMAE's ``pyg`` branch (``graphmae/models/edcoder.PreModel``, ``checkpoint.pt``) into maezoo's ``graphmae``.

Where the architectures correspond the mapping is a name table:

    enc_mask_token [1, F]                          -> mask_token [F]
    encoder.gat_layers.<l>.lin_src.weight           -> encoder.blocks.<l>.conv.lin.weight   (lin_dst: the same module)
    encoder.gat_layers.<l>.{att_src,att_dst,bias}   -> encoder.blocks.<l>.conv.*
    encoder.gat_layers.<l>.norm.* / activation.weight -> encoder.blocks.<l>.norm.norm.* / act.weight
    encoder.layers.<l>.{eps, nn.mlp.linears.{0,1}, nn.mlp.norms.0, nn.mlp.activations.0, nn.norm, nn.act} (GIN)
                                                    -> encoder.blocks.<l>.{eps, nn.lin1/lin2, nn.norm1.norm, nn.act1,
                                                       nn.norm2.norm, nn.act2}
    encoder_to_decoder.weight                       -> decoder.encoder_to_decoder.weight
    decoder.gat_layers.0.* (GAT) / decoder.layers.0.* (GIN) / decoder.{0,1,3}.* (MLP) / decoder.* (linear)
                                                    -> decoder.conv.* / decoder.conv.* / decoder.net.* / decoder.net.*

Both GATs are the same function: ``lin`` without bias, per-head attention logits ``att_src . W x_j + att_dst . W x_i``,
leaky ReLU (0.2), softmax over each node's incoming edges, sum, heads concatenated, bias, then norm and activation;
no self-loops inside the layer (the official data loader adds them, maezoo's tokenizer does).

Not in the file, so assumed (``notes`` say so; pass them as keyword arguments to override): the activation when it
is not PReLU (PReLU has a weight), and the training settings (mask rate, replace rate, loss, ``alpha_l``).
Refused, naming the reason: the DGL ``main`` branch (``fc``/``attn_l``/``attn_r``), ``res_fc`` residuals (the pyg
branch projects the residual from the transformed features, maezoo's PyG ``GATConv`` from the input),
``concat_hidden``, a decoder with ``nhead_out > 1`` (the official one then outputs ``nhead_out * F`` features),
a one-layer GAT encoder (the official one-layer branch drops the activation) and graph-norm layers.

Shapes:
    encoder.gat_layers.<l>.att_src ``[1, H, C]`` (hidden ``H * C``); enc_mask_token ``[1, F]``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from maezoo.hub.io import Checkpoint, HubError, refuse_unknown
from maezoo.hub.vit import Pivot, block_count

NAME = "graphmae_official"
EXPECTED = ("enc_mask_token [1, F], encoder.gat_layers.<l>.{lin_src.weight, att_src, att_dst, bias} (or the GIN "
            "encoder.layers.<l>.nn.*), encoder_to_decoder.weight, decoder.gat_layers.0.* / decoder.layers.0.* / "
            "decoder.{0,3}.* / decoder.weight (THUDM/GraphMAE pyg branch)")
#: (official regex, maezoo template) pairs; ``{0}`` is the layer index
RENAMES = (
    (r"encoder\.gat_layers\.(\d+)\.lin_src\.weight", "encoder.blocks.{0}.conv.lin.weight"),
    (r"encoder\.gat_layers\.(\d+)\.(att_src|att_dst|bias)", "encoder.blocks.{0}.conv.{1}"),
    (r"encoder\.gat_layers\.(\d+)\.norm\.(.+)", "encoder.blocks.{0}.norm.norm.{1}"),
    (r"encoder\.gat_layers\.(\d+)\.activation\.weight", "encoder.blocks.{0}.act.weight"),
    (r"encoder\.layers\.(\d+)\.eps", "encoder.blocks.{0}.eps"),
    (r"encoder\.layers\.(\d+)\.nn\.mlp\.linears\.0\.(.+)", "encoder.blocks.{0}.nn.lin1.{1}"),
    (r"encoder\.layers\.(\d+)\.nn\.mlp\.linears\.1\.(.+)", "encoder.blocks.{0}.nn.lin2.{1}"),
    (r"encoder\.layers\.(\d+)\.nn\.mlp\.norms\.0\.(.+)", "encoder.blocks.{0}.nn.norm1.norm.{1}"),
    (r"encoder\.layers\.(\d+)\.nn\.mlp\.activations\.0\.weight", "encoder.blocks.{0}.nn.act1.weight"),
    (r"encoder\.layers\.(\d+)\.nn\.norm\.(.+)", "encoder.blocks.{0}.nn.norm2.norm.{1}"),
    (r"encoder\.layers\.(\d+)\.nn\.act\.weight", "encoder.blocks.{0}.nn.act2.weight"),
    (r"encoder_to_decoder\.weight", "decoder.encoder_to_decoder.weight"),
    (r"decoder\.gat_layers\.0\.lin_src\.weight", "decoder.conv.lin.weight"),
    (r"decoder\.gat_layers\.0\.(att_src|att_dst|bias)", "decoder.conv.{0}"),
    (r"decoder\.layers\.0\.eps", "decoder.conv.eps"),
    (r"decoder\.layers\.0\.nn\.linears\.0\.(.+)", "decoder.conv.nn.lin1.{0}"),
    (r"decoder\.layers\.0\.nn\.linears\.1\.(.+)", "decoder.conv.nn.lin2.{0}"),
    (r"decoder\.layers\.0\.nn\.norms\.0\.(.+)", "decoder.conv.nn.norm1.norm.{0}"),
    (r"decoder\.layers\.0\.nn\.activations\.0\.weight", "decoder.conv.nn.act1.weight"),
    (r"decoder\.([013])\.(weight|bias)", "decoder.net.{0}.{1}"),
    (r"decoder\.(weight|bias)", "decoder.net.{0}"),
)
#: the GAT modules' own activation (``GAT.activation``), registered but unused in the official forward
UNUSED = re.compile(r"^(encoder|decoder)\.activation\.weight$")


@dataclass
class GraphMAEPivot(Pivot):
    """The official state dict as it is, with the encoder and decoder kinds its keys show."""

    encoder: str = "gat"
    decoder: str = "gat"


def matches(ckpt: Checkpoint) -> bool:
    return "enc_mask_token" in ckpt.state


def _kind(state: dict[str, Tensor], part: str) -> str | None:
    if f"{part}.gat_layers.0.att_src" in state:
        return "gat"
    if any(k.startswith(f"{part}.layers.0.nn.") for k in state):
        return "gin"
    if part == "decoder" and "decoder.3.weight" in state:
        return "mlp"
    if part == "decoder" and "decoder.weight" in state:
        return "linear"
    return None


def to_pivot(ckpt: Checkpoint) -> GraphMAEPivot:
    s = ckpt.state
    if any(re.search(r"\.(fc|attn_l|attn_r)(\.|$)", k) for k in s):
        raise HubError(f"{ckpt.path}: the DGL layout of GraphMAE's main branch (fc, attn_l, attn_r); maezoo maps the "
                       "pyg branch (lin_src, att_src, att_dst). Fix: pre-train with the pyg branch, or with maezoo's "
                       "graphmae recipes")
    enc, dec = _kind(s, "encoder"), _kind(s, "decoder")
    if enc is None or dec is None:
        raise HubError(f"{ckpt.path}: cannot tell the {'encoder' if enc is None else 'decoder'} of this GraphMAE "
                       f"checkpoint; expected {EXPECTED}")
    why = []
    if any(".res_fc." in k for k in s):
        why.append("res_fc residuals (the pyg branch projects the residual from the transformed features, maezoo's "
                   "PyG GATConv from the layer input)")
    if any(k.endswith(".mean_scale") for k in s):
        why.append("graph-norm layers (NormLayer)")
    if why:
        raise HubError(f"{ckpt.path}: a GraphMAE with {'; '.join(why)}, which maezoo's graphmae does not have. Fix: "
                       "pre-train without them (residual: False, norm: batchnorm/layernorm/none)")
    return GraphMAEPivot(state=dict(s), path=ckpt.path, encoder=enc, decoder=dec,
                         notes=["training settings (mask_rate, replace_rate, loss_fn, alpha_l) are not in the file: "
                                "maezoo's graphmae defaults apply (the paper's Cora settings); pass them to override"])


def _shape(pv: GraphMAEPivot, key: str) -> tuple[int, ...]:
    if key not in pv.state:
        raise HubError(f"{pv.path}: missing {key}; a GraphMAE pyg checkpoint holds {EXPECTED}")
    return tuple(int(v) for v in pv.state[key].shape)


def _norm(s: dict[str, Tensor], prefix: str) -> str | None:
    if f"{prefix}.running_mean" in s:
        return "batchnorm"
    return "layernorm" if f"{prefix}.weight" in s else None


def infer_spec(pv: GraphMAEPivot) -> dict[str, Any]:
    s = pv.state
    in_dim = _shape(pv, "enc_mask_token")[-1]
    if pv.encoder == "gat":
        layers = block_count(s, "encoder.gat_layers.")
        if layers < 2:
            raise HubError(f"{pv.path}: a one-layer GAT encoder; the official one-layer branch applies no activation "
                           "where maezoo's encoder does. Fix: use a checkpoint with num_layers >= 2")
        _, heads, c = _shape(pv, "encoder.gat_layers.0.att_src")
        hidden, norm = heads * c, _norm(s, "encoder.gat_layers.0.norm")
        prelu = "encoder.gat_layers.0.activation.weight" in s
    else:
        layers = block_count(s, "encoder.layers.")
        hidden, heads = _shape(pv, "encoder.layers.0.nn.mlp.linears.0.weight")[0], 1
        norm = _norm(s, "encoder.layers.0.nn.mlp.norms.0")
        prelu = "encoder.layers.0.nn.mlp.activations.0.weight" in s
    if _shape(pv, "encoder_to_decoder.weight") != (hidden, hidden):
        raise HubError(f"{pv.path}: encoder_to_decoder is {_shape(pv, 'encoder_to_decoder.weight')}, not "
                       f"({hidden}, {hidden}): a concat_hidden model, which maezoo's graphmae does not have")
    kwargs: dict[str, Any] = {"in_dim": in_dim, "encoder": pv.encoder, "decoder": pv.decoder, "hidden": hidden,
                              "num_layers": layers, "norm": norm, "activation": "prelu" if prelu else "relu"}
    if pv.encoder == "gat":
        kwargs["heads"] = heads
    if not prelu:
        pv.notes.append("the activation is not stored (it is not PReLU): 'relu' assumed; pass activation='elu', "
                        "'gelu' or 'none' if the run used another")
    if pv.decoder == "gat":
        _, out_heads, width = _shape(pv, "decoder.gat_layers.0.att_src")
        if out_heads != 1 or width != in_dim:
            raise HubError(f"{pv.path}: a GAT decoder of {out_heads} head(s) x {width}; the official decoder outputs "
                           f"nhead_out * F features, so only nhead_out=1 reconstructs the {in_dim} features")
    elif pv.decoder == "mlp":
        if not prelu:
            raise HubError(f"{pv.path}: the official MLP decoder uses PReLU, maezoo's the model's activation, and "
                           "this file's encoder does not use PReLU; pre-train with activation prelu")
        kwargs["mlp_hidden"] = _shape(pv, "decoder.0.weight")[0]
    return {"name": "graphmae", "kwargs": kwargs}


def preset_name(kwargs: dict[str, Any]) -> str:
    return "graphmae"


def pivot_to_maezoo(pv: GraphMAEPivot) -> tuple[dict[str, Tensor], list[str]]:
    out: dict[str, Tensor] = {"mask_token": pv.state["enc_mask_token"].reshape(-1)}
    ignored, unknown = [], []
    rules = [(re.compile(f"^{pat}$"), tpl) for pat, tpl in RENAMES]
    for key, value in pv.state.items():
        if key == "enc_mask_token":
            continue
        m = re.match(r"^(encoder|decoder)\.gat_layers\.(\d+)\.lin_dst\.weight$", key)
        if m:
            if not value.equal(pv.state[key.replace("lin_dst", "lin_src")]):
                raise HubError(f"{pv.path}: {key} differs from lin_src (a bipartite GATConv); GraphMAE shares them")
            continue
        if UNUSED.match(key):
            ignored.append(key)
            continue
        for pat, tpl in rules:
            hit = pat.match(key)
            if hit:
                out[tpl.format(*hit.groups())] = value
                break
        else:
            unknown.append(key)
    refuse_unknown(pv.path, "GraphMAE's pyg layout", unknown, EXPECTED)
    return out, ignored


__all__ = ["infer_spec", "matches", "pivot_to_maezoo", "to_pivot"]
