"""Transformer encoder over (visible) tokens, built from timm's ``Block`` (attention kernel chosen per
device and precision by :mod:`maezoo.core.attention`).

Parameter names follow the official MAE (``cls_token``, ``blocks.N``, ``norm``) so that published
checkpoints map onto it with a prefix change only.

A ``context["padding_mask"]`` (``[B, N]`` bool, variable-length batches) hides the padded keys from attention.

Shapes:
    forward(tokens ``[B, N, D]``) -> ``[B, P + N, D]`` where ``P = num_prefix_tokens`` (1 with a class token).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from maezoo.core.attention import padding_attn_mask, select_attention
from maezoo.registry import register


def init_mae_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears with zero bias, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register("encoder", "vit")
class ViTEncoder(nn.Module):
    """A stack of pre-norm transformer blocks with an optional class token.

    ``blocks`` is a plain ``nn.ModuleList`` so that layer-wise learning-rate decay and partial
    fine-tuning can address block ``i`` directly.
    """

    def __init__(
        self,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        cls_token: bool = True,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"encoder dim {dim} must divide by num_heads {num_heads}")
        self.dim, self.depth = dim, depth
        self.num_prefix_tokens = 1 if cls_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        # stochastic depth rising linearly to ``drop_path`` (python floats: constructible on the meta device)
        dpr = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i], norm_layer=_norm)
            for i in range(depth)
        )
        self.norm = _norm(dim)
        init_mae_weights(self)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, tokens: Tensor, context: dict[str, Any] | None = None) -> Tensor:
        x = tokens
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        select_attention(self.blocks, x)
        attn_mask = padding_attn_mask((context or {}).get("padding_mask"), self.num_prefix_tokens)
        for blk in self.blocks:
            x = blk(x) if attn_mask is None else blk(x, attn_mask=attn_mask)
        return self.norm(x)


def _norm(dim: int, **factory_kwargs: Any) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6, **factory_kwargs)
