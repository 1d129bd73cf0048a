"""VideoMAE builders: tubelet tokenizer + ViT encoder + a 4-block decoder, through the generic
:func:`maezoo.core.builder.mae`.

VideoMAE's defaults: tube masking at 0.9, no class token (mean pooling downstream), the normalised target
per tubelet and colour channel (unbiased std + 1e-6, after undoing the input normalisation) and an MSE on
the hidden tokens only. ``decoder_masking="running_cell"`` turns on VideoMAE V2's dual masking: the decoder
reconstructs only the hidden tokens a shifting 2x2 running cell leaves (``decoder_mask_ratio`` 0.5 drops
half), and the loss scores exactly those (``MAEOutput.target_mask``).

Sizes (encoder width x depth, heads; decoder width, heads; official ``pretrain_videomae_*`` models):
ViT-S 384 x 12, 6; 192, 3 -- ViT-B 768 x 12, 12; 384, 6 -- ViT-L 1024 x 24, 16; 512, 8.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from maezoo.core.builder import mae
from maezoo.core.mae import MaskedAutoencoder
from maezoo.core.presets import preset
from maezoo.core.types import Divides, Positive, Rate, Ratio, Size
from maezoo.registry import register
from maezoo.video import tokenizer as _video_tokenizer  # noqa: F401  (registers tokenizer "video")
from maezoo.video.tokenizer import PosEmbed


def videomae_target(in_chans: int, norm_target: bool = True) -> dict[str, Any] | str:
    """VideoMAE's target spec: per tubelet and channel, ``(x - mean) / (unbiased std + 1e-6)``; ``raw`` otherwise."""
    if not norm_target:
        return "raw"
    return {"name": "norm", "args": {"axes": "channel", "channels": int(in_chans), "eps_mode": "std", "eps": 1e-6,
                                     "unbiased": True}}


@register("model", "videomae")
def videomae(
    img_size: Size | None = 224,
    num_frames: Size | None = 16,
    tubelet_size: Size = 2,
    patch_size: Size = 16,
    in_chans: Size = 3,
    embed_dim: Size = 768,
    depth: Size = 12,
    num_heads: Annotated[Size, Divides("embed_dim")] = 12,
    mlp_ratio: Positive = 4.0,
    drop_path: Rate = 0.0,
    cls_token: bool = False,
    decoder_dim: Size = 384,
    decoder_depth: Size = 4,
    decoder_heads: Annotated[Size, Divides("decoder_dim")] = 6,
    masking: str = "tube",
    mask_ratio: Ratio = 0.9,
    masking_args: dict[str, Any] | None = None,
    decoder_masking: str | None = None,
    decoder_mask_ratio: Ratio = 0.5,
    norm_target: bool = True,
    loss: str = "mse",
    pos_embed: PosEmbed = "3d",
    pos_grid: Sequence[Size] | None = None,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[Positive] | None = None,
) -> MaskedAutoencoder:
    """A VideoMAE (defaults: ViT-B, 16 x 224^2, tubelet 2 x 16 x 16, tube 0.9, decoder 4 x 384).

    Args:
        img_size, num_frames: the configured clip size (checked against the tubelet; any valid size runs).
        masking: ``tube`` (VideoMAE), ``random`` (space-time random) or any 3-D strategy; ``mask_ratio`` its ratio.
        decoder_masking: ``None`` (the decoder reconstructs every hidden token) or a registered strategy such
            as ``running_cell`` (VideoMAE V2) with ``decoder_mask_ratio`` (its share NOT reconstructed).
        norm_target: VideoMAE's normalised target (else raw pixels); ``pixel_mean``/``pixel_std`` are the input
            normalisation, undone before the target is computed (a dataset passes them as ``model_kwargs``).
        pos_embed, pos_grid: ``3d`` sin-cos or the official ``1d`` table (interpolated from ``pos_grid``).

    Shapes:
        x ``[B, in_chans, T, H, W]`` -> pred/target ``[B, N, t*p*p*in_chans]`` (``[B, K, ...]`` with decoder
        masking), ``N = T/t * H/p * W/p``; ``encode(x, pool="mean")`` -> ``[B, embed_dim]``
    """
    tok_args = {
        "tubelet_size": tubelet_size, "patch_size": patch_size, "in_chans": in_chans, "num_frames": num_frames,
        "img_size": img_size, "pos_embed": pos_embed, "pos_grid": pos_grid, "mean": pixel_mean, "std": pixel_std,
    }
    model = mae(
        tokenizer="video", tokenizer_args=tok_args, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        mlp_ratio=mlp_ratio, cls_token=cls_token, drop_path=drop_path, decoder_dim=decoder_dim,
        decoder_depth=decoder_depth, decoder_heads=decoder_heads, masking=masking, mask_ratio=mask_ratio,
        masking_args=masking_args, target=videomae_target(in_chans, norm_target), loss=loss,  # type: ignore[arg-type]
        decoder_masking=None if decoder_masking is None else {"name": decoder_masking, "args": {"ratio": decoder_mask_ratio}},
    )
    return model


@register("model", "videomae_vit_small")
@preset(videomae, embed_dim=384, depth=12, num_heads=6, decoder_dim=192, decoder_heads=3)
def videomae_vit_small(**kwargs: Any) -> MaskedAutoencoder:
    """VideoMAE ViT-S (384 x 12 blocks, 6 heads), decoder 4 x 192 (3 heads); options as :func:`videomae`."""
    return videomae(**kwargs)


@register("model", "videomae_vit_base")
@preset(videomae, embed_dim=768, depth=12, num_heads=12, decoder_dim=384, decoder_heads=6)
def videomae_vit_base(**kwargs: Any) -> MaskedAutoencoder:
    """VideoMAE ViT-B (768 x 12 blocks, 12 heads), decoder 4 x 384 (6 heads); options as :func:`videomae`."""
    return videomae(**kwargs)


@register("model", "videomae_vit_large")
@preset(videomae, embed_dim=1024, depth=24, num_heads=16, decoder_dim=512, decoder_heads=8)
def videomae_vit_large(**kwargs: Any) -> MaskedAutoencoder:
    """VideoMAE ViT-L (1024 x 24 blocks, 16 heads), decoder 4 x 512 (8 heads); options as :func:`videomae`."""
    return videomae(**kwargs)
