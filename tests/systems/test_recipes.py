"""Recipes and the command line, end to end: run folders, results.json, visualize, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maezoo.cli import main
from maezoo.config import ConfigError, list_recipes, load_yaml, resolve_recipe
from maezoo.results import SCHEMA_VERSION, read_results, render_table

TINY = [
    "visualize=4", "model.args.embed_dim=32", "model.args.depth=2", "model.args.num_heads=2",
    "model.args.decoder_dim=16", "model.args.decoder_depth=1", "model.args.decoder_heads=2",
    "trainer.batch_size=32", "trainer.warmup_steps=5", "trainer.log_every=5", "trainer.max_steps=20",
    "trainer.ckpt_every=10", "linprobe.epochs=5", "finetune.epochs=2", "trainer.threads=1",
]
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_every_recipe_speaks_one_dialect_and_prints_its_config(tmp_path, capsys):
    import yaml

    from maezoo.systems.runner import load_recipe

    assert {"image/mae_cifar10", "image/mae_digits_demo", "graph/graphmae_cora", "graph/graphmae_tu"} <= set(list_recipes())
    for name in list_recipes():
        path = resolve_recipe(name)
        header = [ln for ln in path.read_text().splitlines() if ln.startswith("#")]
        assert header and header[0] == f"# maezoo run {name}" or "maezoo demo" in header[0], name
        raw = load_yaml(path)
        assert {"system", "model", "data", "trainer", "stages", "seeds"} <= raw.keys(), name
        loaded = load_recipe(name, ["trainer.max_steps=3"])
        assert all(v.cfg.trainer.max_steps == 3 for v in loaded.variants)
        assert all(v.cfg.trainer.precision == "auto" or name.startswith("graph/") for v in loaded.variants)
        assert main(["run", name, "trainer.max_steps=3", "--print-config"]) == 0
        docs = list(yaml.safe_load_all(capsys.readouterr().out))
        assert len(docs) == len(loaded.variants) and all(d["trainer"]["max_steps"] == 3 for d in docs)
        assert {"accum_steps", "threads", "precision", "schedule", "optimizer"} <= docs[0]["trainer"].keys()
        # the printed recipe is itself a valid recipe that resolves to the same thing
        again = tmp_path / f"{name.replace('/', '_')}.yaml"
        again.write_text(yaml.safe_dump(docs[0]))
        assert load_recipe(str(again), []).resolved()[0] == docs[0]


def test_demo_recipe_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "image/mae_digits_demo", *TINY, "--run-dir", str(run)]) == 0
    for f in ("config.yaml", "env.json", "metrics.jsonl", "model.safetensors", "model.json", "reconstructions.png",
              "results.json", "recipe.json"):
        assert (run / f).is_file(), f
    assert any((run / "tb").iterdir()), "TensorBoard events missing"
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000010", "step_00000020"]
    env = json.loads((run / "env.json").read_text())
    assert {"versions", "git_commit", "hardware"} <= env.keys() and "torch" in env["versions"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "train/loss" in r]
    assert rows[-1]["step"] == 20 and "train/samples_per_s" in rows[-1] and "train/data_wait_share" in rows[-1]
    doc, results = read_results(run / "results.json")
    assert doc["schema_version"] == SCHEMA_VERSION
    got = {(r.protocol, r.init) for r in results}
    assert got == {("knn", "pretrained"), ("knn", "random"), ("linprobe", "pretrained"), ("linprobe", "random"),
                   ("finetune", "pretrained"), ("finetune", "random")}
    assert all(r.modality == "image" and r.dataset == "sklearn-digits" for r in results)
    by = {(r.protocol, r.init, r.metric): r.value for r in results}
    for init in ("pretrained", "random"):  # 10 classes (chance 10%): 5 probe epochs already reach ~45%
        assert by[("linprobe", init, "top1")] > 30 and by[("linprobe", init, "top5")] >= by[("linprobe", init, "top1")]
    table = render_table([run])  # the run folder, as `maezoo table RUN` takes it
    assert "| image | sklearn-digits | mae_vit | knn | top1 |" in table and "(scratch)" in table
    out = capsys.readouterr().out
    assert "[finetune] step" in out and "eta" in out, "fine-tuning must show progress with an ETA"
    assert "precision" in out and "threads" in out  # the run header says what `auto` chose

    # one stage on an existing checkpoint
    assert main(["run", "image/mae_digits_demo", *TINY, "stage=knn", f"checkpoint={run}", "--run-dir", str(tmp_path / "k")]) == 0
    _, knn = read_results(tmp_path / "k" / "results_knn.json")
    assert {r.protocol for r in knn} == {"knn"}
    assert {(r.init, r.metric): r.value for r in knn} == {(i, m): by[("knn", i, m)] for i in ("pretrained", "random")
                                                         for m in ("top1", "top5")}  # the same saved weights
    # the reconstruction figure of a checkpoint, through the command
    out = tmp_path / "viz.png"
    assert main(["visualize", str(run / "checkpoints" / "step_00000010"), "--out", str(out), "--num", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_keys_fail_listing_valid_ones(tmp_path, capsys):
    assert main(["run", "image/mae_digits_demo", "trainer.max_stepz=3", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "max_stepz" in err and "max_steps" in err and "Traceback" not in err
    assert main(["run", "image/mae_digits_demo", "model.args.depht=3", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "depht" in err and "depth" in err
    assert main(["run", "image/nope"]) == 2
    assert "known recipes" in capsys.readouterr().err
    assert main(["run", "image/mae_digits_demo", "trainer.max_steps=abc", "--run-dir", str(tmp_path)]) == 2
    assert "trainer.max_steps must be a whole number, got 'abc'" in capsys.readouterr().err
    assert main(["run", "image/mae_digits_demo", "model.name=resnet", "--run-dir", str(tmp_path)]) == 2
    assert "Known models" in capsys.readouterr().err


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.max_steps=0", "trainer.max_steps=0 is out of range [1, inf): it must be >= 1"),
    ("trainer.max_steps=-5", "trainer.max_steps=-5 is out of range [1, inf): it must be >= 1"),
    ("trainer.lr=-1", "trainer.lr=-1 is out of range (0, inf): it must be > 0"),
    ("model.args.mask_ratio=1.2", "model.args.mask_ratio=1.2 is out of range (0, 1): it must be > 0 and < 1"),
    ("model.args.mask_ratio=0", "model.args.mask_ratio=0 is out of range (0, 1)"),
    ("model.args.depth=0", "model.args.depth=0 is out of range [1, inf)"),
    ("model.args.num_heads=3", "model.args.num_heads=3 must divide model.args.embed_dim=128"),
    ("model.args.mask_mode=hide", "model.args.mask_mode must be one of ['drop', 'replace'], got 'hide'"),
    ("model.args.masking=grid", "model.args.masking='grid': masking 'grid' takes no single ratio"),
    ("trainer.base_lr=abc", "trainer.base_lr must be a number, got 'abc'"),
    ("trainer.precision=fp8", "trainer.precision must be one of"),
    ("knn.k=0", "knn.k=0 is out of range"),
    ("stages=[pretrain,bogus]", "unknown stage(s) ['bogus']"),
])
def test_bad_values_stop_before_any_work_naming_key_value_and_range(tmp_path, capsys, override, message):
    run = tmp_path / "never"
    assert main(["run", "image/mae_digits_demo", override, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not run.exists(), "validation must come before the run folder is made"


def test_numbers_in_e_notation_are_numbers():
    from maezoo.systems.runner import load_recipe

    (v,) = load_recipe("image/mae_digits_demo", ["trainer.weight_decay=2e-5", "trainer.base_lr=1e-3"]).variants
    assert v.cfg.trainer.weight_decay == 2e-5 and isinstance(v.cfg.trainer.base_lr, float)


def test_mapping_override_replaces_instead_of_merging():
    from maezoo.systems.runner import load_recipe

    (v,) = load_recipe("image/mae_digits_demo", ["model.name=mae_vit_tiny_patch16", "model.args={img_size: 32}"]).variants
    assert v.cfg.model.args == {"img_size": 32}
    (v,) = load_recipe("image/mae_digits_demo", ["model.args.depth=2"]).variants
    assert v.cfg.model.args["depth"] == 2 and v.cfg.model.args["embed_dim"] == 128  # a single key still merges


def test_recipe_cannot_run_code(tmp_path, capsys):
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    evil.write_text(f"system: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["run", str(evil), "--run-dir", str(tmp_path / "r")]) == 2
    assert not marker.exists()
    with pytest.raises(ConfigError):
        from maezoo.config import parse_overrides

        parse_overrides(["no_equals_sign"])


def test_cli_entry_point_lists_components():
    r = subprocess.run([sys.executable, "-m", "maezoo", "list"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    for word in ("recipes:", "image/mae_cifar10", "tokenizers:", "maskings:", "models:", "heads:", "systems:"):
        assert word in r.stdout


@pytest.mark.skipif(not (SHARED / "cifar10" / "cifar10-jpg.tar").is_file(), reason="needs ../shared/data CIFAR-10")
def test_cifar10_cpu_pipeline_pretrained_knn_beats_random(tmp_path):
    """The CPU-sized CIFAR-10 configuration on a subset: the pipeline runs and MAE pre-training already
    lifts k-NN above a randomly initialised encoder."""
    run = tmp_path / "c10"
    args = ["run", "image/mae_cifar10", "--run-dir", str(run), "stages=[pretrain,knn]", "trainer.max_steps=500",
            "trainer.batch_size=64", "trainer.warmup_steps=50", "trainer.lr=1.5e-3", "data.pretrain_subset=20000",
            "knn.train_subset=5000", "knn.test_subset=1000", "monitor.every=0", "trainer.ckpt_every=300",
            "model.args.depth=4", "visualize=4", "trainer.num_workers=2", "eval.num_workers=2"]
    assert main(args) == 0
    _, res = read_results(run / "results.json")
    knn = {r.init: r.value for r in res if r.protocol == "knn" and r.metric == "top1"}
    assert knn["pretrained"] > knn["random"], knn
    assert (run / "reconstructions.png").is_file()


def test_recipe_headers_are_short_and_their_links_exist():
    """A header is the command, what the recipe measures and where its results are (at most 15 comment lines);
    measured history lives in benchmarks/notes/."""
    import re

    root = Path(__file__).resolve().parents[2]
    for name in list_recipes():
        lines = resolve_recipe(name).read_text().splitlines()
        header = [ln for ln in lines[: next((i for i, ln in enumerate(lines) if not ln.startswith("#")), len(lines))]]
        assert len(header) <= 15, f"{name}: {len(header)} header lines"
        for ref in re.findall(r"benchmarks/[\w./-]+\.(?:json|md)", "\n".join(header)):
            assert (root / ref).is_file(), f"{name} links {ref}, which does not exist"
