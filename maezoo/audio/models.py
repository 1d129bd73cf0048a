"""Audio-MAE builders: the audio tokenizer, maezoo's ViT encoder and a global or local decoder, chosen by name.

``audiomae`` is the generic :func:`maezoo.core.builder.mae` construction with one addition: ``decoder`` picks
a registered decoder (``transformer``: MAE's global decoder; ``swin_local``: Audio-MAE's shifted-window one)
with its ``decoder_args`` (``window``, ``shift``). ``audiomae_vit_base`` has the paper's sizes (ViT-B/16
encoder, 16 x 512 local decoder, 1,024 frames, masking 0.8).

Shapes:
    x ``[B, T, F]`` normalised filterbanks -> pred/target ``[B, (T/16)*(F/16), 256]``, ``mask.mask`` ``[B, N]``
"""

from __future__ import annotations

from typing import Annotated, Any

from maezoo.audio import decoder as _decoder  # noqa: F401  (registers decoder "swin_local")
from maezoo.audio import tokenizer as _tokenizer  # noqa: F401  (registers tokenizer "audio")
from maezoo.audio.frontend import AUDIOSET_STATS
from maezoo.core.builder import build_tokenizer
from maezoo.core.encoder import ViTEncoder
from maezoo.core.mae import MaskedAutoencoder, MaskMode
from maezoo.core.masking import build_masking
from maezoo.core.presets import preset
from maezoo.core.types import Divides, Positive, Rate, Ratio, Size
from maezoo.registry import build, register


@register("model", "audiomae")
def audiomae(
    target_frames: Size = 1024,
    mel_bins: Size = 128,
    patch_size: Size | tuple[Size, Size] = 16,
    norm_mean: float = AUDIOSET_STATS[0],
    norm_std: Positive = AUDIOSET_STATS[1],
    embed_dim: Size = 768,
    depth: Size = 12,
    num_heads: Annotated[Size, Divides("embed_dim")] = 12,
    mlp_ratio: Positive = 4.0,
    cls_token: bool = True,
    drop_path: Rate = 0.0,
    decoder: str = "swin_local",
    decoder_dim: Size = 512,
    decoder_depth: Size = 16,
    decoder_heads: Annotated[Size, Divides("decoder_dim")] = 16,
    decoder_args: dict[str, Any] | None = None,
    masking: str = "random",
    mask_ratio: Ratio | None = 0.8,
    masking_args: dict[str, Any] | None = None,
    mask_mode: MaskMode = "drop",
    norm_pix_loss: bool = True,
    loss: str = "mse",
) -> MaskedAutoencoder:
    """Audio-MAE on ``[B, T, F]`` filterbanks (defaults: the paper's ViT-B, 16-block local decoder, mask 0.8).

    Args:
        target_frames, mel_bins, patch_size, norm_mean, norm_std: the ``audio`` tokenizer's (the datasets pass
            their frame count and training-split statistics, which are then saved with the checkpoint).
        embed_dim, depth, num_heads, mlp_ratio, cls_token, drop_path: the ViT encoder.
        decoder: a registered decoder taking ``(in_dim, out_dim, dim, depth, num_heads, mlp_ratio,
            num_prefix_tokens, **decoder_args)``: ``swin_local`` (``decoder_args: {window: [4, 4], shift: [2, 0]}``)
            or ``transformer``.
        masking, mask_ratio, masking_args: pre-training masking (``random`` 0.8, or ``time_frequency`` with
            ``mask_ratio: null`` and ``masking_args: {time_ratio, freq_ratio}``).
        norm_pix_loss: per-patch normalised target (Audio-MAE trains with it).
    """
    tok = build_tokenizer("audio", {"patch_size": patch_size, "mel_bins": mel_bins, "target_frames": target_frames,
                                    "norm_mean": norm_mean, "norm_std": norm_std}, embed_dim)
    enc = ViTEncoder(embed_dim, depth, num_heads, mlp_ratio, cls_token=cls_token, drop_path=drop_path)
    dec = build("decoder", decoder, in_dim=embed_dim, out_dim=tok.target_dim, dim=decoder_dim, depth=decoder_depth,
                num_heads=decoder_heads, mlp_ratio=mlp_ratio, num_prefix_tokens=enc.num_prefix_tokens,
                **(decoder_args or {}))
    strategy = build_masking(masking, ratio=mask_ratio, args=masking_args)
    return MaskedAutoencoder(tok, enc, dec, strategy, target="norm" if norm_pix_loss else "raw", loss=loss,
                             mask_mode=mask_mode)


audiomae.smoke_kwargs = {  # type: ignore[attr-defined]
    "target_frames": 32, "mel_bins": 32, "embed_dim": 16, "depth": 1, "num_heads": 2,
    "decoder_dim": 8, "decoder_depth": 2, "decoder_heads": 2,
}


@register("model", "audiomae_vit_base")
@preset(audiomae, embed_dim=768, depth=12, num_heads=12, decoder="swin_local", decoder_dim=512, decoder_depth=16,
        decoder_heads=16)
def audiomae_vit_base(**kwargs: Any) -> MaskedAutoencoder:
    """Audio-MAE's ViT-B/16 (768 x 12, 12 heads) with the 16 x 512 local decoder; options as :func:`audiomae`."""
    return audiomae(**kwargs)


audiomae_vit_base.smoke_kwargs = {  # type: ignore[attr-defined]
    "target_frames": 32, "mel_bins": 32, "embed_dim": 16, "depth": 1, "num_heads": 2,
    "decoder_dim": 8, "decoder_depth": 1, "decoder_heads": 2,
}
