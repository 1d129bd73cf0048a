"""Graph figures: a 2-D projection (t-SNE or PCA) of node embeddings coloured by class, saved as PNG.

Registered as the ``graph_nodes`` visualiser, which ``maezoo visualize RUN`` and the pre-training system call
with the model and the dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from maezoo.registry import register


def project_2d(emb: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(emb)
    if method == "tsne":
        from sklearn.manifold import TSNE

        x = PCA(n_components=min(50, emb.shape[1], emb.shape[0]), random_state=seed).fit_transform(emb)
        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3))).fit_transform(x)
    raise ValueError(f"projection must be 'pca' or 'tsne', got {method!r}")


def plot_embeddings(emb: Tensor | np.ndarray, labels: Tensor | np.ndarray, path: str | Path, method: str = "tsne",
                    title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emb = emb.detach().cpu().numpy() if isinstance(emb, Tensor) else np.asarray(emb)
    labels = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    xy = project_2d(emb, method)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4, linewidths=0)
    ax.legend(*sc.legend_elements(), title="class", loc="best", fontsize=7, markerscale=0.8)
    ax.set_title(title or f"node embeddings ({method})")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


@register("visualizer", "graph_nodes")
def visualize_graph(model, dataset, path: str | Path, num: int = 8, seed: int = 0, method: str = "tsne",  # noqa: ARG001
                    max_nodes: int = 1000) -> Path:
    """t-SNE of the frozen node embeddings of ``dataset[0]`` (a node-classification graph), coloured by node
    label; at most ``max_nodes`` nodes (a seeded sample) are projected, which keeps t-SNE to seconds."""
    g = dataset[0]
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        emb = model.encode(g.to(dev), pool="none")[0].float().cpu()
    labels = g.y if g.y is not None and g.y.numel() == emb.shape[0] else torch.zeros(emb.shape[0], dtype=torch.long)
    if emb.shape[0] > max_nodes:
        keep = torch.randperm(emb.shape[0], generator=torch.Generator().manual_seed(seed))[:max_nodes]
        emb, labels = emb[keep], labels[keep]
    method = method if emb.shape[0] > 5 else "pca"
    return plot_embeddings(emb, labels, path, method=method, title=f"node embeddings ({method})")


visualize_graph.filename = "embeddings.png"  # type: ignore[attr-defined]  (name of the figure in a run folder)
visualize_graph.whole_dataset = True  # type: ignore[attr-defined]  (it embeds every node: no per-class sample)
