"""Render a suite's records to Markdown (``docs/benchmarks.md`` and the README summary) and PNG plots.

The Markdown is a pure function of the committed JSON records and of the code version at HEAD (to say which
records were made with other code), so ``tests/bench/test_bench.py`` can check that the committed pages equal what
``maezoo bench report`` produces.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from maezoo.bench.records import code_version, read_records
from maezoo.bench.suites import get_suite

README_START = "<!-- bench:{suite}:start -->"
README_END = "<!-- bench:{suite}:end -->"


def _num(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.{digits}f}"


def _score(value: float | None, std: float | None = None, n: int = 1) -> str:
    if value is None:
        return "–"
    return _num(value) + (f" ± {_num(std)}" if n > 1 and std is not None else "")


def _gain(g: float | None) -> str:
    return "–" if g is None else ("+" if g >= 0 else "−") + _num(abs(g))


def _throughput(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.1f} k" if v >= 1e4 else f"{v:.0f}"


def _code_note(rec: dict[str, Any], head: dict[str, Any]) -> str:
    """The record's commit, and whether the code that made it differs from HEAD's (see :func:`code_fingerprint`)."""
    code = rec.get("code") or {}
    commit = code.get("commit")
    notes = []
    if code.get("dirty"):
        notes.append("uncommitted changes")
    if commit and head.get("commit"):
        mine, now = code_fingerprint(commit), code_fingerprint(head["commit"])
        if mine is None:
            notes.append("commit not in this clone")
        elif mine != now:
            notes.append("code differs from HEAD")
    return (commit or "unknown")[:8] + (f" ({', '.join(notes)})" if notes else "")


_FINGERPRINTS: dict[str, str | None] = {}


def code_fingerprint(rev: str) -> str | None:
    """The git objects of the package at ``rev`` (``maezoo/`` without ``maezoo/bench/``, whose report code does not
    change a result); None when ``rev`` is not in this clone. Recipes are not part of it: a record carries its own
    command and the resolved recipe of its run."""
    if rev not in _FINGERPRINTS:
        import subprocess

        root = Path(__file__).resolve().parents[2]
        try:
            out = subprocess.run(["git", "ls-tree", rev, "maezoo/"], cwd=root, capture_output=True, text=True, timeout=20)
            ok = out.returncode == 0 and out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            ok = False
        _FINGERPRINTS[rev] = (",".join(line.split()[2] for line in out.stdout.splitlines()
                                       if not line.endswith("\tmaezoo/bench")) if ok else None)
    return _FINGERPRINTS[rev]


def _device(rec: dict[str, Any]) -> str:
    hw = rec.get("hardware") or {}
    if hw.get("gpu"):
        return str(hw["gpu"])
    cap = hw.get("cpu_capability")
    return f"{hw.get('cpu', '?')}, {hw.get('cpu_count', '?')} cores" + (f", {cap}" if cap else "")


def summary_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for rec in records:
        main = rec["main"]
        hits = [r for r in rec["records"] if r["protocol"] == main["protocol"] and r["metric"] == main["metric"]]
        if not hits:
            rows.append(["?", "?", rec["method"], main["protocol"], main["metric"], "missing", "–", "–", "–", "–", "–",
                         "–"])
            continue
        grouped = {d for r in hits for d in r.get("over", [])}  # members of an averaged row: only the average shows
        for r in hits:
            if r["dataset"] in grouped:
                continue
            pub = r.get("published")
            base = r.get("baseline")
            rows.append([
                r["modality"], r["dataset"], _ablation(rec, r) or rec["method"], f"{r['protocol']} ({'from scratch' if base and base['what'] == 'from scratch' else 'random init'})" if base else r["protocol"],
                r["metric"], _score(r["value"], r["std"], len(r["seeds"])),
                _score(base["value"], base["std"], len(r["seeds"])) if base else "–", _gain(r.get("gain")),
                _num(pub["value"]) if pub else "–",
                f"{r['wall_time_s']:.0f} s" if r.get("wall_time_s") is not None else "–",
                _throughput(r.get("samples_per_s")), _throughput(r.get("tokens_per_s")),
            ])
    return rows


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def _ablation(rec: dict[str, Any], r: dict[str, Any]) -> str | None:
    """The label of a row from a recipe's ablation (``<model> (<label>)`` beside the entry's own ``<model>``)."""
    main, model = (rec["records"][0].get("model") if rec["records"] else None), r.get("model")
    if main and model and model != main and model.startswith(f"{main} (") and model.endswith(")"):
        return model[len(main) + 2:-1]
    return None


SUMMARY_HEAD = ["modality", "dataset", "method", "main protocol (baseline)", "metric", "pre-trained", "baseline", "gain",
                "published", "pre-train wall", "samples/s", "tokens/s"]


def render_summary(suite: str, records: list[dict[str, Any]], docs_link: str | None = None) -> str:
    lines = _table(SUMMARY_HEAD, summary_rows(records))
    devices = sorted({_device(r) for r in records})
    total = sum(r.get("entry_wall_time_s") or 0 for r in records)
    foot = (f"\nSuite `{suite}`: {len(records)} recipes, {total / 60:.0f} min of runs in all, on {'; '.join(devices)}. "
            "Gain: pre-trained minus baseline (for error metrics, baseline minus pre-trained): positive means pre-training "
            "helped. Published: the paper's figure for the paper's setting (usually far longer pre-training), shown for "
            "orientation.")
    if docs_link:
        foot += f" Every protocol, the plots and the reconstruction gallery: [{docs_link}]({docs_link})."
    return "\n".join(lines) + "\n" + foot + "\n"


def render_page(suite: str, records: list[dict[str, Any]], head: dict[str, Any], plots: dict[str, str]) -> str:
    s = get_suite(suite)
    out = [f"# Benchmarks: suite `{suite}`", "",
           f"Generated by `maezoo bench report --suite {suite}` from `benchmarks/results/{suite}/*.json` (written by "
           f"`maezoo bench --suite {suite}`); do not edit by hand. {s.description[:1].upper() + s.description[1:]}.", "",
           "## Cross-modality summary", "", render_summary(suite, records)]
    current = {e.name: e.notes for e in s.entries}  # commentary follows the suite's definition, not the run
    notes = [f"- **{r['method']}** ({r['entry']}): {current.get(r['entry']) or r.get('notes')}" for r in records
             if current.get(r["entry"]) or r.get("notes")]
    if notes:
        out += ["Notes:", "", *notes, ""]
    by_mod: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        mod = rec["records"][0]["modality"] if rec["records"] else "unknown"
        by_mod.setdefault(mod, []).append(rec)
    out += ["## Per modality, every protocol", ""]
    for mod in by_mod:  # in suite order
        out += [f"### {mod}", ""]
        for rec in by_mod[mod]:
            pre = rec.get("pretrain") or {}
            cost = "; ".join(
                f"{ds}: {p.get('steps')} steps, batch {p.get('effective_batch')}, {_num(p.get('wall_time_s'))} s, "
                f"{_throughput(p.get('samples_per_s'))} samples/s, final loss {_num(p.get('final_loss'), 4)}, "
                f"{p.get('masking') or 'default'} masking {_num(p.get('mask_ratio'))}"
                for ds, p in pre.items())
            out += [f"**{rec['method']}**: `{rec['command']}` (whole entry {rec['entry_wall_time_s']:.0f} s, peak RSS "
                    f"{_num(rec.get('peak_rss_mb'))} MB, code {_code_note(rec, head)}, {_device(rec)})", "",
                    f"Pre-training: {cost or '–'}.", ""]
            rows = []
            for r in rec["records"]:
                base, pub = r.get("baseline"), r.get("published")
                ab = _ablation(rec, r)
                rows.append([r["dataset"], r["protocol"] + (f" ({ab})" if ab else ""), r["metric"],
                             _score(r["value"], r["std"], len(r["seeds"])),
                             (_score(base["value"], base["std"], len(r["seeds"])) + f" ({base['what']})") if base else "–",
                             _gain(r.get("gain")), (f"{_num(pub['value'])} ({pub['source']}"
                                                    + (f"; {pub['setting']}" if pub.get("setting") else "") + ")") if pub else "–",
                             str(len(r["seeds"])), f"{r['params'] / 1e6:.2f} M" if r.get("params") else "–"])
            out += _table(["dataset", "protocol", "metric", "pre-trained", "baseline", "gain", "published", "seeds",
                           "params"], rows) + [""]
    if plots:
        out += ["## Plots", ""]
        for title, path in plots.items():
            out += [f"### {title}", "", f"![{title}]({path})", ""]
    gallery = [(r["method"], r["records"][0]["modality"] if r["records"] else "?", r["figure"]) for r in records if r.get("figure")]
    if gallery:
        out += ["## Reconstruction gallery", "", "One figure per entry (samples drawn across classes; columns: masked "
                "input, reconstruction, original; graphs show node embeddings instead).", ""]
        for method, mod, fig in gallery:
            out += [f"### {mod}: {method}", "", f"![{method}](../benchmarks/results/{suite}/{fig})", ""]
    return "\n".join(out).rstrip() + "\n"


def inject_readme(readme: str, suite: str, summary: str) -> str:
    start, end = README_START.format(suite=suite), README_END.format(suite=suite)
    if start not in readme or end not in readme:
        raise ValueError(f"README has no {start} ... {end} markers; add them where the summary should go")
    before, rest = readme.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{summary}{end}{after}"


def report(suite: str, results_root: Path = Path("benchmarks/results"), docs: Path = Path("docs/benchmarks.md"),
           readme: Path | None = Path("README.md"), plots: bool = True, check: bool = False) -> list[Path]:
    """Write (or with ``check`` compare) the suite's page, the README summary and the plots; return changed paths."""
    folder = results_root / suite
    records = read_records(folder)
    if not records:
        raise ValueError(f"no benchmark records in {folder}; run `maezoo bench --suite {suite}` first")
    order = {e.name: i for i, e in enumerate(get_suite(suite).entries)}
    records.sort(key=lambda r: order.get(r["entry"], len(order)))
    plot_dir = docs.parent / "benchmarks" / suite
    plot_files = {"Pre-training loss": f"benchmarks/{suite}/loss_curves.png",
                  "Downstream score against pre-training steps": f"benchmarks/{suite}/score_vs_steps.png"}
    if plots and not check:
        from maezoo.bench.plots import plot_loss_curves, plot_score_vs_steps

        plot_loss_curves(records, plot_dir / "loss_curves.png")
        if not plot_score_vs_steps(records, plot_dir / "score_vs_steps.png"):
            plot_files.pop("Downstream score against pre-training steps")
    elif not (plot_dir / "score_vs_steps.png").is_file():
        plot_files.pop("Downstream score against pre-training steps")
    page = render_page(suite, records, code_version(), plot_files)
    changed: list[Path] = []
    targets: list[tuple[Path, str]] = [(docs, page)]
    if readme is not None:
        text = readme.read_text()
        link = Path(os.path.relpath(docs.resolve(), readme.resolve().parent)).as_posix()  # as the README sees it
        new = inject_readme(text, suite, render_summary(suite, records, docs_link=link))
        targets.append((readme, new))
    for path, text in targets:
        old = path.read_text() if path.is_file() else None
        if old != text:
            changed.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return changed
