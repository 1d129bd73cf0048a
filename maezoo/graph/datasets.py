"""Graph datasets as registered ``dataset`` builders, so graph recipes speak the same dialect as the others.

* ``planetoid`` (Cora, CiteSeer, PubMed): one graph for node classification; every split is that graph
  (the protocol reads its ``train_mask``/``val_mask``/``test_mask``). One sample per epoch: a pre-training
  step is one pass over the whole graph, as in GraphMAE.
* ``tu`` (MUTAG, PROTEINS, IMDB-BINARY, ...): the graphs of a TU set for graph classification, evaluated by
  cross-validation, so every split is the whole set.

Both carry ``collate_fn`` (PyG ``Batch``) for the Trainer and the protocols, and ``model_kwargs`` (``in_dim``)
that the system passes to the model builder unless the recipe sets them.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from maezoo.graph.data import MAX_DEGREE, load_planetoid, load_tu
from maezoo.registry import register


def collate_graphs(graphs: list[Any]) -> Any:
    """One graph as it is (no copy: full-graph training reuses the same tensors every step); several as a PyG
    ``Batch`` (one disjoint graph with a ``batch`` vector)."""
    if len(graphs) == 1 and not hasattr(graphs[0], "num_graphs"):
        return graphs[0]
    from torch_geometric.data import Batch

    return Batch.from_data_list(graphs)


class GraphList(Dataset):
    """A list of PyG graphs with what the Trainer and the protocols read from a dataset."""

    collate_fn = staticmethod(collate_graphs)

    def __init__(self, graphs: list[Any], num_features: int, num_classes: int, name: str) -> None:
        self.graphs, self.name = graphs, name
        self.num_features, self.num_classes = int(num_features), int(num_classes)
        self.model_kwargs = {"in_dim": self.num_features}

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Any:
        return self.graphs[i]

    @property
    def targets(self) -> list[int]:
        return [int(g.y) for g in self.graphs] if len(self.graphs) > 1 else []


_CACHE: dict[tuple, GraphList] = {}


@register("dataset", "planetoid")
def planetoid(name: str = "Cora", split: str = "train", transform: str = "eval", root: str | None = None,
              source: str | None = None, normalize_features: bool = True) -> GraphList:  # noqa: ARG001
    """A Planetoid citation graph with its public split (features row-normalised, as GraphMAE)."""
    key = ("planetoid", name, root, source, normalize_features)
    if key not in _CACHE:
        data = load_planetoid(name, root, source, normalize_features)
        _CACHE[key] = GraphList([data], data.num_features, data.num_classes, name)
    return _CACHE[key]


@register("dataset", "tu")
def tu(name: str = "MUTAG", split: str = "train", transform: str = "eval", root: str | None = None,
       source: str | None = None, max_degree: int = MAX_DEGREE) -> GraphList:  # noqa: ARG001
    """A TU graph-classification set: node labels one-hot, or one-hot degrees where it has none (IMDB)."""
    key = ("tu", name, root, source, max_degree)
    if key not in _CACHE:
        graphs, width, num_classes = load_tu(name, root, source, max_degree)
        _CACHE[key] = GraphList(graphs, width, num_classes, name)
    return _CACHE[key]


def _planetoid_model_kwargs(**args: Any) -> dict[str, Any]:
    return planetoid(**args).model_kwargs  # the width is in the files; the load is cached for the run


def _tu_model_kwargs(**args: Any) -> dict[str, Any]:
    return tu(**args).model_kwargs


planetoid.model_kwargs = _planetoid_model_kwargs  # type: ignore[attr-defined]
tu.model_kwargs = _tu_model_kwargs  # type: ignore[attr-defined]
