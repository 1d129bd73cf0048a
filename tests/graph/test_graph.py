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
from maezoo.config import ConfigError
from maezoo.graph.models import graphmae
from maezoo.graph.tokenizer import GraphNodeTokenizer

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
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
    assert "graphmae" in comps["model"] and {"planetoid", "tu"} <= set(comps["dataset"])
    assert {"node_linprobe", "svm"} <= set(comps["protocol"]) and comps["system"] == ["mae"]  # one system


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
    model = small_model(decoder=decoder, loss=loss)
    g = tiny_graph(n=8)
    out = model(g)
    out.loss.backward()
    assert out.pred.shape == (1, 8, 4) and int(out.mask.mask.sum()) == 4  # mask ratio 0.5 of 8 nodes
    torch.testing.assert_close(out.target, g.x.unsqueeze(0))  # GraphMAE reconstructs the raw features
    hidden = out.mask.mask[0]
    p, t = out.pred[0, hidden].float(), out.target[0, hidden].float()
    want = ((1 - torch.nn.functional.cosine_similarity(p, t, dim=-1)).pow(3).mean() if loss == "sce"
            else (p - t).pow(2).mean(-1).mean())
    torch.testing.assert_close(out.loss, want)


def test_gin_on_batch_of_graphs_and_pooling():
    from torch_geometric.data import Batch

    torch.manual_seed(0)
    batch = Batch.from_data_list([tiny_graph(n=5, seed=i) for i in range(3)])
    model = small_model(encoder="gin", decoder="gin", norm="batchnorm", replace_rate=0.0)
    out = model(batch)
    out.loss.backward()
    model.eval()
    node = model.encode(batch, pool="none")[0]
    assert node.shape == (15, 8)
    for p, reduce in (("mean", "mean"), ("max", "amax"), ("sum", "sum")):  # one vector per graph
        want = torch.stack([getattr(node[batch.batch == g], reduce)(0) for g in range(3)])
        torch.testing.assert_close(model.encode(batch, pool=p), want)


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
    model = small_model()
    out = model(empty)  # self-loops only: every node sees itself
    torch.testing.assert_close(out.loss, model.loss_fn(out.pred, out.target, out.mask.mask))
    assert 0 < out.loss.item() < 2 ** 3  # SCE (1 - cos)^3 lies in [0, 8]
    isolated = tiny_graph(n=8, edges=[(0, 1), (1, 0)])
    out = model(isolated)
    out.loss.backward()
    torch.testing.assert_close(out.loss, model.loss_fn(out.pred, out.target, out.mask.mask))
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


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
def _load(recipe: str, *overrides: str):
    from maezoo.systems.runner import load_recipe

    return load_recipe(recipe, list(overrides))


def test_graph_recipes_speak_the_one_dialect():
    for name in ("graph/graphmae_cora", "graph/graphmae_tu"):
        loaded = _load(name, "trainer.max_steps=3")
        assert loaded.system_name == "mae"
        for v in loaded.variants:
            assert v.cfg.trainer.max_steps == 3 and v.cfg.trainer.optimizer == "adam" and v.cfg.trainer.decay == "all"
            assert v.cfg.stages[0] == "pretrain"
    with pytest.raises(ConfigError, match="hiden"):
        _load("graph/graphmae_cora", "model.args.hiden=3")
    with pytest.raises(ConfigError, match="unknown key"):
        _load("graph/graphmae_cora", "bogus=1")


def test_per_dataset_settings_merge_and_fail_clearly():
    loaded = _load("graph/graphmae_tu", "datasets=[MUTAG,PROTEINS]", "per_dataset.MUTAG.model.args.num_layers=4",
                   "trainer.weight_decay=2e-5", "trainer.batch_size=16")
    mutag, proteins = (v.cfg for v in loaded.variants)
    assert [v.label for v in loaded.variants] == ["MUTAG", "PROTEINS"]
    assert (mutag.model.args["hidden"], mutag.model.args["num_layers"], mutag.trainer.epochs) == (32, 4, 20)
    assert (proteins.model.args["hidden"], proteins.model.args["num_layers"], proteins.trainer.epochs) == (512, 3, 100)
    assert mutag.data.args["name"] == "MUTAG" and proteins.protocols["svm"].pool == "max"
    assert mutag.trainer.weight_decay == 2e-5  # 2e-5 is read as a number, not the string YAML makes of it
    assert mutag.trainer.batch_size == proteins.trainer.batch_size == 16  # the command line wins over per_dataset
    with pytest.raises(ConfigError, match="datasets="):
        _load("graph/graphmae_tu", "data.args.name=PROTEINS")
    with pytest.raises(ConfigError, match="dataset MUTAG: .*per_dataset|dataset MUTAG: .*hiden|hiden"):
        _load("graph/graphmae_tu", "datasets=[MUTAG]", "per_dataset.MUTAG.trainer.hiden=3")
    with pytest.raises(ConfigError, match="may not set datasets"):
        _load("graph/graphmae_tu", "datasets=[MUTAG]", "per_dataset.MUTAG.datasets=[X]")


@needs_tu
def test_tu_loading_from_zip_copy(tmp_path):
    from maezoo.graph.data import load_tu

    graphs, width, classes = load_tu("MUTAG", root=tmp_path / "tu", source=SHARED / "tu")
    assert len(graphs) == 188 and width == 7 and classes == 2
    assert (tmp_path / "tu" / "MUTAG" / "raw" / "MUTAG_A.txt").is_file()
    graphs, width, _ = load_tu("IMDB-BINARY", root=tmp_path / "tu", source=SHARED / "tu")
    assert len(graphs) == 1000 and graphs[0].x.shape[1] == width  # one-hot degrees


def _cli(*args: str) -> int:
    from maezoo.cli import main

    return main(list(args))


def _results(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return {(r["dataset"], r["protocol"], r["metric"]): r for r in doc["results"]}


@needs_tu
def test_tu_run_then_svm_stage_rereads_the_saved_weights(tmp_path):
    run = tmp_path / "run"
    common = ["seeds=[0,1]", "datasets=[MUTAG]", "model.args.hidden=16", "model.args.num_layers=2", "svm.folds=3",
              "trainer.max_steps=4", "trainer.threads=1"]
    assert _cli("run", "graph/graphmae_tu", *common, "--run-dir", str(run)) == 0
    for seed in (0, 1):  # one folder per dataset and seed, each with the Trainer's outputs
        leaf = run / "MUTAG" / f"seed_{seed}"
        assert (leaf / "model.safetensors").is_file() and (leaf / "checkpoints" / "latest").is_file()
        rows = [json.loads(x) for x in (leaf / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "train/loss" in r] == [4]
    first = _results(run / "results.json")[("mutag", "svm", "accuracy")]
    assert first["seeds"] == [0, 1] and len(first["values"]) == 2 and first["modality"] == "graph"
    assert _cli("run", "graph/graphmae_tu", *common, "stage=svm", f"checkpoint={run}", "--run-dir",
                str(tmp_path / "eval")) == 0
    again = _results(tmp_path / "eval" / "results_svm.json")[("mutag", "svm", "accuracy")]
    assert again["values"] == first["values"]  # the same weights, read back per dataset and seed


@needs_cora
def test_cora_run_then_node_linprobe_stage_rereads_the_saved_weights(tmp_path):
    run = tmp_path / "run"
    common = ["seeds=[0]", "model.args.hidden=32", "model.args.heads=2", "node_linprobe.epochs=100",
              "trainer.max_steps=3", "visualize=0", "trainer.threads=1"]
    assert _cli("run", "graph/graphmae_cora", *common, "--run-dir", str(run)) == 0
    first = _results(run / "results.json")[("cora", "node_linprobe", "accuracy")]
    assert first["values"][0] > 30  # 7 classes: chance is ~14%; even 3 steps give useful features
    spec = json.loads((run / "model.json").read_text())
    assert spec["name"] == "graphmae" and spec["kwargs"]["in_dim"] == 1433  # from the dataset's model_kwargs
    assert _cli("run", "graph/graphmae_cora", *common, "stage=node_linprobe", f"checkpoint={run}", "--run-dir",
                str(tmp_path / "eval")) == 0
    again = _results(tmp_path / "eval" / "results_node_linprobe.json")[("cora", "node_linprobe", "accuracy")]
    assert again["values"] == first["values"]
    assert not list(run.rglob(".*tmp*"))  # atomic writes left no temp files
    assert _cli("visualize", str(run), "--out", str(tmp_path / "emb.png")) == 0  # graph runs have a figure too
    assert (tmp_path / "emb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_cora
def test_graph_run_resumes_bit_identically_after_sigkill(tmp_path):
    from maezoo.testing import kill_and_resume

    args = ["graph/graphmae_cora", "seeds=[0]", "model.args.hidden=32", "model.args.heads=2", "trainer.max_steps=null",
            "trainer.epochs=40", "trainer.ckpt_every=5", "trainer.threads=1", "stages=[pretrain]", "visualize=0"]
    got = kill_and_resume(args, tmp_path, kill_after=10, timeout=300)
    assert got.killed_at < 40 and got.summary["steps"] == 40
    got.assert_identical()
    steps = got.logged_steps()
    assert len(steps) == len(set(steps)), "steps between the checkpoint and the kill were logged twice"


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
    for project_last, fast in ((True, True), (False, False)):  # (False, False): PyG's GATConv itself
        model.decoder.project_last, model.decoder.fast = project_last, fast
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


def test_checked_graph_is_checked_again_after_an_in_place_change():
    model, g = small_model(), tiny_graph(n=8)
    model(g)  # checked once, then skipped while the tensors are unchanged
    g.x[0, 0] = float("nan")  # in place: the tensor's version changes
    with pytest.raises(ValueError, match="NaN"):
        model(g)
    g.x = torch.rand(8, 4)
    g.edge_index = torch.tensor([[0, 9], [1, 2]])
    with pytest.raises(ValueError, match="refers to node 9"):
        model(g)


def test_remask_projects_only_visible_rows_with_the_same_values_and_gradients():
    from maezoo.core.masking import Mask
    from maezoo.graph.models import GNNDecoder

    torch.manual_seed(0)
    g = tiny_graph(n=10, f=6)
    dec = GNNDecoder(8, 6, conv="gin", feat_drop=0.0, norm=None).eval()
    ctx = GraphNodeTokenizer(6).structure(g)
    latent = torch.randn(1, 10, 8, requires_grad=True)
    mask = Mask.from_bool(torch.tensor([[True, False] * 5]))
    got = dec(latent, mask, (10,), ctx)
    got.square().sum().backward()
    g_fast, w_fast = latent.grad.clone(), dec.encoder_to_decoder.weight.grad.clone()
    latent.grad, dec.encoder_to_decoder.weight.grad = None, None
    # reference: project every row, then zero the hidden ones (GraphMAE's re-mask)
    ref_x = dec.encoder_to_decoder(latent).masked_fill(mask.mask.unsqueeze(-1), 0.0)
    dec.conv.nn.batch = ctx["batch"]
    ref = dec.conv(ref_x[0], ctx["edge_index"]).unsqueeze(0)
    ref.square().sum().backward()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(g_fast, latent.grad)
    torch.testing.assert_close(w_fast, dec.encoder_to_decoder.weight.grad)
    assert torch.equal(g_fast[0, mask.mask[0]], torch.zeros(5, 8))  # hidden codes get no gradient


def test_edge_cache_never_serves_another_graphs_edges():
    tok = GraphNodeTokenizer(4)
    seen = []
    for i in range(50):  # fresh same-shape edge tensors: freed addresses get reused
        ei = torch.tensor([[0, 1, 2], [1, 2, (i % 3)]])
        got = tok.structure({"x": torch.rand(3, 4), "edge_index": ei})["edge_index"]
        seen.append(sorted(map(tuple, got.t().tolist())))
        want = sorted({(int(a), int(b)) for a, b in ei.t().tolist() if a != b} | {(k, k) for k in range(3)})
        assert seen[-1] == want, (i, seen[-1], want)
