"""MAE's light decoder: project the latent, put mask tokens where tokens were hidden, restore grid order,
add fixed position embeddings for the token grid and predict each token's target.

Parameter names follow the official MAE's ``decoder_*`` (``embed``, ``mask_token``, ``blocks``, ``norm``,
``pred``).

Shapes:
    latent: ``[B, P + N_vis, D_enc]`` (drop mode) or ``[B, P + N, D_enc]`` (replace mode)
    returns: ``[B, N, out_dim]``
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from maezoo.core.encoder import _norm, init_mae_weights
from maezoo.core.masking import Mask, unshuffle
from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.registry import register


@register("decoder", "transformer")
class TransformerDecoder(nn.Module):
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
    ) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        #: in replace mode, overwrite the hidden tokens' codes with the mask token again (GraphMAE re-mask)
        self.remask = remask
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=_norm) for _ in range(depth))
        self.norm = _norm(dim)
        self.pred = nn.Linear(dim, out_dim)
        init_mae_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: Tensor, mask: Mask, grid: tuple[int, ...], context: dict[str, Any] | None = None) -> Tensor:
        x = self.embed(latent)
        p = self.num_prefix_tokens
        prefix, x = x[:, :p], x[:, p:]
        n = mask.mask.shape[1]
        if x.shape[1] not in (mask.num_visible, n):
            raise ValueError(
                f"decoder got {x.shape[1]} latent tokens after {p} prefix token(s); expected {mask.num_visible} "
                f"(visible, drop mode) or {n} (all, replace mode) for grid {tuple(grid)}; check num_prefix_tokens"
            )
        if x.shape[1] == mask.num_visible and mask.num_visible != n:
            x = unshuffle(x, mask, self.mask_token.view(-1))
        elif self.remask:
            x = torch.where(mask.mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = x + sincos_pos_embed(x.shape[-1], grid).to(x.device, x.dtype)
        x = torch.cat([prefix, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, p:]
