"""MAE's light decoder: project the latent, put mask tokens where tokens were hidden, restore grid order,
add fixed position embeddings for the token grid and predict each token's target.

Parameter names follow the official MAE's ``decoder_*`` (``embed``, ``mask_token``, ``blocks``, ``norm``,
``pred``).

With decoder masking (``mask.ids_target`` set, VideoMAE V2) the decoder input is the visible tokens
plus mask tokens at the ``K`` selected hidden positions only (the other hidden tokens are left out), and
only those ``K`` are predicted.

Shapes:
    latent: ``[B, P + N_vis, D_enc]`` (drop mode) or ``[B, P + N, D_enc]`` (replace mode)
    returns: ``[B, N, out_dim]``; ``[B, K, out_dim]`` aligned with ``mask.ids_target`` when it is set
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from maezoo.core.attention import select_attention
from maezoo.core.encoder import _norm, init_mae_weights
from maezoo.core.masking import Mask, gather_tokens, unshuffle
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
        embed_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        #: in replace mode, overwrite the hidden tokens' codes with the mask token again (GraphMAE re-mask)
        self.remask = remask
        self.embed = nn.Linear(in_dim, dim, bias=embed_bias)
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
        if mask.ids_target is not None:
            return self._forward_targets(prefix, x, mask, grid)
        if x.shape[1] == mask.num_visible and mask.num_visible != n:
            x = unshuffle(x, mask, self.mask_token.view(-1))
        elif self.remask:
            x = torch.where(mask.mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = x + self.position_embedding(grid, x)
        x = torch.cat([prefix, x], dim=1)
        select_attention(self.blocks, x)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, p:]

    def position_embedding(self, grid: tuple[int, ...], like: Tensor) -> Tensor:
        """``[prod(grid), dim]`` positions added to the decoder's tokens: MAE's fixed sin-cos table (cached on the
        device). Override for another table (the official VideoMAE decoder's 1-D one)."""
        return sincos_pos_embed(like.shape[-1], grid, like.device, like.dtype)

    def _forward_targets(self, prefix: Tensor, x: Tensor, mask: Mask, grid: tuple[int, ...]) -> Tensor:
        """VideoMAE V2: decode visible tokens + mask tokens at ``mask.ids_target``; predict those ``K`` only.

        Shapes:
            prefix: ``[B, P, dim]``; x: ``[B, N_vis, dim]`` (drop) or ``[B, N, dim]`` (replace)
            returns: ``[B, K, out_dim]``
        """
        n, ids_t = mask.mask.shape[1], mask.ids_target
        pe = self.position_embedding(grid, x)  # [N, dim]
        vis = gather_tokens(x, mask.ids_keep) if x.shape[1] == n else x
        if x.shape[1] == n and not self.remask:
            tgt = gather_tokens(x, ids_t)
        else:
            tgt = self.mask_token.to(x.dtype).expand(x.shape[0], ids_t.shape[1], -1)
        seq = torch.cat([prefix, vis + pe[mask.ids_keep], tgt + pe[ids_t]], dim=1)
        select_attention(self.blocks, seq)
        for blk in self.blocks:
            seq = blk(seq)
        return self.pred(self.norm(seq[:, seq.shape[1] - ids_t.shape[1]:]))
