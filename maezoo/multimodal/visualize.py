"""M3AE's reconstruction figure: per image-caption pair, the image with its hidden patches greyed, the reconstruction
(predicted pixels at hidden patches, the input elsewhere), the original, the caption with its hidden word pieces in
brackets and the caption with the model's top prediction in those brackets.

One mask per batch, drawn once with a seeded generator (``model.sample_mask``) and passed to ``model(x, mask=...)``
in eval mode, so both modalities' panels show the same draw. The image prediction is in the units of its target (MAE's
per-patch normalised pixels): :func:`~maezoo.core.targets.invert_target` maps it back with each original patch's
mean and scale (as the MAE demo does, so only a patch's structure, not its brightness, is the model's guess), and
the dataset's normalisation is undone for display. Word pieces are decoded with the model's vocabulary
(``tokenizer.json`` kept by its text part), else the dataset's ``vocab_file``; ``##`` pieces join their word.

Registered as the ``image+text`` visualiser (a joint tokenizer's ``modality``); a model built with one of the two
modalities gets only its columns. ``caption_predictions.txt`` beside the figure holds the caption strings.

Shapes:
    x ``{"image": [B, 3, H, W], "text": [B, L]}`` -> :class:`PairFigure` with images ``[B, 3, 3, H, W]`` (masked,
    reconstruction, original in [0, 1]) and ``B`` :class:`CaptionRow` s
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from maezoo.core.masking import Mask, gather_tokens
from maezoo.core.multimodal import MultiModalAutoencoder, MultiModalOutput
from maezoo.core.reconstruct import Reconstruction
from maezoo.core.targets import invert_target
from maezoo.figures import pyplot, save_figure
from maezoo.registry import get, register

CONTINUATION = "##"
IMAGE_COLUMNS = ("masked input", "reconstruction", "original")
TEXT_COLUMNS = ("caption, hidden pieces [bracketed]", "top prediction at each [hidden piece]")


# -- captions (pure) ---------------------------------------------------------------------------------------------
def is_continuation(piece: str) -> bool:
    return piece.startswith(CONTINUATION) and len(piece) > len(CONTINUATION)


def join_pieces(pieces: Sequence[str], marked: Collection[int] = (), joins: Sequence[bool] | None = None) -> str:
    """Word pieces as text: a ``##`` piece joins the word before it, a piece at a ``marked`` position is bracketed.

    ``joins``: per position, whether it joins the word before it (default: the pieces' own ``##``); a ``##`` piece
    at a position that does not join keeps its ``##`` (a prediction of a word's continuation where a word starts).
    ``join_pieces(["a", "dog", "##s"], {2})`` -> ``"a dog[s]"``.
    """
    joins = [is_continuation(p) for p in pieces] if joins is None else list(joins)
    if len(joins) != len(pieces):
        raise ValueError(f"joins has {len(joins)} flags for {len(pieces)} pieces")
    out = ""
    for i, piece in enumerate(pieces):
        text = piece[len(CONTINUATION):] if joins[i] and is_continuation(piece) else piece
        if i in marked:
            text = f"[{text}]"
        out += text if joins[i] or not out else " " + text
    return out


def caption_strings(pieces: Sequence[str], predicted: Mapping[int, str]) -> tuple[str, str]:
    """``(masked, filled)``: the caption with the hidden pieces (the keys of ``predicted``, positions in
    ``pieces``) bracketed, and the same with each replaced by its predicted piece; words split as in the caption."""
    bad = sorted(i for i in predicted if not 0 <= i < len(pieces))
    if bad:
        raise ValueError(f"hidden positions {bad} lie outside the caption's {len(pieces)} pieces")
    joins = [is_continuation(p) for p in pieces]
    filled = [predicted.get(i, p) for i, p in enumerate(pieces)]
    return join_pieces(pieces, set(predicted)), join_pieces(filled, set(predicted), joins)


@dataclass
class CaptionRow:
    """One caption: its pieces (after ``[CLS]``, without ``[SEP]`` and padding), the hidden positions with the top
    prediction at each, and the two strings the figure prints."""

    pieces: list[str]
    predicted: dict[int, str]
    masked: str
    filled: str

    @property
    def hits(self) -> int:
        return sum(self.pieces[i] == p for i, p in self.predicted.items())


@dataclass
class PairFigure:
    """What the figure draws. Shapes: images ``[B, 3, C, H, W]`` (masked, reconstruction, original; ``None`` without
    an image modality), captions ``B`` rows (``None`` without a text modality)."""

    images: Tensor | None
    captions: list[CaptionRow] | None
    masks: dict[str, Mask]


# -- the model's panels ------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_pairs(model: MultiModalAutoencoder, x: Mapping[str, Tensor], vocab: Any = None,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  generator: torch.Generator | None = None) -> PairFigure:
    """Mask ``x`` once (from ``generator``), run the model in eval mode with that mask and return the panels.

    ``vocab``: a word-piece vocabulary (``pieces(ids)``), needed when the model has a text modality.
    """
    if not isinstance(model, MultiModalAutoencoder):
        raise ValueError(f"the image+text figure draws a several-modality model (m3ae, multimae), got "
                         f"{type(model).__name__}; use the visualiser of that model's tokenizer")
    names = model.tokenizer.names
    if "text" in names and vocab is None:
        raise ValueError("the model has a text modality but no vocabulary was given to decode its pieces")
    was = model.training
    model.eval()
    try:
        masks = model.sample_mask(x, generator=generator)
        out = model(x, mask=masks)
    finally:
        model.train(was)
    images = image_panels(model, x["image"], out, mean, std) if "image" in names else None
    captions = caption_rows(model, x["text"], out, vocab) if "text" in names else None
    return PairFigure(images, captions, dict(out.mask))


def image_panels(model: MultiModalAutoencoder, images: Tensor, out: MultiModalOutput,
                 mean: Sequence[float] | None, std: Sequence[float] | None) -> Tensor:
    """``[B, C, H, W]`` normalised images -> ``[B, 3, C, H, W]`` masked / reconstruction / original in [0, 1]."""
    tok = model.tokenizer.parts["image"]
    m, grid = out.mask["image"], tuple(out.grid["image"])
    patches = tok.patchify(images).float()  # [B, N, P]
    ids = m.ids_masked
    hidden_rows = gather_tokens(patches, ids)
    rows = invert_target(model.targets["image"][1], out.pred["image"].float(), hidden_rows)
    if m.masked_valid is not None:  # filler slots name visible patches: keep those as they are
        rows = torch.where(m.masked_valid.unsqueeze(-1), rows, hidden_rows)
    prediction = patches.scatter(1, ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]), rows)
    rec = Reconstruction(patches=patches, prediction=prediction, hidden=m.mask, mask=m, grid=grid)

    def to_pixels(v: Tensor) -> Tensor:
        v = tok.unpatchify(v, grid)
        if mean is not None and std is not None:
            v = v * torch.tensor(std, device=v.device).view(1, -1, 1, 1) + torch.tensor(mean, device=v.device).view(1, -1, 1, 1)
        return v.clamp(0, 1)

    masked = torch.where(tok.unpatchify(rec.hidden_values().float(), grid) > 0, 0.5, to_pixels(rec.masked(0.0)))
    return torch.stack([masked, to_pixels(rec.pasted), to_pixels(patches)], dim=1)


def caption_rows(model: MultiModalAutoencoder, ids: Tensor, out: MultiModalOutput, vocab: Any) -> list[CaptionRow]:
    """Per caption its pieces and the argmax of the text logits at each hidden position (:class:`CaptionRow`)."""
    tok = model.tokenizer.parts["text"]
    m = out.mask["text"]
    top = out.pred["text"].argmax(-1)  # [B, M]
    valid = m.masked_valid if m.masked_valid is not None else torch.ones_like(top, dtype=torch.bool)
    drop = {int(tok.pad_id), int(tok.sep_id)}
    rows = []
    for b in range(ids.shape[0]):
        body = ids[b, 1:].tolist()  # the text's mask grid: the ids after [CLS]
        keep = [i for i, v in enumerate(body) if v not in drop]
        at = {pos: k for k, pos in enumerate(keep)}
        pieces = vocab.pieces([body[i] for i in keep])
        hidden = [(int(p), int(t)) for p, t, v in zip(m.ids_masked[b].tolist(), top[b].tolist(), valid[b].tolist())
                  if v and int(p) in at]
        predicted = dict(zip((at[p] for p, _ in hidden), vocab.pieces([t for _, t in hidden]), strict=True))
        masked, filled = caption_strings(pieces, predicted)
        rows.append(CaptionRow(pieces, predicted, masked, filled))
    return rows


# -- inputs ------------------------------------------------------------------------------------------------------
def figure_vocab(model: MultiModalAutoencoder, dataset: Any) -> Any:
    """The model's word-piece vocabulary (its text part's ``vocab_json``), else the dataset's ``vocab_file``."""
    vocab_cls = get("vocab", "wordpiece")
    text = getattr(model.tokenizer.parts["text"], "vocab_json", None)
    if isinstance(text, str):
        return vocab_cls.from_json_str(text)
    given = (getattr(dataset, "model_kwargs", None) or {}).get("vocab_file")
    if given:
        return vocab_cls.from_file(given)
    raise ValueError("cannot decode the captions: the model carries no vocabulary (built without vocab_file) and "
                     "the dataset names no vocab_file; build the model with the dataset's vocab_file")


def batch_of(model: MultiModalAutoencoder, dataset: Any, num: int) -> dict[str, Tensor]:
    """The first ``num`` samples of a paired dataset as a batch (its ``collate_fn``, else stacked and padded)."""
    samples = [dataset[i] for i in range(min(num, len(dataset)))]
    if not samples:
        raise ValueError("the dataset is empty: nothing to draw")
    collate = getattr(dataset, "collate_fn", None)
    if callable(collate):
        x = collate(samples)[0]
    else:
        x = {k: [s[0][k] for s in samples] for k in samples[0][0]}
        x = {k: torch.nn.utils.rnn.pad_sequence(v, batch_first=True, padding_value=_pad_id(model))
             if k == "text" else torch.stack(v) for k, v in x.items()}
    if not isinstance(x, Mapping):
        raise ValueError(f"the image+text figure takes a paired dataset ({{'image': ..., 'text': ...}} samples), got "
                         f"{type(x).__name__} samples")
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in x.items() if k in model.tokenizer.names}


def _pad_id(model: MultiModalAutoencoder) -> int:
    parts = model.tokenizer.parts
    return int(parts["text"].pad_id) if "text" in parts else 0


# -- drawing -----------------------------------------------------------------------------------------------------
def draw_figure(fig_data: PairFigure, path: str | Path) -> Path:
    """One row per sample: the image panels (when present), then the two caption strings (when present)."""
    images, captions = fig_data.images, fig_data.captions
    n = len(images) if images is not None else len(captions or [])
    n_img = 3 if images is not None else 0
    plt = pyplot()
    widths = [1.0] * n_img + ([3.2] if captions is not None else [])
    fig, axes = plt.subplots(n, len(widths), figsize=(1.3 * n_img + (6.8 if captions else 0), 1.35 * n + 0.3),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)
    for r in range(n):
        for c in range(n_img):
            ax = axes[r][c]
            ax.imshow(images[r, c].permute(1, 2, 0).squeeze(-1).cpu().numpy(), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(IMAGE_COLUMNS[c], fontsize=8)
        if captions is not None:
            ax = axes[r][n_img]
            ax.axis("off")
            row = captions[r]
            body = (f"{textwrap.fill(row.masked, 64)}\n→ {textwrap.fill(row.filled, 62)}\n"
                    f"({row.hits}/{len(row.predicted)} hidden pieces exact)")
            ax.text(0.0, 0.5, body, va="center", ha="left", fontsize=7.5, family="monospace", transform=ax.transAxes)
            if r == 0:
                ax.set_title(" | ".join(TEXT_COLUMNS), fontsize=8, loc="left")
    return save_figure(fig, path, dpi=110)


@register("visualizer", "image+text")
def visualize_pairs(model: MultiModalAutoencoder, dataset: Any, path: str | Path, num: int = 8, seed: int = 0) -> Path:
    """The figure for the first ``num`` pairs of ``dataset``; ``caption_predictions.txt`` beside it."""
    x = batch_of(model, dataset, num)
    vocab = figure_vocab(model, dataset) if "text" in model.tokenizer.names else None
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    data = predict_pairs(model, x, vocab, getattr(dataset, "mean", None), getattr(dataset, "std", None), g)
    path = Path(path)
    if data.captions is not None:
        hits = sum(r.hits for r in data.captions)
        total = sum(len(r.predicted) for r in data.captions)
        lines = [f"{r.masked}\n-> {r.filled}" for r in data.captions]
        header = f"hidden pieces [bracketed], then the top prediction in each; {hits}/{total} predicted exactly"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name("caption_predictions.txt").write_text(header + "\n\n" + "\n\n".join(lines) + "\n",
                                                              encoding="utf-8")
    return draw_figure(data, path)


visualize_pairs.filename = "reconstructions.png"  # type: ignore[attr-defined]

__all__ = ["CaptionRow", "PairFigure", "batch_of", "caption_rows", "caption_strings", "draw_figure", "figure_vocab",
           "image_panels", "join_pieces", "predict_pairs", "visualize_pairs"]
