"""Every third-party package the code imports is declared in pyproject.toml (a green CI on a machine where it was
installed by hand would hide it), and `maezoo --help` answers without importing torch."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirement_names(reqs: list[str]) -> set[str]:
    return {_norm(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in reqs}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(folder: Path) -> set[str]:
    mods: set[str] = set()
    for p in folder.glob("**/*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Import):
                mods.update(a.name.split(".")[0] for a in n.names)
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                mods.add(n.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m not in ("maezoo", "__future__")}


def _undeclared(folder: Path, declared: set[str]) -> list[str]:
    dists = md.packages_distributions()
    local = {p.stem for p in folder.glob("**/*.py")} | {p.name for p in folder.glob("**/") if p.is_dir()}
    missing = []
    for mod in sorted(_imports(folder)):
        if mod in local:  # a module of the folder itself (a test helper beside the tests)
            continue
        owners = {_norm(d) for d in dists.get(mod, [])}
        if not owners:
            missing.append(f"{mod} (not installed here either)")
        elif not owners & declared:
            missing.append(f"{mod} (from {', '.join(sorted(owners))})")
    return missing


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_package_imports_are_declared() -> None:
    deps = _requirement_names(_project()["dependencies"])
    assert not _undeclared(ROOT / "maezoo", deps), "declare these in pyproject.toml [project] dependencies"


def test_test_imports_are_declared() -> None:
    proj = _project()
    deps = _requirement_names(proj["dependencies"] + proj["optional-dependencies"]["dev"])
    assert not _undeclared(ROOT / "tests", deps), "declare these in pyproject.toml's dev extras"


def test_help_does_not_import_torch() -> None:
    code = "import sys; from maezoo.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n" \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout
