"""The attention kernel of timm blocks, by device, precision and sequence length.

The blocks are timm's (``Attention`` with its ``fused_attn`` switch); :func:`select_attention` sets the kernel
per forward pass from :func:`attention_kernel`. Both kernels compute ``softmax(q k^T / sqrt(d)) v``; they differ in speed and
rounding only:

* ``"sdpa"``: fused ``scaled_dot_product_attention`` (GPUs; fp32 on a CPU; long sequences).
* ``"explicit"``: two batched matmuls and a softmax (timm's non-fused path), for sequences up to
  :data:`CPU_EXPLICIT_ATTENTION_MAX_TOKENS` on a CPU in bf16/fp16, where SDPA's CPU flash kernel is slower
  (MAE's ViT-B encoder on 50 visible tokens and its decoder on 197).

The bound comes from ``benchmarks/speed/attention.py`` (forward + backward of one call at MAE's shapes,
kernels interleaved; ``benchmarks/speed/results/attention_cpu.json``). SDPA on fp32 copies of q, k, v was
measured too and was never the fastest in bf16 (197 tokens: explicit 15.5 ms, fp32 SDPA 19.3, bf16 SDPA 30.3).
Under ``torch.compile`` the kernels stay as they were last set (no module mutation inside a traced region).

Shapes:
    x ``[B, L, D]`` (the sequence the blocks will see)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Kernel = Literal["sdpa", "explicit"]

#: longest sequence for which the explicit path is used on a CPU in bf16/fp16. Forward + backward, bf16, quiet
#: 2-core AVX512 CPU: 8 x 12 heads x 50 tokens x 64: SDPA 6.5 ms vs explicit 1.4 ms; 8 x 16 x 197 x 32: 30.3 vs
#: 15.5 ms; 8 x 16 x 256 x 32: 33.6 vs 29.6 ms; 2 x 16 x 512 x 32: 24.8 vs 30.8 ms (SDPA faster from here on)
CPU_EXPLICIT_ATTENTION_MAX_TOKENS = 256

_HALF = (torch.bfloat16, torch.float16)


def attention_kernel(x: Tensor) -> Kernel:
    """The fastest attention kernel for the sequence ``x`` (``[B, L, D]``) where it runs (module docstring)."""
    if x.device.type != "cpu":
        return "sdpa"
    half = x.dtype in _HALF or (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in _HALF)
    return "explicit" if half and x.shape[1] <= CPU_EXPLICIT_ATTENTION_MAX_TOKENS else "sdpa"


def padding_attn_mask(padding_mask: Tensor | None, num_prefix_tokens: int = 0) -> Tensor | None:
    """The ``attn_mask`` (SDPA's boolean form, ``True``: attend) that hides padded keys from every query.

    Prefix tokens (a class token) are never padding. ``None`` in, ``None`` out.

    Shapes: padding_mask ``[B, N]`` bool (``True`` on padding) -> ``[B, 1, 1, P + N]``
    """
    if padding_mask is None:
        return None
    keep = ~padding_mask.bool()
    if num_prefix_tokens:
        keep = torch.cat([keep.new_ones(keep.shape[0], num_prefix_tokens), keep], dim=1)
    return keep[:, None, None, :]


def select_attention(blocks: nn.ModuleList, x: Tensor) -> None:
    """Point every timm block's attention (its ``fused_attn`` switch) at :func:`attention_kernel`'s choice for
    the sequence ``x``."""
    if torch.compiler.is_compiling():
        return
    kernel = attention_kernel(x)
    for blk in blocks:
        attn = getattr(blk, "attn", None)
        if attn is not None and hasattr(attn, "fused_attn"):  # timm's switch: SDPA or the explicit path
            attn.fused_attn = kernel != "explicit"


__all__ = ["CPU_EXPLICIT_ATTENTION_MAX_TOKENS", "Kernel", "attention_kernel", "padding_attn_mask", "select_attention"]
