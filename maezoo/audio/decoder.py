"""Audio-MAE's local decoder: shifted-window attention over the (time, frequency) token grid.

Like MAE's decoder it projects the latent, puts mask tokens at the hidden positions, restores grid order and
adds fixed 2-D sin-cos positions; its blocks are timm's ``SwinTransformerBlock`` with window ``(4, 4)`` and a
``(2, 0)`` shift (time only) on every second block, as in Audio-MAE. Unlike the official code (which fixes the
feature size to AudioSet's 64 x 8 grid), the grid comes from each batch: windows are laid out on it at run
time (timm's ``always_partition`` + ``dynamic_mask``), so 128-frame and 1,024-frame inputs both work. A grid
that does not divide by the window is zero-padded to whole windows, as timm does. Prefix (class) tokens are
not decoded.

Parameter names follow the global decoder (``embed``, ``mask_token``, ``blocks``, ``norm``, ``pred``).

Shapes:
    latent ``[B, P + N_vis, D_enc]`` (drop) or ``[B, P + N, D_enc]`` (replace) -> ``[B, N, out_dim]``
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.swin_transformer import SwinTransformerBlock
from torch import Tensor, nn

from maezoo.audio.tokenizer import _pair
from maezoo.core.decoder import TransformerDecoder
from maezoo.core.encoder import _norm, init_mae_weights
from maezoo.core.masking import Mask, unshuffle
from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.registry import register


@register("decoder", "swin_local")
class LocalDecoder(TransformerDecoder):
    """Shifted-window decoder (Audio-MAE ``decoder_mode=1``), any 2-D grid.

    Args:
        in_dim, out_dim, dim, depth, num_heads, mlp_ratio, num_prefix_tokens, remask: as :class:`TransformerDecoder`.
        window: attention window on the ``(time, frequency)`` grid (Audio-MAE: ``(4, 4)``).
        shift: cyclic shift of every second block (Audio-MAE: ``(2, 0)``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_prefix_tokens: int = 1,
        remask: bool = True,
        window: int | tuple[int, int] = (4, 4),
        shift: int | tuple[int, int] = (2, 0),
    ) -> None:
        super().__init__(in_dim, out_dim, dim=dim, depth=0, num_heads=num_heads, mlp_ratio=mlp_ratio,
                         num_prefix_tokens=num_prefix_tokens, remask=remask)
        self.window, self.shift = _pair(window), _pair(shift)
        if any(s >= w for s, w in zip(self.shift, self.window)) or min(self.shift) < 0 or min(self.window) < 1:
            raise ValueError(f"shift {self.shift} must be >= 0 and smaller than the window {self.window} on each axis")
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, self.window, num_heads, window_size=self.window,
                                 shift_size=self.shift if i % 2 else 0,  # type: ignore[arg-type]
                                 always_partition=True, dynamic_mask=True, mlp_ratio=mlp_ratio, norm_layer=_norm)
            for i in range(depth))
        init_mae_weights(self.blocks)

    def forward(self, latent: Tensor, mask: Mask, grid: tuple[int, ...], context: dict[str, Any] | None = None) -> Tensor:
        if len(grid) != 2:
            raise ValueError(f"the local (shifted-window) decoder needs a 2-D (time, frequency) grid, got {tuple(grid)}")
        if mask.ids_target is not None:
            raise ValueError("the local decoder predicts the whole grid; use the transformer decoder for decoder masking")
        x = self.embed(latent)[:, self.num_prefix_tokens:]
        n = mask.mask.shape[1]
        if x.shape[1] not in (mask.num_visible, n):
            raise ValueError(f"decoder got {x.shape[1]} latent tokens after {self.num_prefix_tokens} prefix token(s); "
                             f"expected {mask.num_visible} (drop mode) or {n} (replace mode) for grid {tuple(grid)}")
        if x.shape[1] == mask.num_visible and mask.num_visible != n:
            x = unshuffle(x, mask, self.mask_token.view(-1))
        elif self.remask:
            x = torch.where(mask.mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = x + sincos_pos_embed(x.shape[-1], grid, x.device, x.dtype)
        b, _, c = x.shape
        x = x.reshape(b, grid[0], grid[1], c)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x.reshape(b, n, c)))
