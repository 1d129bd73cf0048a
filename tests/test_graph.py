"""Graph modality (GraphMAE): tokenizer, masking through the core, losses, data, system, bad input.

Never downloads: real data comes from ``<repo>/../shared/data`` (copied into tmp dirs); tests needing it
skip when it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import maezoo
from maezoo.config import ConfigError, from_dict
from maezoo.engine.system import RunContext
from maezoo.graph.models import graphmae
from maezoo.graph.tokenizer import GraphNodeTokenizer
from maezoo.registry import get

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_cora = pytest.mark.skipif(not (SHARED / "planetoid" / "Cora" / "raw").is_dir(), reason="shared Cora data absent")
needs_tu = pytest.mark.skipif(not (SHARED / "tu" / "MUTAG.zip").is_file(), reason="shared TU data absent")


def tiny_graph(n: int = 6, f: int = 4, edges: list[tuple[int, int]] | None = None, seed: int = 0):
    from torch_geometric.data import Data

    g = torch.Generator().manual_seed(seed)
    if edges is None:
        edges = [(i, (i + 1) % n) for i in range(n)] + [((i + 1) % n, i) for i in range(n)]
    ei = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
    return Data(x=torch.rand(n, f, generator=g), edge_index=ei, num_nodes=n)


def small_model(f: int = 4, **kw):
    args = dict(hidden=8, heads=2, num_layers=2, feat_drop=0.0, attn_drop=0.0)
    args.update(kw)
    return graphmae(f, **args)


def test_registered():
    comps = maezoo.list_components()
    assert "graph_nodes" in comps["tokenizer"]
    assert {"gat", "gin"} <= set(comps["encoder"])
    assert {"gnn", "mlp"} <= set(comps["decoder"])
    assert "graphmae" in comps["model"] and "graphmae" in comps["system"]


def test_tokenizer_tiny_graph():
    data = tiny_graph()
    tok = GraphNodeTokenizer(4)
    tok.validate(data)
    t = tok(data)
    assert t.tokens.shape == (1, 6, 4) and t.grid == (6,)
    ei = t.context["edge_index"]
    assert ei.shape[1] == 12 + 6  # one self-loop per node added
    assert int((ei[0] == ei[1]).sum()) == 6
    assert t.context["num_graphs"] == 1 and t.context["batch"].tolist() == [0] * 6
    assert torch.equal(tok.patchify(data), data.x.unsqueeze(0))
    assert torch.equal(tok.unpatchify(tok.patchify(data), (6,)), data.x)
    assert tok(data).context["edge_index"] is ei  # cached per graph


def test_mask_through_core_replace_mode():
    torch.manual_seed(0)
    data = tiny_graph(n=10)
    model = small_model(replace_rate=0.0, mask_ratio=0.5)
    gen = torch.Generator().manual_seed(1)
    mask = model.sample_mask(data, generator=gen)
    assert mask.mask.shape == (1, 10) and int(mask.mask.sum()) == 5
    x = model._replace(data.x.unsqueeze(0), mask, None)
    hidden = mask.mask[0]
    assert torch.allclose(x[0, hidden], model.mask_token.expand(5, -1))  # mask token in input feature space
    assert torch.equal(x[0, ~hidden], data.x[~hidden])


def test_replace_rate_uses_other_nodes_features():
    torch.manual_seed(0)
    data = tiny_graph(n=200, f=3)
    model = small_model(f=3, replace_rate=0.5).train()
    mask = model.sample_mask(data, generator=torch.Generator().manual_seed(0))
    x = model._replace(data.x.unsqueeze(0), mask, torch.Generator().manual_seed(0))[0]
    hidden = x[mask.mask[0]]
    is_token = torch.isclose(hidden, model.mask_token.detach()).all(-1)
    assert 0 < int(is_token.sum()) < hidden.shape[0]
    others = hidden[~is_token]
    assert all(bool((torch.isclose(row, data.x).all(-1)).any()) for row in others)  # rows of real nodes


def test_gradients_only_from_masked_nodes():
    torch.manual_seed(0)
    data = tiny_graph(n=12)
    model = small_model()
    model.decoder.masked_only = False
    out = model(data, generator=torch.Generator().manual_seed(0))
    grad = torch.autograd.grad(out.loss, out.pred)[0][0]
    m = out.mask.mask[0]
    assert grad[~m].abs().sum() == 0 and grad[m].abs().sum() > 0
    assert out.target.shape == out.pred.shape == (1, 12, 4)


def test_decoder_masked_only_is_exact():
    torch.manual_seed(0)
    data = tiny_graph(n=30, f=5)
    model = small_model(f=5).eval()
    mask = model.sample_mask(data, generator=torch.Generator().manual_seed(3))
    model.decoder.masked_only = True
    a = model(data, mask=mask)
    ga = torch.autograd.grad(a.loss, list(model.parameters()), allow_unused=True)
    model.decoder.masked_only = False
    b = model(data, mask=mask)
    gb = torch.autograd.grad(b.loss, list(model.parameters()), allow_unused=True)
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    assert torch.allclose(a.pred[a.mask.mask], b.pred[b.mask.mask], atol=1e-5)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None) and (x is None or torch.allclose(x, y, atol=1e-5))


@pytest.mark.parametrize("decoder", ["gat", "mlp", "linear"])
@pytest.mark.parametrize("loss", ["sce", "mse"])
def test_decoders_and_losses(decoder, loss):
    torch.manual_seed(0)
    out = small_model(decoder=decoder, loss=loss)(tiny_graph(n=8))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.pred.shape == (1, 8, 4)


def test_gin_on_batch_of_graphs_and_pooling():
    from torch_geometric.data import Batch

    from maezoo.graph.evaluate import pool_graphs

    torch.manual_seed(0)
    batch = Batch.from_data_list([tiny_graph(n=5, seed=i) for i in range(3)])
    model = small_model(encoder="gin", decoder="gin", norm="batchnorm", replace_rate=0.0)
    out = model(batch)
    out.loss.backward()
    model.eval()
    node = model.encode(batch, pool="none")[0]
    assert node.shape == (15, 8)
    for p in ("mean", "max", "sum"):
        assert pool_graphs(node, batch.batch, 3, p).shape == (3, 8)


# -- bad input -------------------------------------------------------------------------------------------
def test_no_node_features_is_a_clear_error():
    data = tiny_graph()
    data.x = None
    with pytest.raises(ValueError, match="no node features"):
        small_model()(data)


def test_edge_index_out_of_range_is_a_clear_error():
    data = tiny_graph(edges=[(0, 1), (1, 9)])
    with pytest.raises(ValueError, match="refers to node 9 but the graph has 6 nodes"):
        small_model()(data)
    data = tiny_graph(edges=[(0, -1)])
    with pytest.raises(ValueError, match="refers to node -1"):
        small_model()(data)


def test_other_bad_inputs():
    data = tiny_graph()
    data.x = data.x[:, :3]
    with pytest.raises(ValueError, match="expects 4"):
        small_model()(data)
    data = tiny_graph()
    data.x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        small_model()(data)


def test_graph_without_edges_and_isolated_nodes_are_treated():
    torch.manual_seed(0)
    empty = tiny_graph(edges=[])
    empty.edge_index = torch.empty(2, 0, dtype=torch.long)
    out = small_model()(empty)  # self-loops only: every node sees itself
    assert torch.isfinite(out.loss)
    isolated = tiny_graph(n=8, edges=[(0, 1), (1, 0)])
    out = small_model()(isolated)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_single_node_gives_zero_loss():
    torch.manual_seed(0)
    one = tiny_graph(n=1, edges=[])
    one.edge_index = torch.empty(2, 0, dtype=torch.long)
    model = small_model()
    out = model(one)
    assert int(out.mask.mask.sum()) == 0 and float(out.loss.detach()) == 0.0
    model.eval()
    assert model.encode(one, pool="none").shape == (1, 1, 8)


# -- config, data, system -----------------------------------------------------------------------------
def test_config_rejects_unknown_keys():
    cls = get("system", "graphmae")
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(cls.Config, {"model": {"hiden": 3}})
    with pytest.raises(ConfigError):
        from_dict(cls.Config, {"bogus": 1})


def test_recipes_validate():
    import yaml

    cls = get("system", "graphmae")
    root = Path(__file__).resolve().parents[1] / "recipes" / "graph"
    for name in ("graphmae_cora", "graphmae_tu"):
        text = (root / f"{name}.yaml").read_text()
        assert text.startswith(f"# maezoo run graph/{name}")
        raw = yaml.safe_load(text)
        assert raw.pop("system") == "graphmae"
        cfg = from_dict(cls.Config, raw)
        for ds in cfg.data.names:
            cfg.for_dataset(ds)


def test_per_dataset_settings_merge_and_fail_clearly():
    from maezoo.config import merge, parse_overrides

    cls = get("system", "graphmae")
    raw = {"data": {"kind": "tu", "names": ["MUTAG", "PROTEINS"]}, "model": {"hidden": 512, "num_layers": 2},
           "per_dataset": {"MUTAG": {"model": {"hidden": 32}, "train": {"epochs": 20}}}}
    raw = merge(raw, parse_overrides(["per_dataset.MUTAG.model.num_layers=5"]))
    cfg = from_dict(cls.Config, raw)
    mutag, proteins = cfg.for_dataset("MUTAG"), cfg.for_dataset("PROTEINS")
    assert (mutag.model.hidden, mutag.model.num_layers, mutag.train.epochs) == (32, 5, 20)
    assert proteins is cfg and proteins.model.hidden == 512
    bad = from_dict(cls.Config, {"per_dataset": {"MUTAG": {"model": {"hiden": 32}}}})
    with pytest.raises(ConfigError, match="per_dataset.MUTAG.model"):
        bad.for_dataset("MUTAG")
    bad = from_dict(cls.Config, {"per_dataset": {"MUTAG": {"data": {"names": ["X"]}}}})
    with pytest.raises(ConfigError, match="data.names"):
        bad.for_dataset("MUTAG")


@needs_tu
def test_tu_loading_from_zip_copy(tmp_path):
    from maezoo.graph.data import load_tu

    graphs, width, classes = load_tu("MUTAG", root=tmp_path / "tu", source=SHARED / "tu")
    assert len(graphs) == 188 and width == 7 and classes == 2
    assert (tmp_path / "tu" / "MUTAG" / "raw" / "MUTAG_A.txt").is_file()
    graphs, width, _ = load_tu("IMDB-BINARY", root=tmp_path / "tu", source=SHARED / "tu")
    assert len(graphs) == 1000 and graphs[0].x.shape[1] == width  # one-hot degrees


@needs_tu
def test_tu_system_short_run(tmp_path):
    cls = get("system", "graphmae")
    cfg = from_dict(cls.Config, {
        "data": {"kind": "tu", "names": ["MUTAG"], "root": str(tmp_path / "tu"), "source": str(SHARED / "tu")},
        "model": {"encoder": "gin", "decoder": "gin", "hidden": 16, "num_layers": 2, "norm": "batchnorm",
                  "replace_rate": 0.0, "alpha": 1.0},
        "train": {"epochs": 1, "batch_size": 64, "scheduler": False, "log_every": 0},
        "eval": {"protocol": "svm", "pooling": "sum", "folds": 3, "visualize": "none"},
        "seeds": [0],
    })
    (res,) = cls().run(cfg, RunContext(run_dir=tmp_path / "run", recipe="test"))
    assert res.protocol == "svm" and res.modality == "graph" and 0 <= res.values[0] <= 100


@needs_cora
def test_cora_short_pretrain_and_probe(tmp_path):
    from maezoo.graph.system import load_model

    cls = get("system", "graphmae")
    cfg = from_dict(cls.Config, {
        "data": {"names": ["Cora"], "root": str(tmp_path / "planetoid"), "source": str(SHARED / "planetoid")},
        "model": {"hidden": 32, "heads": 2},
        "train": {"epochs": 2, "log_every": 0},
        "eval": {"probe_epochs": 20, "visualize": "pca"},
        "seeds": [0],
    })
    run_dir = tmp_path / "run"
    (res,) = cls().run(cfg, RunContext(run_dir=run_dir, recipe="graph/graphmae_cora"))
    assert res.protocol == "linprobe" and res.metric == "accuracy" and res.dataset == "cora"
    assert len(res.values) == 1 and 0 < res.values[0] <= 100
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if "epoch" in x] == [0, 1]
    assert (run_dir / "config.json").is_file() and (run_dir / "embeddings_Cora_seed0.png").stat().st_size > 0
    model = load_model(run_dir / "model_seed0.safetensors")
    assert model.tokenizer.embed_dim == 1433
    assert not list(run_dir.glob(".*tmp*"))  # atomic writes left no temp files


@pytest.mark.parametrize("masked_only", [True, False])
def test_decoder_project_last_equals_gatconv(masked_only):
    # the one-head GAT decoder evaluated as W (sum a x) + b is GATConv's function, values and gradients
    torch.manual_seed(0)
    data = tiny_graph(n=40, f=6)
    model = small_model(f=6).eval()
    torch.nn.init.normal_(model.decoder.conv.bias)
    mask = model.sample_mask(data, generator=torch.Generator().manual_seed(5))
    model.decoder.masked_only = masked_only
    outs, grads = [], []
    for project_last in (True, False):
        model.decoder.project_last = project_last
        out = model(data, mask=mask)
        outs.append(out)
        grads.append(torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True))
    a, b = outs
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.pred, b.pred, atol=1e-5, rtol=1e-5)
    for x, y in zip(*grads):
        assert (x is None) == (y is None) and (x is None or torch.allclose(x, y, atol=1e-5))


def test_project_last_rejects_multi_head():
    from torch_geometric.nn import GATConv

    from maezoo.graph.models import gat_project_last

    with pytest.raises(ValueError, match="one-head"):
        gat_project_last(GATConv(4, 4, heads=2), torch.randn(3, 4), torch.tensor([[0, 1], [1, 2]]))
