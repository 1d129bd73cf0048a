"""Time-series MAE builders on the one core: PatchTST's self-supervised model and TSFormer (STEP's pre-training).

Both are a :class:`~maezoo.core.mae.MaskedAutoencoder` around :class:`SeriesPatchTokenizer` and the core's
ViT encoder (timm blocks):

* ``patchtst`` (Nie et al., ICLR'23, self-supervised): 40% of each channel's patches hidden independently,
  replace mode with a fixed zero token (its zero-filled patches), the encoder sees every patch; a linear
  head per token reconstructs the patch (masked MSE on RevIN-normalised values).
* ``tsformer`` (Shao et al., KDD'22): 75% of the segments hidden with one mask for the whole batch
  (``shared_random``), drop mode (the encoder sees only visible segments), a transformer decoder,
  masked L1 on the raw (dataset-normalised) values.

Deviations from the papers: pre-norm LayerNorm transformer blocks (PatchTST uses BatchNorm and residual
attention); the zero token is zero in token space (PatchTST's zero patch embeds to the projection's bias).

Shapes:
    x ``[B, C, L]`` -> pred/target ``[B * C, N, patch_len]`` (channel-independent), mask ``[B * C, N]``;
    encode(x, pool="none") -> ``[B * C, N, embed_dim]``
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from torch import Tensor, nn

from maezoo.core.decoder import TransformerDecoder
from maezoo.core.encoder import ViTEncoder
from maezoo.core.mae import MaskedAutoencoder, MaskMode, MaskToken
from maezoo.core.masking import Mask, build_masking
from maezoo.core.presets import preset
from maezoo.core.types import Divides, Positive, Rate, Ratio, Size
from maezoo.registry import register
from maezoo.timeseries.tokenizer import PosEmbed, Remainder, SeriesPatchTokenizer


@register("decoder", "patch_linear")
class PatchLinearDecoder(nn.Module):
    """PatchTST's pre-training head: dropout, then one linear map per token to its patch values.

    It reads every token, so it serves replace mode (the encoder keeps all ``N`` tokens).

    Shapes:
        latent ``[B', P + N, D]`` -> ``[B', N, out_dim]``
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.drop = nn.Dropout(dropout)
        self.pred = nn.Linear(in_dim, out_dim)

    def forward(self, latent: Tensor, mask: Mask, grid: tuple[int, ...], context: dict[str, Any] | None = None) -> Tensor:
        x = latent[:, self.num_prefix_tokens:]
        if x.shape[1] != mask.mask.shape[1]:
            raise ValueError(f"the patch_linear decoder needs every token ({mask.mask.shape[1]}), got {x.shape[1]}: "
                             "use it with mask_mode='replace', or decoder='transformer' in drop mode")
        return self.pred(self.drop(x))


def series_mae(
    patch_len: Size = 12,
    stride: Size | None = None,
    channel_independent: bool = True,
    n_vars: Size | None = None,
    revin: bool = True,
    pos_embed: PosEmbed = "learned",
    remainder: Remainder = "crop",
    embed_dim: Size = 128,
    depth: Size = 3,
    num_heads: Annotated[Size, Divides("embed_dim")] = 16,
    mlp_ratio: Positive = 4.0,
    drop_path: Rate = 0.0,
    decoder: Literal["linear", "transformer"] = "linear",
    decoder_dim: Size = 128,
    decoder_depth: Size = 1,
    decoder_heads: Annotated[Size, Divides("decoder_dim")] = 4,
    head_dropout: Rate = 0.0,
    masking: str = "random",
    mask_ratio: Ratio | None = 0.4,
    masking_args: dict[str, Any] | None = None,
    mask_mode: MaskMode = "replace",
    mask_token: MaskToken = "zeros",
    target: str = "raw",
    loss: str = "mse",
) -> MaskedAutoencoder:
    """A series MAE: tokenizer options, encoder (no class token), decoder, masking and loss (module docstring).

    Shapes:
        x ``[B, C, L]`` -> pred/target ``[B', N, patch_len * (1 or C)]``, ``B' = B * C`` when channel-independent
    """
    if decoder not in ("linear", "transformer"):
        raise ValueError(f"decoder must be 'linear' (PatchTST) or 'transformer' (TSFormer), got {decoder!r}")
    if decoder == "linear" and mask_mode == "drop":
        raise ValueError("decoder='linear' reconstructs each token from its own code, so it needs mask_mode='replace'; "
                         "use decoder='transformer' for drop mode (TSFormer)")
    tok = SeriesPatchTokenizer(embed_dim, patch_len, stride, channel_independent, n_vars, revin,
                               pos_embed=pos_embed, remainder=remainder)
    enc = ViTEncoder(embed_dim, depth, num_heads, mlp_ratio, cls_token=False, drop_path=drop_path)
    dec: nn.Module
    if decoder == "linear":
        dec = PatchLinearDecoder(embed_dim, tok.target_dim, head_dropout)
    else:
        dec = TransformerDecoder(embed_dim, tok.target_dim, decoder_dim, decoder_depth, decoder_heads, mlp_ratio,
                                 num_prefix_tokens=0)
    strategy = build_masking(masking, ratio=mask_ratio, args=masking_args)
    return MaskedAutoencoder(tok, enc, dec, strategy, target=target, loss=loss, mask_mode=mask_mode,
                             mask_token=mask_token if mask_mode == "replace" else "learned")


@register("model", "patchtst")
@preset(series_mae)
def patchtst(**kwargs: Any) -> MaskedAutoencoder:
    """PatchTST self-supervised (defaults: patch 12, stride 12, 3 layers, width 128, 16 heads, mask 0.4,
    zero-filled patches, linear head, masked MSE, RevIN); every :func:`series_mae` option can be overridden."""
    return series_mae(**kwargs)


@register("model", "tsformer")
@preset(series_mae, embed_dim=96, depth=4, num_heads=4, decoder="transformer", decoder_dim=96, decoder_depth=1,
        decoder_heads=4, masking="shared_random", mask_ratio=0.75, mask_mode="drop", loss="l1", revin=False)
def tsformer(**kwargs: Any) -> MaskedAutoencoder:
    """TSFormer (defaults: patch 12, width 96, 4 heads, 4 encoder layers, 1 decoder layer, mask 0.75 shared by
    the batch, drop mode, masked L1 on raw values, no RevIN); every :func:`series_mae` option can be overridden."""
    return series_mae(**kwargs)
