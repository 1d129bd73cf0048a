"""M3AE end to end: training on image-caption WebDataset shards through the one Trainer, a shrunk
``maezoo run multimodal/m3ae_cifar10`` (every stage, the image-only ablation, reload with its vocabulary), and exact
resume after SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from caption_shards import _pair, _tar

import maezoo
from maezoo.data.sources import find_shared_data
from maezoo.engine.trainer import Trainer, TrainerConfig
from maezoo.testing import kill_and_resume, run_env

needs_data = pytest.mark.skipif(
    find_shared_data("wordnet/wordnet-3.0-data.tar.xz") is None or find_shared_data("cifar10/cifar10-jpg.tar") is None,
    reason="no shared WordNet / CIFAR-10 copy")

TINY = ["model.args.embed_dim=32", "model.args.depth=1", "model.args.num_heads=2", "model.args.decoder_dim=16",
        "model.args.decoder_depth=1", "model.args.decoder_heads=2", "trainer.batch_size=32", "trainer.threads=1",
        "trainer.num_workers=0", "eval.num_workers=0", "trainer.log_every=5"]


def test_m3ae_trains_on_caption_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    folder = tmp_path / "shards"
    folder.mkdir()
    for s in range(4):
        _tar(folder / f"{s:05d}.tar", [_pair(8 * s + j) for j in range(8)])
    ds = maezoo.build("dataset", "caption_shards", source=str(folder), image_size=8, max_len=12, vocab_size=60)
    torch.manual_seed(0)
    model = maezoo.create_model("m3ae", **{**maezoo.get("model", "m3ae").smoke_kwargs, "vocab_size": None,
                                          "vocab_file": ds.model_kwargs["vocab_file"], "max_text_len": 12})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainerConfig(max_steps=3, batch_size=8, threads=1, num_workers=0, log_every=1, ckpt_every=100,
                        warmup_steps=1, progress=False)
    summary = Trainer(cfg, seed=0).fit(model, ds, tmp_path / "run", {"name": "m3ae", "kwargs": {}})
    assert summary.steps == 3 and summary.bad_samples == 0
    assert torch.isfinite(torch.tensor(summary.final_loss))
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss_image" in row and "train/loss_text" in row for row in logged), "each modality's loss is logged"
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("tokenizer.parts.text") for k in moved) and any(k.startswith("decoder.heads.image")
                                                                            for k in moved)


def _run(args: list[str], data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maezoo", *args], env=run_env(data), capture_output=True, text=True,
                          timeout=400)


@needs_data
def test_quick_run_reports_every_stage_beside_image_only_mae(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    r = _run(["run", "multimodal/m3ae_cifar10", "--quick", *TINY, "visualize=2", "--run-dir", str(run)], data)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((run / "results.json").read_text())
    rows = doc["results"] if isinstance(doc, dict) else doc
    got = {(row["model"], row["protocol"], row["init"]) for row in rows}
    m = "m3ae_cifar"
    assert {(m, "linprobe@image", "pretrained"), (m, "linprobe@image", "random"), (m, "finetune@image", "pretrained"),
            (m, "finetune@image", "random"), (m, "linprobe@text", "pretrained"), (m, "retrieval", "pretrained"),
            (m, "retrieval", "random"), (f"{m} (image-only MAE)", "linprobe@image", "pretrained"),
            (f"{m} (image-only MAE)", "finetune@image", "pretrained")} <= got
    steps = {row["model"]: row["steps"] for row in rows if row["init"] == "pretrained"}
    assert steps[m] == steps[f"{m} (image-only MAE)"] == 20, "the ablation pre-trains for the same steps"
    assert (run / "ablations" / "image_only" / "model.safetensors").is_file()
    assert (run / "tokenizer.json").is_file()
    from maezoo.engine.checkpoint import load_model

    model, _ = load_model(run)
    assert model.tokenizer.names == ["image", "text"] and model.tokenizer.parts["text"].continuation.any()


@needs_data
def test_resume_after_sigkill_gives_identical_weights(tmp_path):
    args = ["multimodal/m3ae_cifar10", *TINY, "stages=[pretrain]", "ablations={}", "visualize=0",
            "trainer.max_steps=30", "trainer.ckpt_every=5", "trainer.warmup_steps=4"]
    kill_and_resume(args, tmp_path, kill_after=10, timeout=400).assert_identical()
