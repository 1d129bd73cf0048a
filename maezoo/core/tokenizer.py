"""The tokenizer interface every modality implements.

A tokenizer turns a raw batch into tokens on a grid (with position information added) and defines
the per-token target values (``patchify``) that the decoder reconstructs. Everything modality-specific
lives behind it; the core only sees :class:`Tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn


@dataclass
class Tokens:
    """A tokenized batch.

    Shapes:
        tokens: ``[B, N, D]`` embedded tokens, position information already added.
        grid: the token grid, ``prod(grid) == N`` (row-major).
        context: extra inputs an encoder/decoder may need (``edge_index`` for graphs, a modality id ...).
            ``context["pos_embed"]`` (optional, ``[N, D]`` or ``[B, N, D]``): the position embedding already
            added to ``tokens``; replace mode adds it to the mask token so hidden tokens keep their position.
    """

    tokens: Tensor
    grid: tuple[int, ...]
    context: dict[str, Any] = field(default_factory=dict)


class Tokenizer(nn.Module):
    """Base class: subclasses set ``embed_dim`` and ``target_dim`` and implement the four methods."""

    embed_dim: int
    #: values per token in the reconstruction target (``patch**2 * C`` for images)
    target_dim: int

    def validate(self, x: Any) -> None:
        """Raise ``ValueError`` naming the problem and the fix when ``x`` is not a valid batch."""

    def grid(self, x: Any) -> tuple[int, ...]:
        """Token grid of a batch (without embedding it)."""
        raise NotImplementedError

    def forward(self, x: Any) -> Tokens:
        raise NotImplementedError

    def patchify(self, x: Any) -> Tensor:
        """Raw per-token values ``[B, N, target_dim]`` in the same order as the tokens."""
        raise NotImplementedError

    def unpatchify(self, patches: Tensor, grid: tuple[int, ...]) -> Any:
        """Inverse of :meth:`patchify`."""
        raise NotImplementedError

    def example_input(self, batch_size: int = 2) -> Any:
        """Optional: a small valid random batch for smoke tests (``tests/test_registry.py`` runs every
        registered model on its tokenizer's example). Keep it tiny; raise ``NotImplementedError`` if absent."""
        raise NotImplementedError
