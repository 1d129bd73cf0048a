"""Graph modality: GraphMAE (Hou et al., KDD'22) on PyG graphs.

Importing this package registers the ``graph_nodes`` tokenizer, the ``gat``/``gin`` encoders, the
``gnn``/``mlp`` decoders, the ``graphmae`` model builder, the ``planetoid`` and ``tu`` datasets and the
``graph_nodes`` visualiser. Pre-training runs through the engine's Trainer; the protocols (``node_linprobe``,
``svm``) live with the other protocols in :mod:`maezoo.eval`.
"""

from maezoo.graph import datasets, visualize  # noqa: F401  (registers datasets and the visualiser)
from maezoo.graph.models import GATEncoder, GINEncoder, GNNDecoder, MLPDecoder, graphmae
from maezoo.graph.tokenizer import GraphNodeTokenizer

__all__ = ["GATEncoder", "GINEncoder", "GNNDecoder", "GraphNodeTokenizer", "MLPDecoder", "graphmae"]
