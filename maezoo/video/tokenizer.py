"""Video tubelets: a Conv3d with kernel = stride = ``(t, p, p)`` embeds each tubelet (VideoMAE).

Any frame count divisible by ``t``, any frame size divisible by ``p`` and any channel count work. Position
embeddings are fixed sin-cos, computed for the grid of each batch:

* ``pos_embed="3d"`` (default): maezoo's 3-D sin-cos over ``(T, H, W)`` (:func:`maezoo.core.pos_embed.sincos_pos_embed`);
* ``pos_embed="1d"``: the official VideoMAE table over the flattened tokens (``get_sinusoid_encoding_table``,
  sin on even and cos on odd channels), for weight compatibility. With ``pos_grid`` set (the grid the
  weights were trained on) the table is built for that grid and interpolated to the batch's grid in time
  and space (trilinear), as the VideoMAE fine-tuning code does when the input size changes.

``mean``/``std`` are the input normalisation; :meth:`VideoTokenizer.patchify` undoes it, so targets are
pixels on the ``[0, 1]`` scale (VideoMAE normalises its target after undoing the input normalisation).

Shapes:
    x: ``[B, C, T, H, W]``; grid ``(T/t, H/p, W/p)``; tokens ``[B, T*H*W/(t*p*p), D]``
    patchify(x): ``[B, N, t*p*p*C]`` in VideoMAE's ``(p0 p1 p2 c)`` order (channel fastest); unpatchify inverts it
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from maezoo.core.pos_embed import interpolate_pos_embed, sincos_pos_embed
from maezoo.core.tokenizer import Tokenizer, Tokens
from maezoo.registry import register

PosEmbed = Literal["3d", "1d"]


@functools.lru_cache(maxsize=32)
def sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """The official VideoMAE/BEiT 1-D table: ``angle = pos / 10000^(2*(j//2)/dim)``, sin on even ``j``, cos on odd.

    Shapes:
        returns ``[num_positions, dim]`` (cached; treat as read-only)
    """
    pos = torch.arange(num_positions, dtype=torch.float64).view(-1, 1)
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    out = angle.clone()
    out[:, 0::2], out[:, 1::2] = angle[:, 0::2].sin(), angle[:, 1::2].cos()
    return out.float()


@register("tokenizer", "video")
class VideoTokenizer(Tokenizer):
    def __init__(
        self,
        embed_dim: int = 768,
        tubelet_size: int = 2,
        patch_size: int = 16,
        in_chans: int = 3,
        num_frames: int | None = 16,
        img_size: int | None = 224,
        pos_embed: PosEmbed = "3d",
        pos_grid: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        check_finite: bool = True,
    ) -> None:
        """``num_frames``/``img_size`` only check the configuration (``None``: not checked); any valid size runs."""
        super().__init__()
        if int(tubelet_size) < 1 or int(patch_size) < 1:
            raise ValueError(f"tubelet_size and patch_size must be >= 1, got {tubelet_size} and {patch_size}")
        if pos_embed not in ("3d", "1d"):
            raise ValueError(f"pos_embed must be '3d' (maezoo sin-cos) or '1d' (official VideoMAE table), got {pos_embed!r}")
        if int(embed_dim) % 2:
            raise ValueError(f"video tokenizer needs an even embed_dim for sin-cos positions, got {embed_dim}")
        self.embed_dim, self.in_chans = int(embed_dim), int(in_chans)
        self.tubelet_size, self.patch_size = int(tubelet_size), int(patch_size)
        self.pos_embed_kind: PosEmbed = pos_embed
        self.pos_grid = tuple(int(g) for g in pos_grid) if pos_grid is not None else None
        if self.pos_grid is not None and len(self.pos_grid) != 3:
            raise ValueError(f"pos_grid is the (T, H, W) token grid the weights were trained on, got {pos_grid}")
        for name, v in (("mean", mean), ("std", std)):
            if v is not None and len(v) not in (1, self.in_chans):
                raise ValueError(f"{name} needs 1 or in_chans={self.in_chans} values, got {list(v)}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (the input normalisation) or neither")
        self.mean = tuple(float(v) for v in mean) if mean is not None else None
        self.std = tuple(float(v) for v in std) if std is not None else None
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {list(self.std)}")
        self.check_finite = check_finite
        self.target_dim = self.tubelet_size * self.patch_size**2 * self.in_chans
        if num_frames is not None or img_size is not None:
            self._check_size(int(num_frames or self.tubelet_size), int(img_size or self.patch_size),
                             int(img_size or self.patch_size))
        kernel = (self.tubelet_size, self.patch_size, self.patch_size)
        self.proj = nn.Conv3d(self.in_chans, self.embed_dim, kernel_size=kernel, stride=kernel)
        w = self.proj.weight.data  # as MAE: initialise like a linear layer on the flattened tubelet
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.proj.bias)

    # -- checks ---------------------------------------------------------------------------------------------
    def _check_size(self, t: int, h: int, w: int) -> None:
        tt, p = self.tubelet_size, self.patch_size
        if t < tt or t % tt:
            raise ValueError(
                f"clip has {t} frame(s), not a multiple of the tubelet size {tt}; sample num_frames as a multiple "
                f"of {tt} (e.g. {max(tt, t - t % tt)}) or build the model with a tubelet_size dividing {t}"
            )
        if h < p or w < p or h % p or w % p:
            raise ValueError(
                f"frame size {h}x{w} is not divisible by the patch size {p}; resize or crop the frames to a "
                f"multiple of {p} (e.g. {max(p, h - h % p)}x{max(p, w - w % p)})"
            )

    def validate(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            hint = " (a [B, V, C, T, H, W] multi-view batch goes through the finetune protocol's views=V)" \
                if isinstance(x, Tensor) and x.dim() == 6 else ""
            raise ValueError(f"video tokenizer expects a [B, C, T, H, W] float tensor, got {shape}{hint}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"clip has {x.shape[1]} channel(s) at dim 1 but the tokenizer was built for in_chans={self.in_chans}; "
                "clips are [B, C, T, H, W] (permute [B, T, C, H, W] with x.transpose(1, 2)) or build the model "
                "with the matching in_chans"
            )
        self._check_size(x.shape[2], x.shape[3], x.shape[4])
        if not x.is_floating_point():
            raise ValueError(f"video batch must be floating point (normalised pixels), got {x.dtype}")
        if self.check_finite and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
            raise ValueError("video batch contains NaN or infinite pixels; check the data pipeline or normalisation")

    # -- the interface --------------------------------------------------------------------------------------
    def grid(self, x: Tensor) -> tuple[int, int, int]:
        return (x.shape[-3] // self.tubelet_size, x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)

    def position_embedding(self, grid: tuple[int, int, int]) -> Tensor:
        """``[prod(grid), embed_dim]`` fixed positions for a token grid (see the module docstring)."""
        if self.pos_embed_kind == "3d":
            return sincos_pos_embed(self.embed_dim, grid)
        ref = self.pos_grid or tuple(grid)
        table = sinusoid_table(ref[0] * ref[1] * ref[2], self.embed_dim)
        return interpolate_pos_embed(table, ref, tuple(grid))

    def forward(self, x: Tensor) -> Tokens:
        grid = self.grid(x)
        t = self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D], tokens in (t h w) order
        pos = self.position_embedding(grid).to(t.device, t.dtype)
        return Tokens(t + pos, grid, {"pos_embed": pos})

    def _pixel_affine(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        if self.mean is None or self.std is None:
            return None
        shape = (1, -1, 1, 1, 1)
        return (torch.tensor(self.std, device=x.device, dtype=x.dtype).view(shape),
                torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape))

    def to_pixels(self, x: Tensor) -> Tensor:
        """Undo the input normalisation: ``[B, C, T, H, W]`` normalised -> pixels (``[0, 1]`` scale)."""
        aff = self._pixel_affine(x)
        return x if aff is None else x * aff[0] + aff[1]

    def patchify(self, x: Tensor) -> Tensor:
        tt, p = self.tubelet_size, self.patch_size
        return rearrange(self.to_pixels(x), "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2 c)", p0=tt, p1=p, p2=p)

    def unpatchify(self, patches: Tensor, grid: tuple[int, ...]) -> Tensor:
        """Inverse of :meth:`patchify` (the result is in pixels, like the patches)."""
        tt, p = self.tubelet_size, self.patch_size
        return rearrange(patches, "b (t h w) (p0 p1 p2 c) -> b c (t p0) (h p1) (w p2)",
                         t=grid[0], h=grid[1], w=grid[2], p0=tt, p1=p, p2=p)

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Random clips of a ``2 x 2 x 2`` tubelet grid (even sides, so every video masking applies)."""
        return torch.randn(batch_size, self.in_chans, 2 * self.tubelet_size, 2 * self.patch_size, 2 * self.patch_size)
