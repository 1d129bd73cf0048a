"""The modality-agnostic masked-autoencoder core. Imports no modality."""

from maezoo.core import losses, targets  # noqa: F401  (registers built-ins)
from maezoo.core.decoder import TransformerDecoder
from maezoo.core.encoder import ViTEncoder
from maezoo.core.losses import MaskedCrossEntropy, MaskedL1, MaskedMSE, ScaledCosineError, masked_mean
from maezoo.core.mae import MAEOutput, MaskedAutoencoder, pool_features
from maezoo.core.masking import (
    BlockMasking,
    CoarseMasking,
    GridMasking,
    Mask,
    MaskingStrategy,
    NodeMasking,
    RandomMasking,
    TimeFrequencyMasking,
    TubeMasking,
    apply_drop,
    apply_replace,
    unshuffle,
)
from maezoo.core.pos_embed import interpolate_pos_embed, sincos_pos_embed
from maezoo.core.tokenizer import Tokenizer, Tokens

__all__ = [
    "BlockMasking", "CoarseMasking", "GridMasking", "MAEOutput", "Mask", "MaskedAutoencoder", "MaskedCrossEntropy",
    "MaskedL1", "MaskedMSE", "MaskingStrategy", "NodeMasking", "RandomMasking", "ScaledCosineError",
    "TimeFrequencyMasking", "Tokenizer", "Tokens", "TransformerDecoder", "TubeMasking", "ViTEncoder",
    "apply_drop", "apply_replace", "interpolate_pos_embed", "masked_mean", "pool_features", "sincos_pos_embed",
    "unshuffle",
]
