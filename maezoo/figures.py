"""Figure helpers every modality's visualiser may use (no modality imports).

``label_columns`` writes a header row naming each column of a grid figure (masked input, reconstruction,
original), so a reader does not have to guess what each column shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the column names of a reconstruction figure, left to right
RECONSTRUCTION_COLUMNS = ("masked input", "reconstruction", "original")


def label_columns(path: str | Path, labels: Sequence[str], height: int = 18) -> Path:
    """Add a white header row above the PNG at ``path`` with ``labels`` centred over equal-width columns,
    repeated when the image holds several groups of ``len(labels)`` columns."""
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    img = Image.open(path).convert("RGB")
    w, h = img.size
    out = Image.new("RGB", (w, h + height), "white")
    out.paste(img, (0, height))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    n = len(labels)
    col_w = w / n
    for i, text in enumerate(labels):
        box = draw.textbbox((0, 0), text, font=font)
        tw, th = box[2] - box[0], box[3] - box[1]
        x = int(i * col_w + (col_w - tw) / 2)
        draw.text((max(0, x), max(0, (height - th) // 2)), text, fill="black", font=font)
    out.save(path)
    return path


def pyplot():
    """matplotlib's ``pyplot`` on the non-interactive Agg backend (figures are written to files, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def visualizer_key(model: Any) -> str | None:
    """The registered visualizer for ``model``'s figure: the one its tokenizer names (``tokenizer.visualizer``,
    e.g. an M3AE model's ``"image+text"``), else its tokenizer's registered name, else the tokenizer's modality."""
    from maezoo.registry import name_of

    tok = getattr(model, "tokenizer", None)
    named = getattr(tok, "visualizer", None)
    if isinstance(named, str) and named:
        return named
    return name_of("tokenizer", type(tok)) or getattr(tok, "modality", None)
