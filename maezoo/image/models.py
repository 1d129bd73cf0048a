"""Image MAE builders: ViT-Tiny/Small/Base/Large/Huge encoders with the paper's decoder (8 x 512)."""

from __future__ import annotations

from maezoo.core.decoder import TransformerDecoder
from maezoo.core.encoder import ViTEncoder
from maezoo.core.mae import MaskedAutoencoder
from maezoo.image.tokenizer import PatchTokenizer
from maezoo.registry import build, check_kwargs, register


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
    mask_mode: str = "drop",
    norm_pix_loss: bool = True,
    loss: str = "mse",
) -> MaskedAutoencoder:
    """Any-size image MAE. ``masking`` names a registered strategy taking ``ratio`` (random, block, coarse)."""
    tok = PatchTokenizer(embed_dim, patch_size, in_chans, img_size)
    enc = ViTEncoder(embed_dim, depth, num_heads, mlp_ratio, cls_token=cls_token, drop_path=drop_path)
    dec = TransformerDecoder(
        embed_dim, tok.target_dim, decoder_dim, decoder_depth, decoder_heads, mlp_ratio,
        num_prefix_tokens=enc.num_prefix_tokens,
    )
    strategy = build("masking", masking, ratio=mask_ratio)
    return MaskedAutoencoder(tok, enc, dec, strategy, target="norm" if norm_pix_loss else "raw", loss=loss, mask_mode=mask_mode)


_SIZES = {  # name: (patch, dim, depth, heads)
    "tiny_patch16": (16, 192, 12, 3),
    "small_patch16": (16, 384, 12, 6),
    "base_patch16": (16, 768, 12, 12),
    "large_patch16": (16, 1024, 24, 16),
    "huge_patch14": (14, 1280, 32, 16),
}


def _make(patch: int, dim: int, depth: int, heads: int):
    def builder(**kwargs) -> MaskedAutoencoder:
        check_kwargs(mae_vit, kwargs, "image MAE builder")
        return mae_vit(**{"patch_size": patch, "embed_dim": dim, "depth": depth, "num_heads": heads, **kwargs})

    builder.__doc__ = f"MAE ViT (patch {patch}, {dim} x {depth} blocks, {heads} heads), decoder 8 x 512; kwargs as mae_vit."
    return builder


for _name, _cfg in _SIZES.items():
    register("model", f"mae_vit_{_name}", _make(*_cfg))
