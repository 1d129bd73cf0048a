"""Damaged dataset files: a clear one-line ``ValueError`` naming the file and the fix, and no leftovers.

Every bad file is built here in ``tmp_path``; the loaders are pointed at it through their ``root``/``source``
arguments or ``MAEZOO_DATA``/``MAEZOO_SHARED_DATA``. Nothing here downloads.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from maezoo.data.sources import DatasetFileError, extract_archive

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CORA_RAW = SHARED / "planetoid" / "Cora" / "raw"
needs_cora = pytest.mark.skipif(not CORA_RAW.is_dir(), reason="shared Cora data absent")


def assert_clean(folder: Path) -> None:
    """No temporary or partial extraction folder left anywhere under ``folder``."""
    leftovers = [p for p in folder.rglob("*") if ".tmp" in p.name] if folder.exists() else []
    assert not leftovers, leftovers


def assert_one_line(err: pytest.ExceptionInfo, path: Path | str) -> None:
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    assert str(path) in msg and "Fix:" in msg, msg


# ---------------------------------------------------------------- archives in general

def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_extract_archive_rejects_path_traversal_and_cleans_up(tmp_path):
    bad = tmp_path / "evil.tar"
    bad.write_bytes(_tar_bytes({"../escaped.txt": b"x"}))
    with pytest.raises(DatasetFileError) as err:
        extract_archive(bad, tmp_path / "out" / "ds", fix="get a clean archive")
    assert_one_line(err, bad)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "ds").exists()
    assert_clean(tmp_path / "out")


def test_extract_archive_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.zip"):
        extract_archive(tmp_path / "nope.zip", tmp_path / "out", fix="-")


# ---------------------------------------------------------------- CIFAR-10 tar

CIFAR_FILES = {f"{split}/{cls}/{i:04d}.jpg": bytes([i]) * 700
               for split in ("train", "test") for cls in ("cat", "dog") for i in range(2)}


def _cifar_tar(kind: str) -> bytes:
    good = _tar_bytes(CIFAR_FILES)
    if kind == "empty":
        return b""
    if kind == "half":
        return good[: len(good) // 2]
    if kind == "member_boundary":  # cut exactly after the train/ members: tarfile alone would not notice
        with tarfile.open(fileobj=io.BytesIO(good)) as tf:
            first_test = next(m for m in tf.getmembers() if m.name.startswith("test/"))
        return good[: first_test.offset]
    if kind == "garbage":
        return b"this is not a tar archive\n" * 100
    if kind == "no_test":
        return _tar_bytes({k: v for k, v in CIFAR_FILES.items() if k.startswith("train/")})
    if kind == "nested":
        return _tar_bytes({f"cifar10/{k}": v for k, v in CIFAR_FILES.items()})
    if kind == "class_mismatch":
        return _tar_bytes({k: v for k, v in CIFAR_FILES.items() if not k.startswith("test/dog")})
    return good


@pytest.fixture
def cifar_env(tmp_path, monkeypatch) -> Callable[[str], Path]:
    """Point MAEZOO_DATA/MAEZOO_SHARED_DATA at tmp folders; returns a writer of the shared CIFAR tar."""
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MAEZOO_SHARED_DATA", str(tmp_path / "shared"))

    def write(kind: str) -> Path:
        tar = tmp_path / "shared" / "cifar10" / "cifar10-jpg.tar"
        tar.parent.mkdir(parents=True, exist_ok=True)
        tar.write_bytes(_cifar_tar(kind))
        return tar
    return write


@pytest.mark.parametrize("kind, what", [
    ("empty", "empty"), ("half", "truncated or corrupt"), ("member_boundary", "truncated or corrupt"),
    ("garbage", "truncated or corrupt"), ("no_test", "no test/"), ("nested", "no train/"),
    ("class_mismatch", "different classes"),
])
def test_cifar_bad_tar_names_file_fix_and_cleans_up(cifar_env, tmp_path, kind, what):
    from maezoo.image.data import cifar10_folder

    tar = cifar_env(kind)
    with pytest.raises(DatasetFileError, match=what) as err:
        cifar10_folder(download=False)
    assert_one_line(err, tar)
    assert "SHA256SUMS" in str(err.value) and "MAEZOO_DATA" in str(err.value)
    assert not (tmp_path / "data" / "cifar10").exists()
    assert_clean(tmp_path / "data")

    cifar_env("good")  # a later call with a good archive works
    folder = cifar10_folder(download=False)
    assert folder == tmp_path / "data" / "cifar10"
    assert sorted(p.name for p in (folder / "test").iterdir()) == ["cat", "dog"]
    assert_clean(tmp_path / "data")


def test_cifar_incomplete_folder_in_data_root_is_named(cifar_env, tmp_path):
    from maezoo.image.data import cifar10_folder

    cifar_env("good")
    (tmp_path / "data" / "cifar10" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cifar10" / "train" / "cat" / "0000.jpg").write_bytes(b"x")
    with pytest.raises(DatasetFileError, match="no test/") as err:
        cifar10_folder(download=False)
    assert_one_line(err, tmp_path / "data" / "cifar10")
    assert "delete this folder" in str(err.value)


def test_cifar_missing_without_download_never_reaches_network(tmp_path, monkeypatch):
    import maezoo.data.sources as sources
    import maezoo.image.data as image_data

    monkeypatch.setattr(sources, "find_shared_data", lambda rel: None)
    monkeypatch.setattr(image_data, "_download_cifar10_as_folder",
                        lambda base: pytest.fail("must not download"))
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"):
        image_data.cifar10_folder(tmp_path / "data", download=False)


# ---------------------------------------------------------------- Cora (Planetoid raw files)

def _cora_source(tmp_path: Path, damage: str) -> Path:
    """A copy of the shared Cora raw folder under ``tmp_path/src`` with ``ind.cora.x`` damaged."""
    raw = tmp_path / "src" / "Cora" / "raw"
    shutil.copytree(CORA_RAW, raw)
    x = raw / "ind.cora.x"
    if damage == "half":
        x.write_bytes(x.read_bytes()[: x.stat().st_size // 2])
    elif damage == "empty":
        x.write_bytes(b"")
    elif damage == "missing":
        x.unlink()
    elif damage == "garbage":
        x.write_bytes(b"\x80\x04garbage" * 50)
    return tmp_path / "src"


@needs_cora
@pytest.mark.parametrize("damage, what", [
    ("half", "truncated or corrupt"), ("empty", "empty"), ("missing", "missing"), ("garbage", "corrupt"),
])
def test_cora_bad_raw_file_names_it_and_cleans_up(tmp_path, damage, what):
    from maezoo.graph.data import load_planetoid

    src = _cora_source(tmp_path, damage)
    root = tmp_path / "root"
    with pytest.raises(DatasetFileError, match=what) as err:
        load_planetoid("Cora", root=root, source=src)
    assert_one_line(err, src / "Cora" / "raw" / "ind.cora.x")
    assert not (root / "Cora" / "raw").exists() and not (root / "Cora" / "processed").exists()
    assert_clean(root)

    shutil.copy(CORA_RAW / "ind.cora.x", src / "Cora" / "raw" / "ind.cora.x")  # fixed: the next call works
    data = load_planetoid("Cora", root=root, source=src)
    assert data.num_nodes == 2708 and data.num_classes == 7


@needs_cora
def test_cora_bad_raw_file_already_in_data_root(tmp_path, monkeypatch):
    """A damaged file already in the data root (via MAEZOO_DATA) is named with 'delete ...'; processed/ goes."""
    from maezoo.graph.data import load_planetoid

    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    raw = tmp_path / "data" / "planetoid" / "Cora" / "raw"
    shutil.copytree(CORA_RAW, raw)
    (raw / "ind.cora.graph").write_bytes((CORA_RAW / "ind.cora.graph").read_bytes()[:1000])
    with pytest.raises(DatasetFileError, match="truncated") as err:
        load_planetoid("Cora")
    assert_one_line(err, raw / "ind.cora.graph")
    assert f"delete {raw}" in str(err.value)
    assert not (raw.parent / "processed").exists()


@needs_cora
def test_cora_half_written_processed_cache_is_never_read(tmp_path, monkeypatch):
    """Graphs are parsed from the raw files each time; a damaged PyG cache beside them changes nothing."""
    from maezoo.graph.data import load_planetoid

    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MAEZOO_SHARED_DATA", str(tmp_path / "shared"))
    shutil.copytree(CORA_RAW, tmp_path / "shared" / "planetoid" / "Cora" / "raw")
    load_planetoid("Cora")
    processed = tmp_path / "data" / "planetoid" / "Cora" / "processed"
    assert not processed.exists()  # nothing is written beside the raw files
    processed.mkdir()
    (processed / "data.pt").write_bytes(b"\x80\x04half a pickle")
    assert load_planetoid("Cora").num_nodes == 2708


def test_planetoid_explicit_source_without_files_does_not_download(tmp_path):
    from maezoo.graph.data import load_planetoid

    (tmp_path / "src").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no Cora/raw/"):
        load_planetoid("Cora", root=tmp_path / "root", source=tmp_path / "src")
    assert not (tmp_path / "root" / "Cora").exists()


# ---------------------------------------------------------------- TU zips

TOY = {  # two triangles (graph 1 label 1, graph 2 label -1) and a path; node labels 0/1
    "TOY_A.txt": "1, 2\n2, 1\n2, 3\n3, 2\n1, 3\n3, 1\n4, 5\n5, 4\n5, 6\n6, 5\n4, 6\n6, 4\n7, 8\n8, 7\n",
    "TOY_graph_indicator.txt": "1\n1\n1\n2\n2\n2\n3\n3\n",
    "TOY_graph_labels.txt": "1\n-1\n1\n",
    "TOY_node_labels.txt": "0\n1\n0\n1\n0\n1\n0\n1\n",
}


def _toy_zip(kind: str) -> bytes:
    files = {f"TOY/{k}": v.encode() for k, v in TOY.items()}
    good = _zip_bytes(files)
    if kind == "empty":
        return b""
    if kind == "half":
        return good[: len(good) // 2]
    if kind == "garbage":
        return b"PK\x03\x04 not really a zip" * 20
    if kind == "no_A":
        return _zip_bytes({k: v for k, v in files.items() if not k.endswith("_A.txt")})
    if kind == "empty_indicator":
        return _zip_bytes({**files, "TOY/TOY_graph_indicator.txt": b""})
    if kind == "no_labels":
        return _zip_bytes({k: v for k, v in files.items() if "graph_labels" not in k})
    if kind == "bad_number":  # parses as a zip, but PyG cannot read a file in it
        return _zip_bytes({**files, "TOY/TOY_graph_labels.txt": b"1\nx\n1\n"})
    if kind == "cut_line":  # a raw file cut in the middle of a line
        return _zip_bytes({**files, "TOY/TOY_A.txt": TOY["TOY_A.txt"].encode()[:-3]})
    return good


@pytest.mark.parametrize("kind, what", [
    ("empty", "empty"), ("half", "truncated or corrupt"), ("garbage", "truncated or corrupt"),
    ("no_A", "holds no TOY_A.txt"), ("empty_indicator", "TOY_graph_indicator.txt: empty"),
    ("no_labels", "TOY_graph_labels.txt: missing"), ("cut_line", "TOY_A.txt: its last line is incomplete"),
    ("bad_number", r"member TOY_graph_labels.txt\): unreadable"),
])
def test_tu_bad_zip_names_it_and_cleans_up(tmp_path, kind, what):
    from maezoo.graph.data import load_tu

    src, root = tmp_path / "src", tmp_path / "root"
    src.mkdir()
    (src / "TOY.zip").write_bytes(_toy_zip(kind))
    with pytest.raises(DatasetFileError, match=what) as err:
        load_tu("TOY", root=root, source=src)
    assert_one_line(err, src / "TOY.zip")
    assert not (root / "TOY" / "raw").exists() and not (root / "TOY" / "processed").exists()
    assert_clean(root)

    (src / "TOY.zip").write_bytes(_toy_zip("good"))  # a later call with a good zip works
    graphs, width, classes = load_tu("TOY", root=root, source=src)
    assert len(graphs) == 3 and width == 2 and classes == 2
    assert_clean(root)


def test_tu_zip_via_shared_env_and_extract_tu_zip(tmp_path, monkeypatch):
    from maezoo.graph.data import extract_tu_zip, load_tu

    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MAEZOO_SHARED_DATA", str(tmp_path / "shared"))
    zip_path = tmp_path / "shared" / "tu" / "TOY.zip"
    zip_path.parent.mkdir(parents=True)
    zip_path.write_bytes(_toy_zip("half"))
    with pytest.raises(DatasetFileError) as err:
        load_tu("TOY")
    assert_one_line(err, zip_path)
    assert_clean(tmp_path / "data")
    with pytest.raises(DatasetFileError) as err:
        extract_tu_zip(zip_path, "TOY", tmp_path / "out" / "raw")
    assert_one_line(err, zip_path)
    assert not (tmp_path / "out" / "raw").exists()
    assert_clean(tmp_path / "out")
    zip_path.write_bytes(_toy_zip("good"))
    assert len(load_tu("TOY")[0]) == 3


def test_tu_raw_folder_source_missing_file(tmp_path):
    from maezoo.graph.data import load_tu

    raw = tmp_path / "src" / "TOY" / "raw"
    raw.mkdir(parents=True)
    for k, v in TOY.items():
        if "indicator" not in k:
            (raw / k).write_text(v)
    with pytest.raises(DatasetFileError, match="missing") as err:
        load_tu("TOY", root=tmp_path / "root", source=tmp_path / "src")
    assert_one_line(err, raw / "TOY_graph_indicator.txt")
    assert not (tmp_path / "root" / "TOY").exists()


def test_tu_explicit_source_without_files_does_not_download(tmp_path):
    from maezoo.graph.data import load_tu

    (tmp_path / "src").mkdir()
    with pytest.raises(FileNotFoundError, match="neither TOY.zip"):
        load_tu("TOY", root=tmp_path / "root", source=tmp_path / "src")
