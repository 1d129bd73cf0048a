"""ConvMAE (Gao et al., "Masked Convolution Meets Masked Autoencoders", arXiv 2205.03892): a hybrid
convolution-transformer encoder pre-trained the MAE way, with one mask shared by every scale.

Built from maezoo's core, nothing else: a :class:`ConvMAETokenizer` (stage-1 patch embedding) whose
``Tokens.mask_grid`` is the coarse stage-3 grid, a :class:`ConvMAEEncoder` with ``consumes = "mask"``,
the core's :class:`~maezoo.core.decoder.TransformerDecoder` on the stage-3 grid and the core's masking
(the random mask is drawn on the stage-3 grid; :meth:`~maezoo.core.masking.CoarseMasking.upsample` gives
the stage-2 and stage-1 masks).

Encoder (patch sizes ``p1, p2, p3``; ConvMAE-Base: 4/2/2, widths 256/384/768, depths 2/2/11, 12 heads):
    stage 1: ``[B, D1, H/p1, W/p1]``, masked convolution blocks (:class:`MaskedConvBlock`)
    stage 2: stride-``p2`` patch embedding, masked convolution blocks on ``[B, D2, H/(p1 p2), W/(p1 p2)]``
    stage 3: stride-``p3`` patch embedding + linear + fixed 2-D sin-cos positions, then transformer blocks
        over the *visible* stage-3 tokens only (a quarter of them at a 75% mask); attention kernel chosen per
        device/precision/length by :func:`maezoo.core.attention.select_attention`, as in the ViT encoder
    fusion (pre-training only, as ConvMAE): stage-1 output through a stride-``p2 p3`` convolution and
        stage-2 output through a stride-``p3`` convolution (4 and 2 for Base), both to width ``D3``, taken
        at the visible positions and added to the stage-3 output; then LayerNorm, then the decoder.
    Unmasked (``model.encode``, fine-tuning): every position, no fusion (ConvMAE's ``ConvViT``), then LayerNorm.

Why hidden pixels never reach visible outputs: the patch embeddings and fusion convolutions have
kernel == stride and every stage's grid cell lies inside one stage-3 cell, the 5x5 depth-wise convolution
only sees ``mask * conv1x1(LN(x))`` (hidden positions zeroed), every other operation of the convolutional
blocks is per position, and the transformer stage drops the hidden tokens.

Parameter names follow maezoo's multi-stage convention (``encoder.stages.<s>.blocks.<i>``) so that
:func:`maezoo.core.layers.layer_ids` ranks the stage-1/2 blocks before the transformer blocks for layer-wise
decay; ``encoder.blocks`` lists every block in forward order (stochastic depth, partial fine-tuning).

Shapes:
    x ``[B, C, H, W]`` with ``H, W`` divisible by ``s = p1 p2 p3``; token grid ``(H/p1, W/p1)``;
    mask grid ``(H/s, W/s)``; pred/target ``[B, HW/s^2, s^2 C]``; latent ``[B, N_vis, D3]``;
    ``encode(x, pool="mean")`` -> ``[B, D3]``, ``pool="none"`` -> ``[B, HW/s^2, D3]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from timm.layers import DropPath, LayerNorm2d, Mlp
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from maezoo.core.attention import select_attention
from maezoo.core.decoder import TransformerDecoder
from maezoo.core.encoder import _norm, init_mae_weights
from maezoo.core.mae import MaskedAutoencoder
from maezoo.core.masking import CoarseMasking, Mask, apply_drop, build_masking
from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.core.presets import preset
from maezoo.core.tokenizer import Tokens
from maezoo.core.types import Divides, Positive, Rate, Ratio, Size
from maezoo.image.tokenizer import PatchTokenizer
from maezoo.image.visualize import visualize_image_batch
from maezoo.registry import register

#: context key holding the stage-1 grid ``(H1, W1)`` (the encoder reshapes the tokens to a feature map)
GRID_KEY = "convmae_grid"


def _three(values: Sequence[Any], name: str) -> tuple[Any, Any, Any]:
    values = tuple(values) if isinstance(values, (list, tuple)) else (values,) * 3
    if len(values) != 3:
        raise ValueError(f"ConvMAE has three stages: {name} needs 3 values, got {list(values)}")
    return values  # type: ignore[return-value]


class PatchMerge(nn.Module):
    """ConvMAE's ``PatchEmbed``: a ``p x p`` stride-``p`` convolution, LayerNorm over channels, GELU.

    Shapes:
        ``[B, C_in, H, W] -> [B, C_out, H/p, W/p]``
    """

    def __init__(self, in_dim: int, out_dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, patch, stride=patch)
        self.norm = LayerNorm2d(out_dim, eps=1e-5)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.proj(x)))


class MaskedConvBlock(nn.Module):
    """ConvMAE's ``CBlock``: ``x + conv1x1(dwconv5x5(keep * conv1x1(LN(x))))``, then ``x + MLP(LN(x))``.

    ``keep`` (1 visible, 0 hidden) zeroes hidden positions before the only spatial operation, so visible
    outputs never depend on hidden inputs. ``drop_path1``/``drop_path2`` follow timm's ``Block`` so that
    fine-tuning's stochastic depth reaches these blocks too.

    Shapes:
        x ``[B, D, H, W]``, keep ``[B, 1, H, W]`` or ``None`` -> ``[B, D, H, W]``
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, kernel_size: int = 5, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-5)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm2d(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), use_conv=True)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        y = self.conv1(self.norm1(x))
        if keep is not None:
            y = y * keep.to(y.dtype)
        x = x + self.drop_path1(self.conv2(self.attn(y)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class ConvMAEStage(nn.Module):
    """One stage: an optional downsampling ``PatchMerge``, an optional token projection, its blocks."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None = None, proj: nn.Module | None = None):
        super().__init__()
        self.downsample, self.proj = downsample, proj
        self.blocks = nn.ModuleList(blocks)


@register("tokenizer", "convmae_image")
class ConvMAETokenizer(PatchTokenizer):
    """Stage-1 patch embedding of ConvMAE; masks, targets and the decoder live on the stage-3 grid.

    ``patchify``/``unpatchify``/``validate`` are the image tokenizer's with patch ``s = p1 p2 p3`` (the total
    stride), so images must divide by ``s`` and targets are ``s x s`` patches on the mask grid.

    Shapes:
        x ``[B, C, H, W]`` -> tokens ``[B, (H/p1)(W/p1), embed_dim]``, grid ``(H/p1, W/p1)``,
        mask_grid ``(H/s, W/s)``; patchify ``[B, HW/s^2, s^2 C]``
    """

    def __init__(
        self,
        embed_dim: int = 256,
        patch_sizes: Sequence[int] = (4, 2, 2),
        in_chans: int = 3,
        img_size: int | tuple[int, int] | None = 224,
        check_finite: bool = True,
    ) -> None:
        p = tuple(int(v) for v in _three(patch_sizes, "patch_sizes"))
        if min(p) < 1:
            raise ValueError(f"patch_sizes must be positive, got {list(p)}")
        super().__init__(embed_dim, p[0] * p[1] * p[2], in_chans, img_size, check_finite)
        self.patch_sizes = p
        self.proj = nn.Conv2d(in_chans, embed_dim, p[0], stride=p[0])
        self.norm = LayerNorm2d(embed_dim, eps=1e-5)
        self.act = nn.GELU()

    def grid(self, x: Tensor) -> tuple[int, int]:
        return (x.shape[-2] // self.patch_sizes[0], x.shape[-1] // self.patch_sizes[0])

    def mask_grid(self, x: Tensor) -> tuple[int, int]:
        return super().grid(x)  # the image tokenizer's grid at the total stride

    def forward(self, x: Tensor) -> Tokens:
        t = self.act(self.norm(self.proj(x)))  # [B, D1, H1, W1]
        grid = (int(t.shape[-2]), int(t.shape[-1]))
        return Tokens(t.flatten(2).transpose(1, 2), grid, {GRID_KEY: grid}, mask_grid=self.mask_grid(x))


@register("encoder", "convmae")
class ConvMAEEncoder(nn.Module):
    """Two masked-convolution stages and a transformer stage (see the module docstring).

    Attributes:
        dim: the stage-3 width (features of ``encode``); stage_depths: blocks per stage.
    """

    consumes = "mask"
    num_prefix_tokens = 0

    def __init__(
        self,
        embed_dims: Sequence[int] = (256, 384, 768),
        depths: Sequence[int] = (2, 2, 11),
        patch_sizes: Sequence[int] = (4, 2, 2),
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        kernel_size: int = 5,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        d1, d2, d3 = (int(v) for v in _three(embed_dims, "embed_dims"))
        depths = [int(v) for v in _three(depths, "depths")]
        _, p2, p3 = (int(v) for v in _three(patch_sizes, "patch_sizes"))
        if d3 % num_heads:
            raise ValueError(f"ConvMAE stage-3 width {d3} must divide by num_heads {num_heads}")
        if d3 % 4:
            raise ValueError(f"ConvMAE stage-3 width {d3} must divide by 4 (2-D sin-cos positions)")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size depth-wise convolution), got {kernel_size}")
        self.dim, self.stage_depths, self.strides = d3, depths, (p2, p3)
        total = sum(depths)
        dpr = [drop_path * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        conv = [[MaskedConvBlock(d, mlp_ratio, kernel_size, dpr[sum(depths[:s]) + i]) for i in range(depths[s])]
                for s, d in enumerate((d1, d2))]
        attn = [Block(d3, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[depths[0] + depths[1] + i],
                      norm_layer=_norm) for i in range(depths[2])]
        self.stages = nn.ModuleList([
            ConvMAEStage(conv[0]),
            ConvMAEStage(conv[1], PatchMerge(d1, d2, p2)),
            ConvMAEStage(attn, PatchMerge(d2, d3, p3), nn.Linear(d3, d3)),
        ])
        #: multi-scale fusion: stage-1 and stage-2 outputs onto the stage-3 grid (used with a mask)
        self.fuse = nn.ModuleList([nn.Conv2d(d1, d3, p2 * p3, stride=p2 * p3), nn.Conv2d(d2, d3, p3, stride=p3)])
        self.norm = _norm(d3)
        init_mae_weights(self)
        w = self.stages[2].downsample.proj.weight.data  # like a linear layer, as ConvMAE's patch_embed3
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    @property
    def blocks(self) -> nn.ModuleList:
        """Every block in forward order (convolutional, then transformer); a view, not a registered child."""
        return nn.ModuleList(blk for st in self.stages for blk in st.blocks)

    def stage_keep(self, mask: Mask, grid1: tuple[int, int]) -> list[Tensor]:
        """The stage-1 and stage-2 keep maps (1 visible) from the stage-3 mask, upsampled by the core.

        Shapes:
            mask.mask ``[B, H3 W3]`` -> ``[[B, 1, H1, W1], [B, 1, H2, W2]]``
        """
        p2, p3 = self.strides
        h3, w3 = grid1[0] // (p2 * p3), grid1[1] // (p2 * p3)
        b, n = mask.mask.shape
        if n != h3 * w3:
            raise ValueError(f"ConvMAE mask has {n} positions per sample but the stage-3 grid is {h3}x{w3}; "
                             "draw it on the tokenizer's mask_grid (model.sample_mask(x))")
        coarse = mask.mask.view(b, h3, w3)
        return [(~CoarseMasking.upsample(coarse, f)).unsqueeze(1) for f in (p2 * p3, p3)]

    def forward(self, tokens: Tensor, context: dict[str, Any] | None = None) -> Tensor:
        """Stage-1 tokens (+ ``context["mask"]`` in pre-training) -> stage-3 features.

        Shapes:
            tokens ``[B, H1 W1, D1]``, ``context[GRID_KEY] = (H1, W1)`` -> ``[B, N_vis, D3]`` with a mask,
            else ``[B, H3 W3, D3]``
        """
        ctx = context or {}
        if GRID_KEY not in ctx:
            raise ValueError(f"ConvMAEEncoder needs context[{GRID_KEY!r}] = (H1, W1), the stage-1 grid; "
                             "use it with the convmae_image tokenizer")
        mask: Mask | None = ctx.get("mask")
        b, _, d1 = tokens.shape
        grid1 = tuple(ctx[GRID_KEY])
        x = tokens.transpose(1, 2).reshape(b, d1, *grid1)
        keep = self.stage_keep(mask, grid1) if mask is not None else [None, None]
        scales = []
        for stage, k in zip(self.stages[:2], keep):
            if stage.downsample is not None:
                x = stage.downsample(x)
            for blk in stage.blocks:
                x = blk(x, k)
            scales.append(x)
        last = self.stages[2]
        x = last.downsample(x)
        grid3 = (int(x.shape[-2]), int(x.shape[-1]))
        x = last.proj(x.flatten(2).transpose(1, 2))
        x = x + sincos_pos_embed(self.dim, grid3, x.device, x.dtype)
        if mask is not None:
            x = apply_drop(x, mask)
        select_attention(last.blocks, x)  # the core's per-device/precision/length kernel choice, as the ViT's
        for blk in last.blocks:
            x = blk(x)
        if mask is not None:
            for conv, feat in zip(self.fuse, scales):
                x = x + apply_drop(conv(feat).flatten(2).transpose(1, 2), mask)
        return self.norm(x)


@register("model", "convmae")
def convmae(
    img_size: Size | tuple[Size, Size] | None = 224,
    in_chans: Size = 3,
    patch_sizes: Sequence[Size] = (4, 2, 2),
    embed_dims: Sequence[Size] = (256, 384, 768),
    depths: Sequence[Size] = (2, 2, 11),
    num_heads: Size = 12,
    mlp_ratio: Positive = 4.0,
    kernel_size: Size = 5,
    drop_path: Rate = 0.0,
    decoder_dim: Size = 512,
    decoder_depth: Size = 8,
    decoder_heads: Annotated[Size, Divides("decoder_dim")] = 16,
    masking: str = "random",
    mask_ratio: Ratio = 0.75,
    norm_pix_loss: bool = True,
    loss: str = "mse",
) -> MaskedAutoencoder:
    """A ConvMAE masked autoencoder (defaults: ConvMAE-Base as published, decoder 8 x 512).

    ``masking`` is drawn on the stage-3 grid (``random``: MAE's 75%); the encoder upsamples it for stages
    1 and 2. ``img_size`` only checks a fixed size; any size divisible by ``p1 p2 p3`` runs.

    Shapes:
        x ``[B, in_chans, H, W]`` -> pred/target ``[B, HW/s^2, s^2 in_chans]``, ``s = p1 p2 p3``
    """
    dims = [int(v) for v in _three(embed_dims, "embed_dims")]
    tok = ConvMAETokenizer(dims[0], patch_sizes, in_chans, img_size)
    enc = ConvMAEEncoder(dims, depths, patch_sizes, num_heads, mlp_ratio, kernel_size, drop_path)
    dec = TransformerDecoder(dims[2], tok.target_dim, decoder_dim, decoder_depth, decoder_heads, mlp_ratio,
                             num_prefix_tokens=0)
    strategy = build_masking(masking, ratio=mask_ratio)
    return MaskedAutoencoder(tok, enc, dec, strategy, target="norm" if norm_pix_loss else "raw", loss=loss)


#: a tiny configuration for tests/core/test_registry.py (32x32 example input: 2x2 mask grid of 16-pixel cells)
_SMOKE = {"img_size": None, "embed_dims": (8, 16, 32), "depths": (1, 1, 1), "num_heads": 2,
          "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}
convmae.smoke_kwargs = _SMOKE  # type: ignore[attr-defined]


@register("model", "convmae_base")
@preset(convmae, embed_dims=(256, 384, 768), depths=(2, 2, 11), num_heads=12)
def convmae_base(**kwargs: Any) -> MaskedAutoencoder:
    """ConvMAE-Base as published (Alpha-VL/ConvMAE ``convmae_convvit_base_patch16``): patch sizes 4/2/2, widths
    256/384/768, depths 2/2/11, 12 heads, decoder 8 x 512; options as :func:`convmae`."""
    return convmae(**kwargs)


@register("model", "convmae_small")
@preset(convmae, embed_dims=(128, 192, 384), depths=(2, 2, 11), num_heads=6)
def convmae_small(**kwargs: Any) -> MaskedAutoencoder:
    """ConvMAE-Small: NOT in the official repository (which has Base only); defined here by halving Base's
    widths like ViT-S halves ViT-B: widths 128/192/384, depths 2/2/11, 6 heads, decoder 8 x 512; options as
    :func:`convmae`."""
    return convmae(**kwargs)


# the MAE reconstruction figure works unchanged: it reads patchify/unpatchify on the mask grid
register("visualizer", "convmae_image", visualize_image_batch)

__all__ = ["ConvMAEEncoder", "ConvMAETokenizer", "MaskedConvBlock", "PatchMerge", "convmae", "convmae_base", "convmae_small"]
