"""Image patches: a strided convolution embeds ``p x p`` patches; fixed 2-D sin-cos positions.

Any channel count and rectangular sizes work; each side must divide by the patch size. The position
embedding is computed for the grid of each batch, so a model pre-trained at one resolution runs at
another without resizing anything.

Shapes:
    x: ``[B, C, H, W]``; grid ``(H/p, W/p)``; tokens ``[B, H*W/p**2, D]``
    patchify(x): ``[B, N, p*p*C]`` in MAE's ``(p, q, c)`` order; unpatchify is its inverse
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.core.tokenizer import Tokenizer, Tokens
from maezoo.registry import register


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@register("tokenizer", "image")
class PatchTokenizer(Tokenizer):
    batch_mixup = True  # image batches [B, C, H, W]: timm's Mixup/CutMix apply

    def __init__(
        self,
        embed_dim: int = 768,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        img_size: int | tuple[int, int] | None = 224,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if embed_dim % 4:
            raise ValueError(f"image tokenizer needs embed_dim divisible by 4 (2-D sin-cos positions), got {embed_dim}")
        self.patch_size = _pair(patch_size)
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.img_size = _pair(img_size) if img_size is not None else None
        if self.img_size is not None:
            self._check_size(*self.img_size)
        self.target_dim = self.patch_size[0] * self.patch_size[1] * in_chans
        self.check_finite = check_finite
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        w = self.proj.weight.data  # MAE: initialise like a linear layer on the flattened patch
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.proj.bias)

    def _check_size(self, h: int, w: int) -> None:
        ph, pw = self.patch_size
        if h < ph or w < pw:
            raise ValueError(f"image size {h}x{w} is smaller than one {ph}x{pw} patch; use larger images or patches")
        if h % ph or w % pw:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {ph}x{pw}; resize or crop the images "
                f"to a multiple of the patch size (e.g. {h - h % ph or ph}x{w - w % pw or pw})"
            )

    def validate(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"image tokenizer expects a [B, C, H, W] float tensor, got {shape}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"image has {x.shape[1]} channel(s) but the tokenizer was built for in_chans={self.in_chans}; "
                "convert the images (e.g. grayscale->RGB) or build the model with the matching in_chans"
            )
        self._check_size(x.shape[2], x.shape[3])
        if not x.is_floating_point():
            raise ValueError(f"image batch must be floating point (normalised pixels), got {x.dtype}")
        if self.check_finite and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
            raise ValueError("image batch contains NaN or infinite pixels; check the data pipeline or normalisation")

    def grid(self, x: Tensor) -> tuple[int, int]:
        return (x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1])

    def forward(self, x: Tensor) -> Tokens:
        grid = self.grid(x)
        t = self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]
        pos = sincos_pos_embed(self.embed_dim, grid, t.device, t.dtype)  # cached on the device
        return Tokens(t + pos, grid, {"pos_embed": pos})

    def patchify(self, x: Tensor) -> Tensor:
        ph, pw = self.patch_size
        return rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=ph, q=pw)

    def unpatchify(self, patches: Tensor, grid: tuple[int, int]) -> Tensor:
        ph, pw = self.patch_size
        return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=grid[0], w=grid[1], p=ph, q=pw)

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Random images of a 2 x 2 patch grid (the smallest size every builder accepts)."""
        ph, pw = self.patch_size
        return torch.randn(batch_size, self.in_chans, 2 * ph, 2 * pw)
