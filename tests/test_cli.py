"""The command line's rough edges: run folders never reused by accident, no orphan folder after a failed start,
`--quick`, devices that do not exist, Ctrl-C outside pre-training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maezoo.cli import main

TINY = [
    "stages=[pretrain]", "visualize=0", "model.args.embed_dim=32", "model.args.depth=1", "model.args.num_heads=2",
    "model.args.decoder_dim=16", "model.args.decoder_depth=1", "model.args.decoder_heads=2", "trainer.max_steps=3",
    "trainer.batch_size=16", "trainer.warmup_steps=1", "trainer.num_workers=0", "trainer.precision=fp32",
    "trainer.threads=1", "trainer.progress=false",
]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["run", "image/mae_digits_demo", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_existing_run_folder_is_refused_unless_overwrite(tmp_path: Path, capsys) -> None:
    rd = tmp_path / "run"
    assert _run(capsys, *TINY, "--run-dir", str(rd))[0] == 0
    before = {p: p.stat().st_mtime_ns for p in rd.rglob("*") if p.is_file()}
    rc, _, err = _run(capsys, *TINY, "trainer.max_steps=2", "--run-dir", str(rd))
    assert rc == 2 and "already holds a run" in err and f"maezoo resume {rd}" in err and "--overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in rd.rglob("*") if p.is_file()} == before  # nothing touched
    rc, out, _ = _run(capsys, *TINY, "trainer.max_steps=2", "--run-dir", str(rd), "--overwrite")
    assert rc == 0 and "deleting the run" in out
    assert sorted(p.name for p in (rd / "checkpoints").iterdir()) == ["latest", "step_00000002"]
    steps = [json.loads(line)["step"] for line in (rd / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2  # no rows of the deleted run


def test_failed_start_leaves_no_orphan_folder(tmp_path: Path, capsys) -> None:
    rd = tmp_path / "runs" / "bad"
    rc = main(["run", "timeseries/patchtst_etth1", "data.args.path=" + str(tmp_path / "missing.csv"), "--run-dir",
               str(rd)])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.csv" in err and "MAEZOO_DATA" in err and "Traceback" not in err
    assert not rd.exists() and not rd.parent.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_device_is_refused_before_any_folder(tmp_path: Path, capsys) -> None:
    rd = tmp_path / "run"
    rc, _, err = _run(capsys, *TINY, "trainer.device=cuda", "--run-dir", str(rd))
    assert rc == 2 and "no CUDA device" in err and "trainer.device=auto" in err
    assert not rd.exists()


def test_ctrl_c_outside_pretraining_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import maezoo.systems.runner as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_recipe", interrupted)
    rd = tmp_path / "run"
    rc, _, err = _run(capsys, *TINY, "--run-dir", str(rd))
    assert rc == 130 and len(err.strip().splitlines()) == 1 and "interrupted" in err
    assert not rd.exists()


def test_quick_shrinks_every_stage_and_says_so(tmp_path: Path, capsys) -> None:
    rd = tmp_path / "quick"
    rc, out, err = _run(capsys, "--quick", "trainer.threads=1", "trainer.num_workers=0", "--run-dir", str(rd))
    assert rc == 0, err
    assert "--quick: trainer: max_steps 1200 -> 20" in out
    assert "--quick: linprobe: epochs 100 -> 1" in out and "--quick: finetune: epochs 60 -> 1" in out
    results = json.loads((rd / "results.json").read_text())
    protocols = {r["protocol"] for r in results["results"]}
    assert {"knn", "linprobe", "finetune"} <= protocols  # every stage still ran
    meta = json.loads((rd / "recipe.json").read_text())
    assert meta["quick"] is True  # `maezoo resume` shrinks the same way


def test_quick_takes_the_first_dataset_and_seed() -> None:
    from maezoo.systems.runner import load_recipe

    full = load_recipe("graph/graphmae_tu", [])
    quick = load_recipe("graph/graphmae_tu", [], quick=True)
    assert len(full.variants) > 1 and len(quick.variants) == 1
    assert quick.variants[0].label == full.variants[0].label
    assert len(quick.variants[0].cfg.seeds) == 1 and quick.variants[0].cfg.trainer.max_steps == 20
    assert quick.quick_changes and quick.quick_changes[0].startswith("datasets:")


def test_csv_without_the_recipes_columns_is_refused(tmp_path: Path, capsys) -> None:
    """An ETT table missing its OT column must not train on 6 channels still called ETTh1."""
    from maezoo.data.sources import find_shared_data

    src = find_shared_data("ett/ETTh1.csv")
    if src is None:
        pytest.skip("needs shared/data/ett")
    lines = src.read_text().splitlines()[:800]
    cut = tmp_path / "no_ot.csv"
    cut.write_text("\n".join(",".join(line.split(",")[:-1]) for line in lines) + "\n")  # OT is the last column
    rd = tmp_path / "run"
    rc = main(["run", "timeseries/patchtst_etth1", f"data.args.path={cut}", "--run-dir", str(rd)])
    err = capsys.readouterr().err
    assert rc == 2 and "no column(s) ['OT']" in err and "no_ot.csv" in err
    assert not rd.exists()


def test_list_verbose_names_where_each_component_lives(capsys) -> None:
    assert main(["list", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "  videomae_vit_base" in out and "maezoo.video.models:videomae_vit_base" in out
