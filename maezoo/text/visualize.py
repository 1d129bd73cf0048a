"""The text counterpart of the reconstruction figure: held-out sentences with the masked positions marked and the
model's top prediction (and its probability) at each, as a PNG and the same as text (``predictions.txt``).

Registered as the ``text`` tokenizer's visualiser, which the pre-training system (and ``maezoo visualize``) calls
with the model and the test split. Pieces are decoded with the model's own vocabulary (the ``tokenizer.json``
saved with it), else the dataset's. In eval mode every hidden piece is the mask token (no random/kept shares).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

from maezoo.core.mae import MaskedAutoencoder
from maezoo.figures import pyplot, save_figure
from maezoo.registry import register
from maezoo.text.data import pad_batch
from maezoo.text.vocab import TextVocab


@dataclass
class MaskedPrediction:
    """One hidden piece: position (after ``[CLS]``), the true piece, the top prediction and its probability."""

    position: int
    truth: str
    predicted: str
    probability: float


@torch.no_grad()
def predict_masked(model: MaskedAutoencoder, ids: torch.Tensor, seed: int = 0
                   ) -> list[tuple[list[str], list[MaskedPrediction]]]:
    """Mask each row as in pre-training (seeded), predict the hidden pieces; per row its pieces and predictions.

    Shapes: ids ``[B, L]`` -> B entries, pieces of length ``L - 1`` (padding dropped)
    """
    vocab = model_vocab(model)
    was = model.training
    model.eval()
    try:
        out = model(ids, generator=torch.Generator(device=ids.device).manual_seed(seed))
    finally:
        model.train(was)
    probs = out.pred.float().softmax(-1)  # [B, M, V]
    top_p, top_i = probs.max(-1)
    valid = out.mask.masked_valid if out.mask.masked_valid is not None else torch.ones_like(top_i, dtype=torch.bool)
    rows = []
    for b in range(ids.shape[0]):
        body = ids[b, 1:]
        keep = body != model.tokenizer.pad_id
        pieces = vocab.pieces(body[keep].tolist())
        preds = [MaskedPrediction(int(pos), pieces[int(pos)], vocab.pieces([int(i)])[0], float(p))
                 for pos, i, p, v in zip(out.mask.ids_masked[b], top_i[b], top_p[b], valid[b]) if bool(v)]
        rows.append((pieces, sorted(preds, key=lambda m: m.position)))
    return rows


def model_vocab(model: MaskedAutoencoder, fallback: TextVocab | None = None) -> TextVocab:
    text = getattr(model.tokenizer, "vocab_json", None)
    if isinstance(text, str):
        return TextVocab.from_json_str(text)
    if fallback is None:
        raise ValueError("the model carries no vocabulary (built without vocab_file); give the dataset's")
    return fallback


def render(pieces: list[str], preds: list[MaskedPrediction]) -> str:
    """``the [cat→dog 0.41] sat`` : hidden pieces in brackets, truth -> top prediction and its probability."""
    at = {m.position: m for m in preds}
    words = []
    for i, piece in enumerate(pieces):
        m = at.get(i)
        words.append(f"[{piece}→{m.predicted} {m.probability:.2f}]" if m else piece)
    return " ".join(words).replace(" ##", "")


@register("visualizer", "text")
def visualize_text(model: MaskedAutoencoder, dataset, path: str | Path, num: int = 8, seed: int = 0) -> Path:
    """PNG of ``num`` held-out texts with their masked pieces and predictions; ``predictions.txt`` beside it."""
    n = min(num, len(dataset))
    samples = [dataset[i] for i in range(n)]
    device = next(model.parameters()).device
    ids = pad_batch([s[0] for s in samples], model.tokenizer.pad_id).to(device)
    rows = predict_masked(model, ids, seed)
    lines = [render(pieces, preds) for pieces, preds in rows]
    hits = sum(m.predicted == m.truth for _, preds in rows for m in preds)
    total = sum(len(preds) for _, preds in rows)
    header = f"hidden pieces as [truth→top prediction probability]; {hits}/{total} predicted exactly"
    path = Path(path)
    path.with_name("predictions.txt").write_text(header + "\n\n" + "\n\n".join(lines) + "\n", encoding="utf-8")
    wrapped = [textwrap.fill(line, 110) for line in lines]
    plt = pyplot()
    height = 0.6 + 0.22 * sum(w.count("\n") + 2 for w in wrapped)
    fig = plt.figure(figsize=(11, height))
    fig.text(0.01, 0.99, header, va="top", ha="left", fontsize=9, weight="bold", family="monospace")
    fig.text(0.01, 0.99 - 0.4 / height, "\n\n".join(wrapped), va="top", ha="left", fontsize=8, family="monospace")
    return save_figure(fig, path, dpi=100)


visualize_text.filename = "masked_predictions.png"  # type: ignore[attr-defined]

__all__ = ["MaskedPrediction", "model_vocab", "predict_masked", "render", "visualize_text"]
