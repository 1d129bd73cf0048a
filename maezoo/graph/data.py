"""Graph datasets: Planetoid citation graphs and TU graph-classification sets, prepared as GraphMAE does.

Where data comes from (first hit wins):
    1. ``<root>/<Name>/raw`` already present (``root`` defaults to ``data_root()/planetoid`` or
       ``data_root()/tu``, ``data_root()`` being ``$MAEZOO_DATA``);
    2. ``source`` (a folder holding ``Cora/raw/`` or ``NAME.zip``), else ``../shared/data`` next to the
       repository root: the files are copied (never written in place) into ``root``;
    3. otherwise PyG downloads them (users with a network; tests never reach this branch).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from maezoo.config import data_root

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_DEGREE = 400  # GraphMAE's cap for one-hot degree features


def shared_data_dir() -> Path:
    return REPO_ROOT.parent / "shared" / "data"


def _copy_tree(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=".tmp-"))
    try:
        shutil.copytree(src, tmp / "x")
        (tmp / "x").replace(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_planetoid(name: str = "Cora", root: str | Path | None = None, source: str | Path | None = None,
                   normalize_features: bool = True):
    """The Planetoid graph with its public split, features row-normalised, self-loops removed.

    (The tokenizer adds one self-loop per node, as GraphMAE's loader does.)
    """
    import torch_geometric.transforms as T
    from torch_geometric.datasets import Planetoid
    from torch_geometric.utils import remove_self_loops

    root = Path(root) if root is not None else data_root() / "planetoid"
    raw = root / name / "raw"
    if not raw.is_dir():
        for cand in ([Path(source)] if source else []) + [shared_data_dir() / "planetoid"]:
            if (cand / name / "raw").is_dir():
                _copy_tree(cand / name / "raw", raw)
                break
            if (cand / "raw").is_dir() and cand.name.lower() == name.lower():
                _copy_tree(cand / "raw", raw)
                break
    ds = Planetoid(str(root), name, transform=T.NormalizeFeatures() if normalize_features else None)
    data = ds[0]
    data.edge_index = remove_self_loops(data.edge_index)[0]
    data.num_classes = int(ds.num_classes)
    return data


def extract_tu_zip(zip_path: Path, name: str, raw: Path) -> None:
    """Unpack ``NAME.zip`` (holding ``NAME/NAME_*.txt``) into ``raw`` via a temporary folder."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=raw.parent, prefix=".tmp-"))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        files = list(tmp.rglob(f"{name}_A.txt"))
        if not files:
            raise ValueError(f"{zip_path} holds no {name}_A.txt; expected the TU layout NAME/NAME_A.txt ...")
        files[0].parent.replace(raw)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def degree_features(graphs: list, max_degree: int = MAX_DEGREE) -> int:
    """GraphMAE's features for graphs without any: one-hot (in-)degree capped at ``max_degree``.

    Sets ``g.x`` on every graph in place and returns the feature width (``min(max deg, cap) + 1``).
    """
    from torch_geometric.utils import degree

    degs = [degree(g.edge_index[0], num_nodes=g.num_nodes).long() for g in graphs]
    width = min(max((int(d.max()) if d.numel() else 0) for d in degs), max_degree) + 1
    for g, d in zip(graphs, degs):
        g.x = F.one_hot(d.clamp_max(max_degree), num_classes=width).float()
    return width


def load_tu(name: str, root: str | Path | None = None, source: str | Path | None = None,
            max_degree: int = MAX_DEGREE) -> tuple[list, int, int]:
    """A TU dataset as a list of ``Data`` with features: ``(graphs, num_features, num_classes)``.

    Node labels one-hot (PyG's default ``x``) where the set has them, else one-hot degrees (IMDB-BINARY).
    """
    from torch_geometric.datasets import TUDataset
    from torch_geometric.utils import remove_self_loops

    root = Path(root) if root is not None else data_root() / "tu"
    raw = root / name / "raw"
    if not raw.is_dir():
        for cand in ([Path(source)] if source else []) + [shared_data_dir() / "tu"]:
            if (cand / f"{name}.zip").is_file():
                extract_tu_zip(cand / f"{name}.zip", name, raw)
                break
            if (cand / name / "raw").is_dir():
                _copy_tree(cand / name / "raw", raw)
                break
    ds = TUDataset(str(root), name)
    graphs = [ds[i] for i in range(len(ds))]
    if any(g.x is None for g in graphs):
        width = degree_features(graphs, max_degree)
    else:
        width = int(graphs[0].x.shape[1])
    for g in graphs:
        g.x = g.x.float()
        g.edge_index = remove_self_loops(g.edge_index)[0]
    num_classes = int(torch.cat([g.y.view(-1) for g in graphs]).max()) + 1
    counts = Counter(int(g.y) for g in graphs)
    if len(counts) < 2:
        raise ValueError(f"{name}: graph classification needs at least two classes, got {dict(counts)}")
    return graphs, width, num_classes
