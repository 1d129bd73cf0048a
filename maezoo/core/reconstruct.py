"""A masked autoencoder's reconstruction of a batch in patch units: what every reconstruction figure draws.

:func:`reconstruct` runs the model in eval mode on ``x`` (one mask, from ``mask`` or ``generator``), maps the
decoder's prediction of the target back to the units of ``tokenizer.patchify(x)`` with the target's inverse
(:func:`~maezoo.core.targets.invert_target`: for a normalised target, each original patch's own mean and
scale, as the MAE and VideoMAE demos do), and pastes a decoder-masking subset (VideoMAE V2's running cell)
back into the full grid. :class:`Reconstruction` then gives the figure's panels: the original patches, the
masked input (:meth:`Reconstruction.masked`) and the reconstruction with the visible patches pasted back
(:attr:`Reconstruction.pasted`); ``tokenizer.unpatchify(..., rec.grid)`` turns each into input space.

Shapes:
    x -> patches, prediction, pasted ``[B', N, P]``; hidden ``[B', N]`` bool (``B'`` the token batch,
    ``N = prod(grid)`` on the mask grid, ``P = tokenizer.target_dim``)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from maezoo.core.mae import MaskedAutoencoder
from maezoo.core.masking import Mask, gather_tokens
from maezoo.core.targets import invert_target


@dataclass
class Reconstruction:
    """One batch's original patches, the prediction in their units and which tokens the model reconstructed.

    Shapes:
        patches: ``[B', N, P]`` the original, ``tokenizer.patchify(x)`` (float)
        prediction: ``[B', N, P]`` the decoder's prediction in patch units; under decoder masking only the
            ``hidden`` rows are predicted and every other row holds the original patch
        hidden: ``[B', N]`` bool, the tokens whose prediction the figure shows (``mask.target_mask``: the
            hidden tokens, or the decoder's subset of them under decoder masking)
        mask: the :class:`~maezoo.core.masking.Mask` drawn (``mask.mask``: every token hidden from the encoder)
        grid: the mask grid the rows live on (pass it to ``tokenizer.unpatchify``)
        context: the tokenizer context of the batch (e.g. RevIN statistics for ``tokenizer.inverse``)
    """

    patches: Tensor
    prediction: Tensor
    hidden: Tensor
    mask: Mask
    grid: tuple[int, ...]
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def pasted(self) -> Tensor:
        """``[B', N, P]``: the prediction on the hidden tokens, the original patches on the others."""
        return torch.where(self.hidden.unsqueeze(-1), self.prediction, self.patches)

    def masked(self, fill: float = 0.0) -> Tensor:
        """``[B', N, P]``: the original patches with every value of a hidden token set to ``fill`` (grey, NaN)."""
        return torch.where(self.hidden.unsqueeze(-1), torch.full_like(self.patches, fill), self.patches)

    def hidden_values(self) -> Tensor:
        """``[B', N, P]`` bool: :attr:`hidden` spread over each token's values (unpatchify it for a pixel mask)."""
        return self.hidden.unsqueeze(-1).expand_as(self.patches)


@torch.no_grad()
def reconstruct(
    model: MaskedAutoencoder,
    x: Any,
    *,
    mask: Mask | None = None,
    generator: torch.Generator | None = None,
    decoder_masking: bool = True,
) -> Reconstruction:
    """Run ``model`` in eval mode on ``x`` and return its reconstruction in patch units (module docstring).

    Args:
        mask: a fixed mask for the batch (e.g. ``model.sample_mask(x)``); else one is drawn from ``generator``.
        decoder_masking: ``False`` switches the model's decoder masking off for this call, so the decoder
            reconstructs every hidden token (the full figure); ``True`` keeps it and pastes its subset.

    The model's training mode and decoder masking are restored afterwards.

    Shapes:
        x: the tokenizer's input -> :class:`Reconstruction` with ``[B', N, P]`` patches/prediction
    """
    was_training, dec_masking = model.training, model.decoder_masking
    if not decoder_masking and mask is not None:
        mask = mask.with_targets(None)
    model.eval()
    try:
        if not decoder_masking:
            model.decoder_masking = None
        out = model(x, mask=mask, generator=generator)
    finally:
        model.train(was_training)
        model.decoder_masking = dec_masking
    patches = model.tokenizer.patchify(x).float()
    pred, ids = out.pred.float(), out.mask.ids_target
    if ids is None:
        prediction = invert_target(model.target_fn, pred, patches)
    else:  # decoder masking: the prediction stands for rows ids_target; paste them into the original grid
        rows = invert_target(model.target_fn, pred, gather_tokens(patches, ids))
        prediction = patches.scatter(1, ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]), rows)
    return Reconstruction(patches=patches, prediction=prediction, hidden=out.mask.target_mask, mask=out.mask,
                          grid=tuple(out.grid), context=dict(out.context))


__all__ = ["Reconstruction", "reconstruct"]
