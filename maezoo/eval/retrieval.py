"""Cross-modal retrieval on frozen features: given one modality of a pair, find its partner among all partners.

Each test pair is encoded one modality at a time (``model.encode({query: x})`` and ``model.encode({gallery: t})``,
mean-pooled, L2-normalised); the cosine similarity ranks the gallery. ``r1``/``r5`` are the share (percent) of
queries whose own partner ranks first / in the top five (image -> text by default; ``reverse_r1`` text -> image),
with ties (the same caption for several images) broken at random, in expectation;
``class_r1`` the share whose top-ranked partner belongs to a pair of the same class (where labels exist).
Features of a masked autoencoder are not trained to align across modalities, so chance (``100 / pairs``) is the
reference: the protocol measures how much the shared encoder places a pair's two halves near each other.

Shapes: features ``[P, D]`` per modality for ``P`` pairs; similarity ``[P, P]``
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from maezoo.config import option
from maezoo.data.modal import ModalityView
from maezoo.eval.features import extract_features, make_loader
from maezoo.eval.protocols import EvalData, ProtocolEnv, ProtocolOutput, protocol, subset


@dataclass
class RetrievalSettings:
    #: modality of the queries and of the gallery (keys of the pairs' modality dict)
    query: str = "image"
    gallery: str = "text"
    #: test pairs used (a seeded subset; None: all)
    pairs: int | None = option(1000, ge=2)
    pool: Literal["cls", "mean"] = "mean"


def recall_at(sim: Tensor, k: int) -> float:
    """Percent of rows ``i`` whose column ``i`` is among the ``k`` largest of row ``i``, ties broken at random (the
    expectation: identical captions of several images score alike, and none of them is preferred).

    Shapes: sim ``[P, P]`` (row: query, column: gallery; the partner of query ``i`` is column ``i``)
    """
    own = sim.diagonal().unsqueeze(1)
    above = (sim > own).sum(1).float()  # columns scoring strictly higher than the partner
    tied = (sim == own).sum(1).float()  # the partner and the columns scoring exactly as it does
    return float(((k - above) / tied).clamp(0, 1).mean() * 100)


@protocol("retrieval", RetrievalSettings, compares_random_init=True)
def retrieval(model: nn.Module, data: EvalData, s: RetrievalSettings, env: ProtocolEnv) -> ProtocolOutput:
    t0 = time.perf_counter()
    pairs = subset(data.get("test"), s.pairs, env.seed)
    feats = {}
    for side in (s.query, s.gallery):
        loader = make_loader(ModalityView(pairs, [side]), env.batch_size, num_workers=env.num_workers)
        f, labels = extract_features(model, loader, pool=s.pool, device=env.device,
                                     amp_dtype=env.precision)  # type: ignore[arg-type]
        feats[side] = F.normalize(f.float(), dim=1)
    sim = feats[s.query] @ feats[s.gallery].T
    metrics = {"r1": recall_at(sim, 1), "r5": recall_at(sim, 5), "reverse_r1": recall_at(sim.T, 1)}
    if labels.dim() == 1 and bool((labels >= 0).all()):
        metrics["class_r1"] = float((labels[sim.argmax(1)] == labels).float().mean() * 100)
    return ProtocolOutput(metrics, wall_time_s=time.perf_counter() - t0,
                          extra={"pairs": len(pairs), "chance_r1": 100 / len(pairs),  # type: ignore[arg-type]
                                 "query": s.query, "gallery": s.gallery})

__all__ = ["RetrievalSettings", "recall_at", "retrieval"]
