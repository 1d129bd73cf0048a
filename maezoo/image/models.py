"""Image MAE builders: ViT-Tiny/Small/Base/Large/Huge encoders with the paper's decoder (8 x 512).

All of them build through the generic :func:`maezoo.core.builder.mae` (model ``mae``), with the image
patch tokenizer by default; ``tokenizer=`` swaps in any other registered tokenizer.
"""

from __future__ import annotations

from typing import Any

from maezoo.core.builder import accepts, mae
from maezoo.core.mae import MaskedAutoencoder, MaskMode
from maezoo.image import tokenizer as _image_tokenizer  # noqa: F401  (registers tokenizer "image")
from maezoo.registry import check_kwargs, get, register

#: the image tokenizer options mae_vit takes directly, with their defaults
_IMAGE_DEFAULTS: dict[str, Any] = {"img_size": 224, "patch_size": 16, "in_chans": 3}


@register("model", "mae_vit")
def mae_vit(
    img_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    in_chans: int = 3,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    decoder_dim: int = 512,
    decoder_depth: int = 8,
    decoder_heads: int = 16,
    mlp_ratio: float = 4.0,
    cls_token: bool = True,
    drop_path: float = 0.0,
    masking: str = "random",
    mask_ratio: float = 0.75,
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


_SIZES = {  # name: (patch, dim, depth, heads)
    "tiny_patch16": (16, 192, 12, 3),
    "small_patch16": (16, 384, 12, 6),
    "base_patch16": (16, 768, 12, 12),
    "large_patch16": (16, 1024, 24, 16),
    "huge_patch14": (14, 1280, 32, 16),
}


def _make(patch: int, dim: int, depth: int, heads: int):
    def builder(**kwargs: Any) -> MaskedAutoencoder:
        check_kwargs(mae_vit, kwargs, "image MAE builder")
        sized: dict[str, Any] = {"embed_dim": dim, "depth": depth, "num_heads": heads}
        if accepts(get("tokenizer", kwargs.get("tokenizer", "image")), "patch_size"):
            sized["patch_size"] = patch
        return mae_vit(**{**sized, **kwargs})

    builder.__doc__ = f"MAE ViT (patch {patch}, {dim} x {depth} blocks, {heads} heads), decoder 8 x 512; kwargs as mae_vit."
    return builder


for _name, _cfg in _SIZES.items():
    register("model", f"mae_vit_{_name}", _make(*_cfg))
