"""Where datasets come from.

Order of preference for every dataset: the data root (``$MAEZOO_DATA`` or ``~/.cache/maezoo/data``),
then a read-only copy in ``shared/data`` next to the repository (used by tests and CI; it is copied or
extracted into the data root, never written to), then the dataset's official download.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def find_shared_data(relative: str) -> Path | None:
    """``shared/data/<relative>`` beside the checkout (or under ``$MAEZOO_SHARED_DATA``), if present."""
    cands = []
    if os.environ.get("MAEZOO_SHARED_DATA"):
        cands.append(Path(os.environ["MAEZOO_SHARED_DATA"]))
    cands += [repo_root().parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for base in cands:
        p = base / relative
        if p.exists():
            return p
    return None


def extract_tar(tar_path: Path, dest: Path, marker: str) -> Path:
    """Extract ``tar_path`` into ``dest`` once (atomically: into a temp folder, then rename)."""
    final = dest / marker
    if final.exists():
        return final
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{marker}.tmp{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tf:
        tf.extractall(tmp, filter="data")
    try:  # the archive's top level goes under `marker`; a concurrent extractor may have won the race
        os.replace(tmp, final)
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return final
