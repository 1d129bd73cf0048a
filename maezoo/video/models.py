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
from typing import Any

from maezoo.core.builder import mae
from maezoo.core.mae import MaskedAutoencoder
from maezoo.registry import check_kwargs, register
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
    img_size: int = 224,
    num_frames: int = 16,
    tubelet_size: int = 2,
    patch_size: int = 16,
    in_chans: int = 3,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    cls_token: bool = False,
    decoder_dim: int = 384,
    decoder_depth: int = 4,
    decoder_heads: int = 6,
    masking: str = "tube",
    mask_ratio: float = 0.9,
    masking_args: dict[str, Any] | None = None,
    decoder_masking: str | None = None,
    decoder_mask_ratio: float = 0.5,
    norm_target: bool = True,
    loss: str = "mse",
    pos_embed: PosEmbed = "3d",
    pos_grid: Sequence[int] | None = None,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[float] | None = None,
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


_SIZES = {  # name: (dim, depth, heads, decoder dim, decoder heads)
    "small": (384, 12, 6, 192, 3),
    "base": (768, 12, 12, 384, 6),
    "large": (1024, 24, 16, 512, 8),
}


def _make(dim: int, depth: int, heads: int, dec_dim: int, dec_heads: int):
    def builder(**kwargs: Any) -> MaskedAutoencoder:
        check_kwargs(videomae, kwargs, "VideoMAE builder")
        sized = {"embed_dim": dim, "depth": depth, "num_heads": heads, "decoder_dim": dec_dim, "decoder_heads": dec_heads}
        return videomae(**{**sized, **kwargs})

    builder.__doc__ = (f"VideoMAE ViT ({dim} x {depth} blocks, {heads} heads), decoder 4 x {dec_dim} ({dec_heads} heads); "
                       "kwargs as videomae.")
    return builder


for _name, _cfg in _SIZES.items():
    register("model", f"videomae_vit_{_name}", _make(*_cfg))
