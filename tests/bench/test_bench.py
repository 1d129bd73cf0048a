"""`maezoo bench`: suites run one process per recipe, continue where they stopped, write records that hold what was
measured, and render the same Markdown from the same records; `maezoo table` puts baselines beside scores."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from maezoo.bench.records import read_records
from maezoo.bench.report import README_END, README_START, report
from maezoo.bench.run import run_suite
from maezoo.bench.suites import SUITES, Suite, SuiteEntry, register_suite
from maezoo.config import recipe_digest
from maezoo.results import Result, render_table, write_results

ROOT = Path(__file__).resolve().parents[2]

TINY = ("trainer.max_steps=6", "trainer.log_every=2", "trainer.ckpt_every=3", "trainer.threads=1",
        "stages=[pretrain,knn,linprobe]", "linprobe.epochs=2", "visualize=4", "monitor.every=3",
        "monitor.train_subset=100", "monitor.test_subset=50")


@pytest.fixture(scope="module")
def tiny_suite():
    if "test_tiny" not in SUITES:
        register_suite(Suite("test_tiny", "a tiny suite for the tests", (
            SuiteEntry("digits", "image/mae_digits_demo", TINY, method="MAE ViT (tiny)", minutes=0.3,
                       notes="six steps: a smoke test, not a result"),
        )))
    return "test_tiny"


def test_suite_writes_records_continues_and_reports(tiny_suite, tmp_path, capsys):
    results, runs = tmp_path / "results", tmp_path / "runs"
    out = run_suite(tiny_suite, results, runs, python=sys.executable)
    assert [o.status for o in out] == ["done"], capsys.readouterr().out
    (rec,) = read_records(results / tiny_suite)
    assert rec["command"] == shlex.join(["maezoo", "run", "image/mae_digits_demo", *TINY])  # pasteable in a shell
    assert rec["code"]["commit"] and rec["hardware"]["cpu_capability"]
    pre = rec["pretrain"]["sklearn-digits"]
    assert pre["steps"] == 6 and pre["samples_per_s"] > 0 and pre["tokens_per_sample"] == 16  # 16x16 px, patch 4
    assert pre["tokens_per_s"] == pytest.approx(pre["samples_per_s"] * 16)
    assert len(rec["curves"]["sklearn-digits"]["loss"]) == 3 and rec["curves"]["sklearn-digits"]["monitor"]
    assert rec["figure"] == "digits.png" and (results / tiny_suite / "digits.png").is_file()
    knn = next(r for r in rec["records"] if r["protocol"] == "knn" and r["metric"] == "top1")
    assert knn["baseline"]["what"] == "random init" and knn["gain"] == pytest.approx(knn["value"] - knn["baseline"]["value"])
    assert knn["params"] > 0 and knn["peak_rss_mb"] > 0 and knn["masking"] is None and knn["mask_ratio"] == 0.75
    shown = capsys.readouterr().out
    assert "[1/1] digits: starting image/mae_digits_demo" in shown and "suite ETA" in shown

    # finished entries are not run again
    assert [o.status for o in run_suite(tiny_suite, results, runs)] == ["skipped"]
    # an entry whose run folder exists without a record continues that folder (maezoo resume), not a new run
    (results / tiny_suite / "digits.json").unlink()
    assert [o.status for o in run_suite(tiny_suite, results, runs)] == ["done"]
    log = (runs / tiny_suite / "digits.log").read_text()
    assert "-m maezoo resume" in log and "already finished; skipping it" in log

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_START.format(suite=tiny_suite)}\nold\n{README_END.format(suite=tiny_suite)}\ntail\n")
    docs = tmp_path / "docs" / "benchmarks.md"
    changed = report(tiny_suite, results, docs, readme)
    assert set(changed) == {docs, readme}
    page, summary = docs.read_text(), readme.read_text()
    assert "| image | sklearn-digits | MAE ViT (tiny) | linprobe (random init) | top1 |" in page
    assert "six steps: a smoke test" in page and "../benchmarks/results/test_tiny/digits.png" in page
    assert "old" not in summary and summary.endswith("tail\n") and "MAE ViT (tiny)" in summary
    assert (docs.parent / "benchmarks" / tiny_suite / "loss_curves.png").is_file()
    assert report(tiny_suite, results, docs, readme, check=True) == []  # a pure function of the records


def test_a_changed_recipe_file_makes_its_record_and_run_folder_stale(tmp_path, capsys):
    recipe = tmp_path / "digits.yaml"
    recipe.write_text((ROOT / "recipes" / "image" / "mae_digits_demo.yaml").read_text())
    register_suite(Suite("test_stale", "a recipe file that changes between runs", (
        SuiteEntry("digits", str(recipe), ("trainer.max_steps=4", "trainer.threads=1", "stages=[pretrain,knn]",
                                           "visualize=0"), minutes=0.2),)))
    results, runs = tmp_path / "results", tmp_path / "runs"
    assert [o.status for o in run_suite("test_stale", results, runs)] == ["done"], capsys.readouterr().out
    first = json.loads((results / "test_stale" / "digits.json").read_text())["recipe_sha"]

    recipe.write_text("# a comment changes nothing\n" + recipe.read_text())
    assert [o.status for o in run_suite("test_stale", results, runs)] == ["skipped"]

    # another value in the file: the record is stale, and so is the run folder; it is kept beside, not resumed
    recipe.write_text(recipe.read_text().replace("embed_dim: 128", "embed_dim: 64"))
    assert [o.status for o in run_suite("test_stale", results, runs)] == ["done"]
    shown = capsys.readouterr().out
    assert "made by another version of" in shown and "digits.stale-1" in shown
    assert (runs / "test_stale" / "digits.stale-1" / "model.safetensors").is_file()  # the old run, untouched
    assert json.loads((results / "test_stale" / "digits.json").read_text())["recipe_sha"] != first
    assert "-m maezoo resume" not in (runs / "test_stale" / "digits.log").read_text()
    assert "embed_dim: 64" in (runs / "test_stale" / "digits" / "config.yaml").read_text()


def test_committed_records_were_made_by_the_committed_recipes():
    docs = [json.loads(p.read_text()) for p in sorted((ROOT / "benchmarks" / "results").glob("*/*.json"))]
    records = [d for d in docs if d.get("schema") == "maezoo.bench/1"]
    assert len(records) >= 11  # the quick suite's entries
    for doc in records:
        assert doc.get("recipe_sha") == recipe_digest(doc["recipe"]), (
            f"{doc['suite']}/{doc['entry']}.json was made by another version of recipes/{doc['recipe']}.yaml: rerun it "
            f"with `maezoo bench run --suite {doc['suite']} --only {doc['entry']}` and "
            f"`maezoo bench report --suite {doc['suite']}`")


@pytest.mark.skipif(not (ROOT / "benchmarks" / "results" / "quick").is_dir(), reason="no committed quick-suite records")
def test_committed_benchmark_pages_equal_the_report_of_the_committed_records():
    from maezoo.bench.report import code_fingerprint

    commits = {(r.get("code") or {}).get("commit") for r in read_records(ROOT / "benchmarks" / "results" / "quick")}
    if any(c and code_fingerprint(c) is None for c in commits):
        pytest.skip("a record's commit is not in this clone (shallow checkout): cannot say whether its code is HEAD's")
    changed = report("quick", ROOT / "benchmarks" / "results", ROOT / "docs" / "benchmarks.md", ROOT / "README.md",
                     check=True)
    assert not changed, f"{changed} differ from `maezoo bench report --suite quick`; regenerate them"


def test_quick_suite_covers_every_modality():
    from maezoo.bench.suites import get_suite

    recipes = {e.recipe.split("/")[0] for e in get_suite("quick").entries}
    assert {"image", "video", "audio", "timeseries", "graph"} <= recipes
    assert any("convmae" in e.recipe for e in get_suite("quick").entries)


def test_table_puts_the_baseline_beside_the_score(tmp_path):
    rows = [Result("mae", "image", "c10", "mae_vit", "knn", m, [v], [0], init=i)
            for m, i, v in [("top1", "pretrained", 40.0), ("top5", "pretrained", 80.0), ("top1", "random", 30.0),
                            ("top5", "random", 70.0)]]
    rows += [Result("mae", "timeseries", "etth1", "patchtst", "forecast", "mse@96", [0.38], [0], higher_is_better=False),
             Result("mae", "timeseries", "etth1", "patchtst", "forecast", "mse@96", [0.40], [0], init="random",
                    higher_is_better=False),
             Result("mae", "timeseries", "etth1", "patchtst", "forecast", "mse@96", [0.37], [], init="published",
                    higher_is_better=False, extra={"source": "PatchTST"})]
    write_results(tmp_path / "results.json", rows)
    table = render_table([tmp_path])  # a run folder works as well as its results.json
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, one row per (dataset, protocol) headline metric
    assert "| image | c10 | mae_vit | knn | top1 | 40.00 | 30.00 | +10.00 | 80.00 / 70.00 |" in table
    assert "| timeseries | etth1 | patchtst | forecast | mse@96 | 0.3800 | 0.4000 | +0.0200 | – | 0.3700 |" in table
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no results.json"):
        render_table([tmp_path / "empty"])
    assert json.loads((tmp_path / "results.json").read_text())["hardware"]["cpu_capability"]


def test_a_recipes_ablation_gets_its_own_rows_without_the_main_models_baseline_or_cost():
    from maezoo.bench.records import rows
    from maezoo.bench.report import _ablation

    res = [Result("mae", "image+text", "c10", "m3ae", "linprobe@image", "top1", [48.0], [0], init="pretrained", steps=8),
           Result("mae", "image+text", "c10", "m3ae", "linprobe@image", "top1", [40.0], [0], init="random", steps=0),
           Result("mae", "image", "c10", "m3ae (image only)", "linprobe@image", "top1", [47.0], [0], init="pretrained",
                  steps=8)]
    out = rows(res, {"c10": {"steps": 8, "wall_time_s": 12.0}}, {"c10": 1000}, {"cpu": "x"}, None)
    main, ab = out
    assert main["baseline"]["value"] == 40.0 and main["params"] == 1000 and main["wall_time_s"] == 12.0
    assert ab["baseline"] is None and ab["params"] is None and ab["wall_time_s"] is None and ab["steps"] == 8
    rec = {"records": out}
    assert _ablation(rec, ab) == "image only" and _ablation(rec, main) is None
