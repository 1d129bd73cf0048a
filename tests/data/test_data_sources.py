"""Datasets: nothing in the data root is ever unpickled, and a missing dataset without a network names MAEZOO_DATA."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from maezoo.data.sources import find_shared_data

CORA = find_shared_data("planetoid/Cora/raw")
MUTAG = find_shared_data("tu/MUTAG.zip")


class _Payload:
    """Unpickling this writes a marker file: proof that code from the data root ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _plant(folder: Path, marker: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("data.pt", "pre_transform.pt", "pre_filter.pt"):
        (folder / name).write_bytes(pickle.dumps(_Payload(marker)))


@pytest.mark.skipif(CORA is None, reason="needs shared/data/planetoid")
def test_planted_planetoid_cache_is_never_unpickled(tmp_path: Path) -> None:
    from maezoo.graph.data import load_planetoid

    shutil.copytree(CORA, tmp_path / "Cora" / "raw")
    marker = tmp_path / "marker"
    _plant(tmp_path / "Cora" / "processed", marker)
    data = load_planetoid("Cora", root=tmp_path)
    assert not marker.exists()
    assert data.num_nodes == 2708 and int(data.train_mask.sum()) == 140 and int(data.test_mask.sum()) == 1000


@pytest.mark.skipif(MUTAG is None, reason="needs shared/data/tu")
def test_planted_tu_cache_is_never_unpickled(tmp_path: Path) -> None:
    from maezoo.graph.data import load_tu

    load_tu("MUTAG", root=tmp_path, source=MUTAG.parent)  # extracts raw/
    marker = tmp_path / "marker"
    _plant(tmp_path / "MUTAG" / "processed", marker)
    graphs, width, classes = load_tu("MUTAG", root=tmp_path)
    assert not marker.exists()
    assert (len(graphs), width, classes) == (188, 7, 2)


def test_missing_graph_without_network_names_maezoo_data(tmp_path: Path, monkeypatch) -> None:
    import urllib.error
    import urllib.request

    from maezoo.data.sources import DatasetMissingError
    from maezoo.graph import data as gdata

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    monkeypatch.setattr(gdata, "shared_data_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(DatasetMissingError, match="MAEZOO_DATA") as err:
        gdata.load_planetoid("Cora", root=tmp_path / "planetoid")
    assert gdata.PLANETOID_URL in str(err.value)
    assert not (tmp_path / "planetoid" / "Cora" / "raw").exists()
    with pytest.raises(DatasetMissingError, match="MUTAG.zip"):
        gdata.load_tu("MUTAG", root=tmp_path / "tu")


def test_missing_cifar10_without_network_names_maezoo_data(tmp_path: Path, monkeypatch) -> None:
    import urllib.error

    from maezoo.data.sources import DatasetMissingError
    from maezoo.image import data as idata

    def offline(*a, **k):
        raise RuntimeError("download failed") from urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(idata.datasets, "CIFAR10", type("Offline", (), {"url": "https://www.cs.toronto.edu/x.tar.gz",
                                                                       "__init__": offline}))
    monkeypatch.setattr("maezoo.data.sources.find_shared_data", lambda rel: None)
    with pytest.raises(DatasetMissingError, match="MAEZOO_DATA") as err:
        idata.cifar10_folder(tmp_path)
    assert "cs.toronto.edu" in str(err.value) and str(tmp_path / "cifar10") in str(err.value)
    assert not any(p.name.startswith(".cifar10.tmp") for p in tmp_path.iterdir())
