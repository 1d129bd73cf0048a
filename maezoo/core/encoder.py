"""Transformer encoder over (visible) tokens, built from timm's ``Block`` (fused SDPA attention).

Parameter names follow the official MAE (``cls_token``, ``blocks.N``, ``norm``) so that published
checkpoints map onto it with a prefix change only.

Shapes:
    forward(tokens ``[B, N, D]``) -> ``[B, P + N, D]`` where ``P = num_prefix_tokens`` (1 with a class token).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

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


#: longest sequence for which timm's explicit attention (two batched matmuls and a softmax) is used instead of
#: fused SDPA on a CPU in bf16/fp16. Forward + backward at ViT-B's encoder shape (8 x 12 heads x 50 tokens x 64)
#: took SDPA's flash kernel 5x (quiet CPU) and 1.4x (loaded CPU, interleaved) the explicit path's time; at the
#: decoder's 197 tokens the gain of a quiet moment (3x) did not hold on a loaded CPU (0.93x), and from 512 tokens
#: on SDPA is faster (benchmarks/speed/README.md, "attention"), hence the bound
CPU_EXPLICIT_ATTENTION_MAX_TOKENS = 128


def prefer_fused_attention(x: Tensor) -> bool:
    """Whether fused SDPA is the faster attention for the sequence ``x`` (``[B, L, D]``) where it runs.

    ``False`` only on a CPU in bf16/fp16 (half inputs or CPU autocast) for ``L`` up to
    :data:`CPU_EXPLICIT_ATTENTION_MAX_TOKENS`; GPUs and fp32 always use SDPA.
    """
    if x.device.type != "cpu" or x.shape[1] > CPU_EXPLICIT_ATTENTION_MAX_TOKENS:
        return True
    half = (torch.bfloat16, torch.float16)
    return not (x.dtype in half or (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in half))


def select_attention(blocks: nn.ModuleList, x: Tensor) -> None:
    """Point every timm block's attention at SDPA or at timm's explicit path, per :func:`prefer_fused_attention`.

    Both compute softmax(q k^T / sqrt(d)) v; the choice changes speed and rounding only. Under
    ``torch.compile`` the blocks are left as they are (no module mutation inside a traced region).
    """
    if torch.compiler.is_compiling():
        return
    fused = prefer_fused_attention(x)
    for blk in blocks:
        attn = getattr(blk, "attn", None)
        if attn is not None and hasattr(attn, "fused_attn"):
            attn.fused_attn = fused


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
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def _norm(dim: int, **factory_kwargs: Any) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6, **factory_kwargs)
