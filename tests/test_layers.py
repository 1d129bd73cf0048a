"""The layering reads from the folders: core at the bottom; engine and protocols side by side, neither importing
the other; systems above them; the CLI on top; modalities import only the core (and never each other)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "maezoo"
MODALITIES = {"image", "graph", "video", "audio", "timeseries", "text", "multimodal"}
#: what each part of the package may not import (top-level ``maezoo.<part>`` names)
FORBIDDEN = {
    "core": MODALITIES | {"engine", "eval", "systems", "cli", "bench"},
    "engine": MODALITIES | {"eval", "systems", "cli", "bench"},
    "eval": MODALITIES | {"engine", "systems", "cli", "bench"},
    "optim.py": MODALITIES | {"engine", "eval", "systems", "cli", "bench"},
    "step.py": MODALITIES | {"engine", "eval", "systems", "cli", "bench"},
    "runtime.py": MODALITIES | {"engine", "eval", "systems", "cli", "bench"},
    "config.py": MODALITIES | {"engine", "eval", "systems", "cli", "bench"},
    "figures.py": MODALITIES | {"engine", "eval", "systems", "cli", "bench"},
    "bench": MODALITIES | {"cli"},
    "systems": MODALITIES | {"cli", "bench"},
    "hub": MODALITIES | {"engine", "eval", "systems", "cli", "bench"},
    **{m: (MODALITIES - {m}) | {"engine", "eval", "systems", "cli", "bench"} for m in MODALITIES},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "maezoo" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("part", sorted(p for p in FORBIDDEN if (PKG / p).exists()))  # modalities as they land
def test_layer_imports(part):
    target = PKG / part
    files = [target] if target.is_file() else sorted(target.rglob("*.py"))
    bad = {str(f.relative_to(PKG)): sorted(_imports(f) & FORBIDDEN[part]) for f in files}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"maezoo/{part} imports layers it may not: {bad}"


def test_one_backward_call_in_the_package():
    """Every training loop (the Trainer, fine-tuning, the probes, forecasting) steps through
    :class:`maezoo.step.OptimStep`: ``grep -rn "\\.backward(" maezoo`` finds its one line."""
    hits = [f"{f.relative_to(PKG)}:{i}" for f in sorted(PKG.rglob("*.py"))
            for i, line in enumerate(f.read_text().splitlines(), 1) if ".backward(" in line]
    assert len(hits) == 1 and hits[0].startswith("step.py:"), hits
