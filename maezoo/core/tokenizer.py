"""The tokenizer interface every modality implements.

A tokenizer turns a raw batch into tokens on a grid (with position information added) and defines
the per-token target values (``patchify``) that the decoder reconstructs. Everything modality-specific
lives behind it; the core only sees :class:`Tokens`.

Hooks with defaults (override when the default does not hold):
    * :meth:`Tokenizer.token_batch_size`: rows of the token batch. Channel-independent tokenizers fold
      channels into the batch (``[B, C, L] -> [B * C, N, D]``), so masks, losses and ``encode`` features
      are per token-batch row, not per input sample.
    * :meth:`Tokenizer.mask_grid`: the grid masks are drawn on (ConvMAE: coarser than the token grid).
    * :meth:`Tokenizer.inverse`: undo a per-sample normalisation (RevIN) on predictions or targets,
      given the context the tokenizer returned.
The input may be anything the tokenizer accepts (a tensor, a PyG batch, a dict of views/modalities);
the core never assumes a tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn


@dataclass
class Tokens:
    """A tokenized batch.

    Shapes:
        tokens: ``[B', N, D]`` embedded tokens, position information already added. ``B'`` is the token
            batch: the input's batch size, or e.g. ``B * C`` for a channel-independent tokenizer.
        grid: the token grid, ``prod(grid) == N`` (row-major).
        mask_grid: the grid masks, targets (``patchify``) and the decoder live on; defaults to ``grid``.
            A hierarchical (ConvMAE) tokenizer reports its encoder's coarsest grid here; the encoder must
            then declare ``consumes = "mask"`` and receives the ``[B', prod(mask_grid)]`` mask.
        context: extra inputs an encoder/decoder may need (``edge_index`` for graphs, a modality id ...).
            Keys the core reads:
            ``pos_embed`` (optional, ``[N, D]`` or ``[B', N, D]``): the position embedding already added to
            ``tokens``; replace mode adds it to the mask token so hidden tokens keep their position.
            ``segment_ids`` (``[N]`` long) and ``num_segments`` (int): several samples packed in one row
            (a PyG batch of graphs); ``encode(pool="mean"|"max"|"sum")`` pools per segment.
            The whole context is returned in ``MAEOutput.context`` (e.g. RevIN statistics for
            :meth:`Tokenizer.inverse`).
    """

    tokens: Tensor
    grid: tuple[int, ...]
    context: dict[str, Any] = field(default_factory=dict)
    mask_grid: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.grid = tuple(int(g) for g in self.grid)
        self.mask_grid = self.grid if self.mask_grid is None else tuple(int(g) for g in self.mask_grid)

    @property
    def batch_size(self) -> int:
        """Rows of the token batch ``B'``."""
        return int(self.tokens.shape[0])

    @property
    def num_mask_tokens(self) -> int:
        """Positions a mask covers, ``prod(mask_grid)``."""
        return math.prod(self.mask_grid)  # type: ignore[arg-type]


class Tokenizer(nn.Module):
    """Base class: subclasses set ``embed_dim`` and ``target_dim`` and implement the four methods."""

    embed_dim: int
    #: values per token in the reconstruction target (``patch**2 * C`` for images)
    target_dim: int
    #: fine-tuning may mix whole inputs of a batch and cut boxes from their last two dimensions (timm's
    #: Mixup/CutMix, written for image batches ``[B, C, H, W]``); image tokenizers set it
    batch_mixup: bool = False

    def validate(self, x: Any) -> None:
        """Raise ``ValueError`` naming the problem and the fix when ``x`` is not a valid batch."""

    def grid(self, x: Any) -> tuple[int, ...]:
        """Token grid of a batch (without embedding it)."""
        raise NotImplementedError

    def forward(self, x: Any) -> Tokens:
        raise NotImplementedError

    def patchify(self, x: Any) -> Tensor:
        """Raw per-token values ``[B', prod(mask_grid), target_dim]`` in the order of the mask grid (the token
        order when ``mask_grid == grid``)."""
        raise NotImplementedError

    def mask_context(self, x: Any) -> dict[str, Tensor]:
        """What a masking strategy reads of the batch ``x``, without embedding it: ``padding_mask`` (``[B', N]``
        bool, ``True`` on padding), ``unmaskable`` and ``word_ids`` for variable-length inputs, as ``forward`` puts
        them in ``Tokens.context``; ``{}`` (the default) for inputs whose every token may be hidden."""
        return {}

    def mask_grid(self, x: Any) -> tuple[int, ...]:
        """Grid masks are drawn on (default: :meth:`grid`); must equal ``Tokens.mask_grid`` of ``self(x)``."""
        return self.grid(x)

    def token_batch_size(self, x: Any) -> int:
        """Rows ``B'`` of the token batch of ``x``; must equal ``self(x).tokens.shape[0]``.

        Default: a tensor's first dimension; for any other input (a PyG batch, a dict of views) the
        tokenizer is run once (under ``no_grad``) and its token batch counted. Override when it is
        cheaper to know (channel independence: ``x.shape[0] * x.shape[1]``).
        """
        if isinstance(x, Tensor):
            return int(x.shape[0])
        import torch

        with torch.no_grad():
            return int(self(x).tokens.shape[0])

    def inverse(self, values: Tensor, context: dict[str, Any]) -> Tensor:
        """Map predictions or targets back to raw scale with the context of the same batch (default: identity).

        RevIN-style tokenizers de-normalise here with the per-row statistics they put in the context.

        Shapes:
            values: ``[B', K, P]`` (``K = N`` for the whole grid or the decoder's target subset) -> same shape
        """
        return values

    def unpatchify(self, patches: Tensor, grid: tuple[int, ...]) -> Any:
        """Inverse of :meth:`patchify`."""
        raise NotImplementedError

    def example_input(self, batch_size: int = 2) -> Any:
        """Optional: a small valid random batch for smoke tests (``tests/core/test_registry.py`` runs every
        registered model on its tokenizer's example). Keep it tiny; raise ``NotImplementedError`` if absent."""
        raise NotImplementedError
