"""Parity of the official GraphMAE ``pyg`` branch layout against a test-only peer with its module structure and
random weights: node embeddings, reconstruction of the hidden nodes and the SCE loss under the same hidden nodes
(1e-5, fp32), for the GAT (node tasks) and GIN (graph tasks) configurations; bit-identical maezoo round trip."""

from __future__ import annotations

import pytest
import torch
from official_graphmae import official_graphmae

import maezoo
from maezoo.core.masking import Mask
from maezoo.hub import HubError, export, import_checkpoint, load_pretrained

pyg = pytest.importorskip("torch_geometric")
TOL = 1e-5
N, F = 30, 12


def _graph():
    from torch_geometric.data import Data
    from torch_geometric.utils import to_undirected

    g = torch.Generator().manual_seed(1)
    src, dst = torch.randint(0, N, (2, 80), generator=g)
    keep = src != dst
    return Data(x=torch.rand(N, F, generator=g), edge_index=to_undirected(torch.stack([src[keep], dst[keep]]), num_nodes=N))


def compare(model, peer, data, seed: int = 2) -> tuple[float, float, float]:
    """(embeddings, reconstruction of the hidden nodes, loss) under one set of hidden nodes."""
    from torch_geometric.utils import add_self_loops

    ei = add_self_loops(data.edge_index, num_nodes=N)[0]  # the official data loader's self-loops
    hidden = torch.randperm(N, generator=torch.Generator().manual_seed(seed))[: N // 2]
    mask = torch.zeros(1, N, dtype=torch.bool)
    mask[0, hidden] = True
    model.eval()
    with torch.no_grad():
        feats = float((model.encode(data, pool="none")[0] - peer.embed(data.x, ei)).abs().max())
        out = model(data, mask=Mask.from_bool(mask))
        loss, recon = peer.mask_attr_prediction(data.x, ei, hidden)
    rows = mask[0].nonzero().squeeze(-1)  # the rows the loss reads (maezoo's decoder leaves the others unset)
    return feats, float((out.pred[0, rows] - recon[rows]).abs().max()), abs(float(out.loss) - float(loss))


@pytest.mark.parametrize("kw", [{}, {"norm": "batchnorm", "num_layers": 3}, {"norm": "layernorm", "act": "elu"},
                                {"encoder_type": "gin", "decoder_type": "gin", "norm": "batchnorm"},
                                {"decoder_type": "mlp"}], ids=["gat", "gat-bn-3", "gat-ln-elu", "gin", "gat-mlp"])
def test_official_graphmae_parity_and_round_trip(tmp_path, kw):
    peer = official_graphmae(**kw)
    torch.save(peer.state_dict(), tmp_path / "checkpoint.pt")
    act = kw.get("act", "prelu")
    overrides = {} if act == "prelu" else {"activation": act}
    imp = import_checkpoint(tmp_path / "checkpoint.pt", **overrides)
    assert imp.family == "graphmae_official" and any("not in the file" in n for n in imp.notes)
    model, spec = load_pretrained(tmp_path / "checkpoint.pt", **overrides)
    assert spec["kwargs"]["hidden"] == 16 and spec["kwargs"]["in_dim"] == F
    assert max(compare(model, peer, _graph())) < TOL
    export(model, tmp_path / "mz", to="maezoo", spec=spec)
    again = maezoo.create_model("graphmae", pretrained=str(tmp_path / "mz"), **spec["kwargs"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


def test_layouts_without_a_maezoo_counterpart_are_refused(tmp_path):
    sd = official_graphmae().state_dict()
    bad = {**sd, "encoder.gat_layers.0.res_fc.weight": torch.zeros(16, F)}
    torch.save(bad, tmp_path / "res.pt")
    with pytest.raises(HubError, match=r"res\.pt: a GraphMAE with res_fc residuals"):
        import_checkpoint(tmp_path / "res.pt")
    dgl = {"enc_mask_token": sd["enc_mask_token"], "encoder.gat_layers.0.fc.weight": torch.zeros(16, F)}
    torch.save(dgl, tmp_path / "dgl.pt")
    with pytest.raises(HubError, match=r"dgl\.pt: the DGL layout of GraphMAE's main branch"):
        import_checkpoint(tmp_path / "dgl.pt")
    torch.save(official_graphmae(nhead_out=2).state_dict(), tmp_path / "heads.pt")
    with pytest.raises(HubError, match=r"heads\.pt: a GAT decoder of 2 head\(s\) x 12"):
        import_checkpoint(tmp_path / "heads.pt")
