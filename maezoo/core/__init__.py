"""The modality-agnostic masked-autoencoder core. Imports no modality."""

from maezoo.core import losses, targets  # noqa: F401  (registers built-ins)
from maezoo.core.builder import mae as _mae_builder  # noqa: F401  (registers model "mae")
from maezoo.core.decoder import TransformerDecoder
from maezoo.core.encoder import ViTEncoder
from maezoo.core.layers import layer_id, layer_ids
from maezoo.core.losses import MaskedCrossEntropy, MaskedL1, MaskedMSE, ScaledCosineError, masked_mean
from maezoo.core.mae import MAEOutput, MaskedAutoencoder, pool_features, segment_pool
from maezoo.core.masking import (
    BlockMasking,
    CoarseMasking,
    GridMasking,
    Mask,
    MaskingStrategy,
    NodeMasking,
    RandomMasking,
    ReplaceRule,
    RunningCellMasking,
    TimeFrequencyMasking,
    TubeMasking,
    apply_drop,
    apply_replace,
    apply_replace_rule,
    select_decoder_targets,
    unshuffle,
)
from maezoo.core.pos_embed import interpolate_pos_embed, sincos_pos_embed
from maezoo.core.reconstruct import Reconstruction, reconstruct
from maezoo.core.targets import invert_target, norm_target, raw_target, resolve_target
from maezoo.core.tokenizer import Tokenizer, Tokens

__all__ = [
    "BlockMasking", "CoarseMasking", "GridMasking", "MAEOutput", "Mask", "MaskedAutoencoder", "MaskedCrossEntropy",
    "MaskedL1", "MaskedMSE", "MaskingStrategy", "NodeMasking", "RandomMasking", "ReplaceRule", "RunningCellMasking",
    "ScaledCosineError", "TimeFrequencyMasking", "Tokenizer", "Tokens", "TransformerDecoder", "TubeMasking",
    "ViTEncoder", "apply_drop", "apply_replace", "apply_replace_rule", "interpolate_pos_embed", "layer_id",
    "layer_ids", "masked_mean", "norm_target", "pool_features", "raw_target", "resolve_target", "segment_pool",
    "select_decoder_targets", "sincos_pos_embed", "unshuffle",
    "Reconstruction", "invert_target", "reconstruct",
]
