"""Image MAE builders: ViT-Tiny/Small/Base/Large/Huge encoders with the paper's decoder (8 x 512).

All of them build through the generic :func:`maezoo.core.builder.mae` (model ``mae``), with the image
patch tokenizer by default; ``tokenizer=`` swaps in any other registered tokenizer.
"""

from __future__ import annotations

from typing import Annotated, Any

from maezoo.core.builder import accepts, mae
from maezoo.core.mae import MaskedAutoencoder, MaskMode
from maezoo.core.presets import preset
from maezoo.core.types import Divides, Positive, Rate, Ratio, Size
from maezoo.image import tokenizer as _image_tokenizer  # noqa: F401  (registers tokenizer "image")
from maezoo.registry import get, register

#: the image tokenizer options mae_vit takes directly, with their defaults
_IMAGE_DEFAULTS: dict[str, Any] = {"img_size": 224, "patch_size": 16, "in_chans": 3}


@register("model", "mae_vit")
def mae_vit(
    img_size: Size | tuple[Size, Size] | None = 224,
    patch_size: Size | tuple[Size, Size] = 16,
    in_chans: Size = 3,
    embed_dim: Size = 768,
    depth: Size = 12,
    num_heads: Annotated[Size, Divides("embed_dim")] = 12,
    decoder_dim: Size = 512,
    decoder_depth: Size = 8,
    decoder_heads: Annotated[Size, Divides("decoder_dim")] = 16,
    mlp_ratio: Positive = 4.0,
    cls_token: bool = True,
    drop_path: Rate = 0.0,
    masking: str = "random",
    mask_ratio: Ratio = 0.75,
    mask_mode: MaskMode = "drop",
    norm_pix_loss: bool = True,
    loss: str = "mse",
    tokenizer: str = "image",
    tokenizer_args: dict[str, Any] | None = None,
) -> MaskedAutoencoder:
    """Any-size image MAE. ``masking`` names a registered strategy taking ``ratio`` (random, block, coarse).

    ``tokenizer`` names any registered tokenizer (default: the patch tokenizer ``image``); ``img_size``,
    ``patch_size`` and ``in_chans`` go to it when its constructor takes them (changing one it does not take
    is an error), and ``tokenizer_args`` adds or overrides its other options. Everything else is
    :func:`maezoo.core.builder.mae`'s, with ``norm_pix_loss`` choosing the ``norm`` or ``raw`` target.

    Shapes:
        x ``[B, in_chans, H, W]`` (image tokenizer) -> pred/target ``[B, H*W/patch**2, patch**2*in_chans]``
    """
    given = {"img_size": img_size, "patch_size": patch_size, "in_chans": in_chans}
    factory = get("tokenizer", tokenizer)
    tok_args: dict[str, Any] = {}
    for key, value in given.items():
        if accepts(factory, key):
            tok_args[key] = value
        elif value != _IMAGE_DEFAULTS[key]:
            raise TypeError(f"mae_vit: tokenizer {tokenizer!r} takes no {key!r}; leave {key} at its default")
    tok_args.update(tokenizer_args or {})
    return mae(
        tokenizer=tokenizer, tokenizer_args=tok_args, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        mlp_ratio=mlp_ratio, cls_token=cls_token, drop_path=drop_path, decoder_dim=decoder_dim,
        decoder_depth=decoder_depth, decoder_heads=decoder_heads, masking=masking, mask_ratio=mask_ratio,
        mask_mode=mask_mode, target="norm" if norm_pix_loss else "raw", loss=loss,
    )


@register("model", "mae_vit_tiny_patch16")
@preset(mae_vit, patch_size=16, embed_dim=192, depth=12, num_heads=3)
def mae_vit_tiny_patch16(**kwargs: Any) -> MaskedAutoencoder:
    """MAE ViT-Ti/16 (192 x 12 blocks, 3 heads), decoder 8 x 512; options as :func:`mae_vit`."""
    return mae_vit(**kwargs)


@register("model", "mae_vit_small_patch16")
@preset(mae_vit, patch_size=16, embed_dim=384, depth=12, num_heads=6)
def mae_vit_small_patch16(**kwargs: Any) -> MaskedAutoencoder:
    """MAE ViT-S/16 (384 x 12 blocks, 6 heads), decoder 8 x 512; options as :func:`mae_vit`."""
    return mae_vit(**kwargs)


@register("model", "mae_vit_base_patch16")
@preset(mae_vit, patch_size=16, embed_dim=768, depth=12, num_heads=12)
def mae_vit_base_patch16(**kwargs: Any) -> MaskedAutoencoder:
    """MAE ViT-B/16 as published (768 x 12 blocks, 12 heads), decoder 8 x 512; options as :func:`mae_vit`."""
    return mae_vit(**kwargs)


@register("model", "mae_vit_large_patch16")
@preset(mae_vit, patch_size=16, embed_dim=1024, depth=24, num_heads=16)
def mae_vit_large_patch16(**kwargs: Any) -> MaskedAutoencoder:
    """MAE ViT-L/16 as published (1024 x 24 blocks, 16 heads), decoder 8 x 512; options as :func:`mae_vit`."""
    return mae_vit(**kwargs)


@register("model", "mae_vit_huge_patch14")
@preset(mae_vit, patch_size=14, embed_dim=1280, depth=32, num_heads=16)
def mae_vit_huge_patch14(**kwargs: Any) -> MaskedAutoencoder:
    """MAE ViT-H/14 as published (1280 x 32 blocks, 16 heads), decoder 8 x 512; options as :func:`mae_vit`."""
    return mae_vit(**kwargs)
