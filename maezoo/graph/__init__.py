"""Graph modality: GraphMAE (Hou et al., KDD'22) on PyG graphs.

Importing this package registers the ``graph_nodes`` tokenizer, the ``gat``/``gin`` encoders, the
``gnn``/``mlp`` decoders, the ``graphmae`` model builder and the ``graphmae`` system.
"""

from maezoo.graph.models import GATEncoder, GINEncoder, GNNDecoder, MLPDecoder, graphmae
from maezoo.graph.tokenizer import GraphNodeTokenizer

__all__ = ["GATEncoder", "GINEncoder", "GNNDecoder", "GraphNodeTokenizer", "MLPDecoder", "graphmae"]

from maezoo.graph.system import GraphMAESystem  # noqa: E402  (registers the "graphmae" system)

__all__ += ["GraphMAESystem"]
