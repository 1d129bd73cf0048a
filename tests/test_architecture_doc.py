"""docs/architecture.md names every built-in component the registry holds, so its tables cannot fall behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from maezoo import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
KINDS = ("tokenizer", "masking", "encoder", "decoder", "target", "loss", "model", "dataset", "protocol")


@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_built_in_is_named_in_the_architecture_doc(kind):
    text = DOC.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith(f"| {kind} (")]
    assert len(rows) == 1, f"docs/architecture.md has no single `| {kind} (...)` row"
    built_in = {n: s for n, s in registry.sources(kind).items() if s.startswith("maezoo.")}
    missing = sorted(n for n in built_in if f"`{n}`" not in rows[0])
    assert not missing, f"docs/architecture.md's {kind} row does not name {missing}"
