"""Multi-head self-attention that picks its kernel by device, precision and sequence length.

:class:`Attention` is timm's ``Attention`` (same parameters and names: ``qkv``, ``proj``, so timm and MAE
checkpoints load unchanged) with a ``kernel`` attribute that :func:`select_attention` sets per forward pass
from :func:`attention_kernel`. Every kernel computes ``softmax(q k^T / sqrt(d)) v``; they differ in speed and
rounding only:

* ``"sdpa"``: fused ``scaled_dot_product_attention`` in the input's dtype (GPUs; fp32 on a CPU; long sequences).
* ``"explicit"``: two batched matmuls and a softmax (timm's non-fused path), for short sequences on a CPU in
  bf16/fp16, where SDPA's CPU flash kernel is several times slower (ViT-B's encoder on 50 visible tokens).
* ``"sdpa_fp32"``: SDPA on q, k, v upcast to fp32 (autocast off inside), the output cast back, for medium
  sequences on a CPU in bf16/fp16: the CPU flash kernel's fp32 path beats both bf16 paths there (MAE's decoder
  on 197 tokens), and it is more exact than either.

The bounds come from ``benchmarks/speed/attention.py`` (forward + backward of one call at MAE's shapes on this
project's CPUs; ``benchmarks/speed/README.md``, "attention"). Under ``torch.compile`` the kernels stay as they
were last set (no module mutation inside a traced region).

Shapes:
    forward(x ``[B, L, D]``) -> ``[B, L, D]``
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import Attention as TimmAttention
from torch import Tensor, nn

Kernel = Literal["sdpa", "explicit", "sdpa_fp32"]

#: longest sequence for which the explicit path is used on a CPU in bf16/fp16 (ViT-B encoder shape
#: 8 x 12 heads x 50 tokens x 64: SDPA's bf16 flash kernel 6.3 ms vs explicit 1.4 ms forward + backward)
CPU_EXPLICIT_ATTENTION_MAX_TOKENS = 128
#: longest sequence for which SDPA runs in fp32 on a CPU in bf16/fp16 (decoder shape 8 x 16 x 197 x 32:
#: bf16 SDPA 26.8 ms, explicit bf16 20.8 ms, fp32 SDPA 16.5 ms; at 512 tokens fp32 and bf16 SDPA are level,
#: at 1,568 bf16 SDPA is faster)
CPU_FP32_ATTENTION_MAX_TOKENS = 512

_HALF = (torch.bfloat16, torch.float16)


def attention_kernel(x: Tensor) -> Kernel:
    """The fastest attention kernel for the sequence ``x`` (``[B, L, D]``) where it runs (module docstring)."""
    if x.device.type != "cpu":
        return "sdpa"
    half = x.dtype in _HALF or (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in _HALF)
    if not half:
        return "sdpa"
    if x.shape[1] <= CPU_EXPLICIT_ATTENTION_MAX_TOKENS:
        return "explicit"
    return "sdpa_fp32" if x.shape[1] <= CPU_FP32_ATTENTION_MAX_TOKENS else "sdpa"


class Attention(TimmAttention):
    """timm's attention with a selectable kernel (``kernel``: ``"sdpa"``, ``"explicit"`` or ``"sdpa_fp32"``).

    :func:`select_attention` sets ``kernel`` and timm's ``fused_attn`` together; masks, causal attention and
    gates take timm's own path.

    Shapes:
        x ``[B, L, D]`` -> ``[B, L, D]``
    """

    kernel: Kernel = "sdpa"

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if self.kernel != "sdpa_fp32" or attn_mask is not None or is_causal or self.gate is not None:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        b, n, _ = x.shape
        qkv = self.qkv(x)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                 dropout_p=self.attn_drop.p if self.training else 0.0)
        out = out.to(qkv.dtype).transpose(1, 2).reshape(b, n, self.attn_dim)
        return self.proj_drop(self.proj(self.norm(out)))


def select_attention(blocks: nn.ModuleList, x: Tensor) -> None:
    """Point every block's :class:`Attention` at :func:`attention_kernel`'s choice for the sequence ``x``.

    Blocks with timm's plain attention get SDPA or the explicit path (``fused_attn``); the fp32 kernel needs
    :class:`Attention` (``Block(..., attn_layer=Attention)``).
    """
    if torch.compiler.is_compiling():
        return
    kernel = attention_kernel(x)
    for blk in blocks:
        attn = getattr(blk, "attn", None)
        if isinstance(attn, Attention):
            attn.kernel = kernel
        if attn is not None and hasattr(attn, "fused_attn"):  # timm's switch: SDPA (also for the fp32 kernel's
            attn.fused_attn = kernel != "explicit"             # fallbacks) or the explicit path


__all__ = ["Attention", "CPU_EXPLICIT_ATTENTION_MAX_TOKENS", "CPU_FP32_ATTENTION_MAX_TOKENS", "Kernel",
           "attention_kernel", "select_attention"]
