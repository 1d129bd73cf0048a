"""End to end: a shrunk ``maezoo run text/bert_wordnet`` (every stage, figure, held-out metrics, the tokenizer.json
beside the weights, reload), and exact resume after SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maezoo.data.sources import find_shared_data
from maezoo.testing import kill_and_resume, run_env

pytestmark = pytest.mark.skipif(find_shared_data("wordnet/wordnet-3.0-data.tar.xz") is None,
                                reason="no shared WordNet copy")

TINY = ["model.args.embed_dim=32", "model.args.num_heads=2", "model.args.mlp_dim=64", "model.args.depth=1",
        "data.args.vocab_size=600", "data.args.max_len=24", "trainer.batch_size=32", "trainer.threads=1",
        "trainer.num_workers=0", "trainer.log_every=5"]


def _run(args: list[str], data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maezoo", *args], env=run_env(data), capture_output=True, text=True,
                          timeout=400)


def test_quick_run_writes_every_stage_and_reloads(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    r = _run(["run", "text/bert_wordnet", "--quick", *TINY, "monitor.heldout_every=10", "monitor.heldout_subset=64",
              "visualize=3", "--run-dir", str(run)], data)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    rows = results["results"] if isinstance(results, dict) else results
    got = {(row["protocol"], row["init"]) for row in rows}
    assert {("knn", "pretrained"), ("knn", "random"), ("linprobe", "pretrained"), ("linprobe", "random"),
            ("finetune", "pretrained"), ("finetune", "random")} <= got
    summary = json.loads((run / "pretrain_summary.json").read_text())
    assert summary["heldout"] and {"masked_acc", "perplexity"} <= set(summary["heldout"][-1])
    text = (run / "predictions.txt").read_text()
    assert "→" in text and (run / "masked_predictions.png").stat().st_size > 1000
    assert (run / "tokenizer.json").is_file()  # the vocabulary travels with the weights
    from maezoo.engine.checkpoint import load_model

    model, spec = load_model(run)
    assert model.tokenizer.vocab_size == len(json.loads((run / "tokenizer.json").read_text())["model"]["vocab"])
    assert model.tokenizer.continuation.any()  # word-piece flags came back with the run's own vocabulary


def test_resume_after_sigkill_gives_identical_weights(tmp_path):
    args = ["text/bert_wordnet", *TINY, "stages=[pretrain]", "visualize=0", "monitor.heldout_every=0",
            "trainer.max_steps=40", "trainer.ckpt_every=5", "trainer.warmup_steps=4"]
    kill_and_resume(args, tmp_path, kill_after=10, timeout=400).assert_identical()
