"""Graph datasets: Planetoid citation graphs and TU graph-classification sets, prepared as GraphMAE does.

Where data comes from (first hit wins):
    1. ``<root>/<Name>/raw`` already present (``root`` defaults to ``data_root()/planetoid`` or
       ``data_root()/tu``, ``data_root()`` being ``$MAEZOO_DATA``);
    2. ``source`` (a folder holding ``Cora/raw/`` or ``NAME.zip``; when given and lacking them:
       ``FileNotFoundError``), else ``$MAEZOO_SHARED_DATA`` or ``../shared/data`` next to the repository
       root: the files are checked and copied (never written in place) into ``root``;
    3. otherwise PyG downloads them (users with a network; tests never reach this branch).

A missing, empty, truncated or corrupt file raises ``DatasetFileError`` (a ``ValueError``) naming the file
(or the archive it came from) and the fix; a copied ``raw/`` folder is removed. Only raw text files are parsed
(PyG's readers, never its pickled ``processed/`` cache), so nothing in the data root is ever unpickled.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F

from maezoo.config import data_root
from maezoo.data.sources import (
    SHARED_COPY_FIX,
    DatasetFileError,
    dataset_file_error,
    download_or_explain,
    extract_archive,
    shared_data_dirs,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_DEGREE = 400  # GraphMAE's cap for one-hot degree features
PLANETOID_FILES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")  # ind.<name>.<file>
TU_FILES = ("A", "graph_indicator", "graph_labels")  # NAME_<file>.txt: PyG needs the first two, we the labels
T = TypeVar("T")


def shared_data_dir() -> Path:
    """``$MAEZOO_SHARED_DATA`` if set, else ``shared/data`` beside the repository."""
    return shared_data_dirs()[0]


def _source_dirs(source: str | Path | None, sub: str) -> list[Path]:
    """Where to look for raw files: only ``source`` when given, else every ``shared/data/<sub>`` candidate."""
    if source is not None:
        return [Path(source)]
    return list(dict.fromkeys(b / sub for b in shared_data_dirs()))


def _fix_for(origin: Path | None, raw: Path) -> str:
    """How to repair a bad raw file: replace the origin it was copied from, or delete the data-root copy."""
    if origin is not None:
        return ("replace it with an intact copy (the shared data folder lists checksums in SHA256SUMS), "
                "or point `source` (or MAEZOO_SHARED_DATA) at a folder holding a good one")
    return f"delete {raw} and run again to copy or download the files afresh"


def _check_files(folder: Path, names: list[str], fix: str) -> None:
    """Every file in ``names`` must exist in ``folder`` and be non-empty."""
    for n in names:
        f = folder / n
        if not f.is_file():
            raise dataset_file_error(f, "missing", fix)
        if f.stat().st_size == 0:
            raise dataset_file_error(f, "empty (0 bytes)", fix)


def _copy_tree(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=".tmp-"))
    try:
        shutil.copytree(src, tmp / "x")
        (tmp / "x").replace(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_raw(src: Path, dst: Path, names: list[str]) -> None:
    """Copy the raw folder ``src`` to ``dst`` after checking that it holds every file of ``names``.

    (A raw folder lacking a file would otherwise make PyG download the rest.)
    """
    _check_files(src, names, _fix_for(src, dst))
    _copy_tree(src, dst)


def _read_raw(read: Callable[[], T], raw: Path, fresh_raw: bool,
              diagnose: Callable[[Exception], DatasetFileError | None]) -> T:
    """``read()`` (PyG's parser of the raw text files in ``raw``), cleaning up and naming the bad file on failure.

    Only raw files are read: nothing is unpickled, so a file planted in the data root (PyG's ``processed/data.pt``,
    which PyG retries with ``weights_only=False``) can never run code here. On an error the ``raw/`` folder is
    removed when this call copied it, and ``diagnose(exc)`` names the bad raw file when it can.
    """
    try:
        return read()
    except Exception as exc:
        err = diagnose(exc)
        if fresh_raw:
            shutil.rmtree(raw, ignore_errors=True)
        if err is not None:
            raise err from exc
        raise


def _download_raw(name: str, raw: Path, fetch: Callable[[Path], None], url: str) -> None:
    """Download into a temporary folder beside ``raw`` and rename it into place; a network failure names MAEZOO_DATA."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=raw.parent, prefix=".raw.tmp-"))
    try:
        download_or_explain(name, raw, url, lambda: fetch(tmp))
        tmp.replace(raw)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _where(raw_file: Path, origin: Path | None) -> str:
    """How to name a raw file in an error: its origin (folder or archive member) when it was copied."""
    if origin is None:
        return str(raw_file)
    return str(origin / raw_file.name) if origin.is_dir() else f"{origin} (member {raw_file.name})"


def _planetoid_problem(raw: Path, name: str, origin: Path | None) -> DatasetFileError | None:
    """The first raw Planetoid file that PyG cannot parse, as an error naming it (None if all parse)."""
    from torch_geometric.io.planetoid import read_file

    files = [raw / f"ind.{name.lower()}.{part}" for part in PLANETOID_FILES]
    if not all(f.is_file() for f in files):  # e.g. a failed download: nothing to diagnose
        return None
    for f, part in zip(files, PLANETOID_FILES):
        try:
            read_file(str(raw), name, part)
        except Exception as exc:  # noqa: BLE001 - any parse failure means this file is bad
            return dataset_file_error(_where(f, origin), "unreadable, probably truncated or corrupt "
                                      f"({type(exc).__name__}: {exc})", _fix_for(origin, raw))
    return None


def _planetoid_origin(cand: Path, name: str) -> Path | None:
    """``cand/<Name>/raw``, or ``cand/raw`` when ``cand`` is itself the dataset's folder."""
    if (cand / name / "raw").is_dir():
        return cand / name / "raw"
    if (cand / "raw").is_dir() and cand.name.lower() == name.lower():
        return cand / "raw"
    return None


def load_planetoid(name: str = "Cora", root: str | Path | None = None, source: str | Path | None = None,
                   normalize_features: bool = True):
    """The Planetoid graph with its public split, features row-normalised, self-loops removed.

    (The tokenizer adds one self-loop per node, as GraphMAE's loader does.) A missing, empty or corrupt raw
    file raises :class:`DatasetFileError` naming it, and leaves no copied ``raw/`` or half-written
    folder behind.
    """
    import torch_geometric.transforms as T
    from torch_geometric.io.planetoid import read_planetoid_data
    from torch_geometric.utils import remove_self_loops

    root = Path(root) if root is not None else data_root() / "planetoid"
    raw = root / name / "raw"
    files = [f"ind.{name.lower()}.{part}" for part in PLANETOID_FILES]
    fresh = not raw.is_dir()
    origin: Path | None = None
    if fresh:
        origin = next(filter(None, (_planetoid_origin(c, name) for c in _source_dirs(source, "planetoid"))), None)
        if origin is not None:
            _copy_raw(origin, raw, files)
        elif source is not None:
            raise FileNotFoundError(f"{source}: holds no {name}/raw/ folder with the Planetoid files; pass a "
                                    f"folder holding {name}/raw/ind.{name.lower()}.*, or no source to download")
        else:
            _download_raw(name, raw, lambda tmp: _fetch_files(PLANETOID_URL, files, tmp), PLANETOID_URL)
    data = _read_raw(lambda: read_planetoid_data(str(raw), name), raw, fresh,
                     lambda _exc: _planetoid_problem(raw, name, origin))
    if normalize_features:
        data = T.NormalizeFeatures()(data)
    data.edge_index = remove_self_loops(data.edge_index)[0]
    data.num_classes = int(data.y.max()) + 1
    return data


PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
TU_URL = "https://www.chrsmrrs.com/graphkerneldatasets"


def _fetch_files(base_url: str, files: list[str], into: Path) -> None:
    import urllib.request

    for f in files:
        urllib.request.urlretrieve(f"{base_url}/{f}", into / f)


def _tu_file_problem(folder: Path, name: str) -> tuple[Path, str] | None:
    """The first bad TU file in ``folder`` and what is wrong with it, or None.

    The needed files must exist and be non-empty, and every ``NAME_*.txt`` must end with a newline: PyG
    silently drops an incomplete last line, so a truncated file would otherwise load as a smaller dataset.
    """
    for part in TU_FILES:
        f = folder / f"{name}_{part}.txt"
        if not f.is_file():
            return f, "missing"
        if f.stat().st_size == 0:
            return f, "empty (0 bytes)"
    for f in sorted(folder.glob(f"{name}_*.txt")):
        with f.open("rb") as fh:
            fh.seek(-1, 2)
            if fh.read(1) != b"\n":
                return f, "its last line is incomplete (no final newline), so the file is probably truncated"
    return None


def _tu_layout(name: str) -> Callable[[Path], Path]:
    """For :func:`extract_archive`: the folder of an extracted TU zip holding ``NAME_A.txt`` and the rest."""
    def pick(tmp: Path) -> Path:
        files = sorted(tmp.rglob(f"{name}_A.txt"))
        if not files:
            raise ValueError(f"holds no {name}_A.txt; expected the TU layout {name}/{name}_A.txt, "
                             f"{name}_graph_indicator.txt, {name}_graph_labels.txt")
        bad = _tu_file_problem(files[0].parent, name)
        if bad is not None:
            raise ValueError(f"member {bad[0].relative_to(tmp)}: {bad[1]}")
        return files[0].parent
    return pick


def extract_tu_zip(zip_path: Path, name: str, raw: Path, *, fix: str = SHARED_COPY_FIX) -> None:
    """Unpack ``NAME.zip`` (holding ``NAME/NAME_*.txt``) into ``raw`` via a temporary folder.

    An empty, truncated or corrupt zip, or one without the TU files, raises :class:`DatasetFileError`
    naming it (with ``fix``); nothing is left behind.
    """
    extract_archive(Path(zip_path), raw, fix, _tu_layout(name))


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


def _tu_problem(raw: Path, name: str, origin: Path | None, exc: Exception) -> DatasetFileError | None:
    """The first TU raw file that PyG cannot parse, else the set as a whole, as an error (None: no files)."""
    from torch_geometric.io.tu import read_file

    if not all((raw / f"{name}_{part}.txt").is_file() for part in TU_FILES[:2]):  # e.g. a failed download
        return None
    fix = _fix_for(origin, raw)
    for f in sorted(raw.glob(f"{name}_*.txt")):
        try:
            read_file(str(raw), name, f.stem[len(name) + 1:])
        except Exception as err:  # noqa: BLE001 - any parse failure means this file is bad
            return dataset_file_error(_where(f, origin), f"unreadable ({type(err).__name__}: {err})", fix)
    return dataset_file_error(origin or raw, "the TU files do not fit together, one is probably truncated "
                              f"(PyG's TUDataset failed with {type(exc).__name__}: {exc})", fix)


def _read_tu_graphs(raw: Path, name: str) -> list:
    """The graphs of a TU set read from its raw text files, with TUDataset's defaults (continuous node and edge
    attributes dropped, node and edge labels kept one-hot)."""
    from torch_geometric.data import InMemoryDataset
    from torch_geometric.io.tu import read_tu_data

    data, slices, sizes = read_tu_data(str(raw), name)
    if data.x is not None:
        data.x = data.x[:, sizes["num_node_attributes"]:]
    if data.edge_attr is not None:
        data.edge_attr = data.edge_attr[:, sizes["num_edge_attributes"]:]
    table = InMemoryDataset()
    table.data, table.slices = data, slices
    return [table.get(i) for i in range(table.len())]


def _fetch_tu(url: str, name: str, into: Path) -> None:
    import urllib.request

    archive = into.parent / f".{name}.zip.part"
    try:
        urllib.request.urlretrieve(url, archive)
        shutil.rmtree(into)
        extract_tu_zip(archive, name, into, fix=f"delete {archive} and run again to download it afresh")
    finally:
        archive.unlink(missing_ok=True)


def load_tu(name: str, root: str | Path | None = None, source: str | Path | None = None,
            max_degree: int = MAX_DEGREE) -> tuple[list, int, int]:
    """A TU dataset as a list of ``Data`` with features: ``(graphs, num_features, num_classes)``.

    Node labels one-hot (PyG's default ``x``) where the set has them, else one-hot degrees (IMDB-BINARY).
    A bad zip or raw file raises :class:`DatasetFileError` naming it, with nothing half-written left behind.
    """
    root = Path(root) if root is not None else data_root() / "tu"
    raw = root / name / "raw"
    fresh = not raw.is_dir()
    origin: Path | None = None
    if fresh:
        for cand in _source_dirs(source, "tu"):
            if (cand / f"{name}.zip").is_file():
                origin = cand / f"{name}.zip"
                extract_tu_zip(origin, name, raw, fix=_fix_for(origin, raw))
                break
            if (cand / name / "raw").is_dir():
                origin = cand / name / "raw"
                bad = _tu_file_problem(origin, name)
                if bad is not None:
                    raise dataset_file_error(bad[0], bad[1], _fix_for(origin, raw))
                _copy_tree(origin, raw)
                break
        else:
            if source is not None:
                raise FileNotFoundError(f"{source}: holds neither {name}.zip nor {name}/raw/; pass a folder "
                                        "holding one of them, or no source to download")
            url = f"{TU_URL}/{name}.zip"
            _download_raw(name, raw, lambda tmp, u=url: _fetch_tu(u, name, tmp), url)
    from torch_geometric.utils import remove_self_loops

    graphs = _read_raw(lambda: _read_tu_graphs(raw, name), raw, fresh, lambda exc: _tu_problem(raw, name, origin, exc))
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
