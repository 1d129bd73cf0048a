"""The generic MAE builder, registered as model ``mae``: any registered tokenizer, by name, with the ViT
encoder and MAE's transformer decoder.

A new modality only has to register a :class:`~maezoo.core.tokenizer.Tokenizer` (``@register`` or an
entry point in ``maezoo.tokenizers``); then ::

    maezoo.create_model("mae", tokenizer="wave", tokenizer_args={"patch": 16}, embed_dim=192, depth=6, num_heads=3)

builds a complete masked autoencoder around it, and a recipe does the same with
``model: {name: mae, args: {tokenizer: wave, ...}}``. The image builders (``mae_vit*``) go through this
function too, so there is one construction path.

Shapes:
    the tokenizer maps a batch to tokens ``[B, N, embed_dim]`` on a grid with ``prod(grid) == N``, and
    ``patchify`` to ``[B, N, tokenizer.target_dim]``; the model's ``forward`` then returns pred/target
    ``[B, N, tokenizer.target_dim]`` and ``mask.mask`` ``[B, N]`` (see :class:`~maezoo.core.mae.MAEOutput`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

from torch import nn

from maezoo.core.decoder import TransformerDecoder
from maezoo.core.encoder import ViTEncoder
from maezoo.core.mae import MaskedAutoencoder, MaskMode
from maezoo.core.masking import build_masking
from maezoo.core.types import Divides, Positive, Rate, Ratio, Size
from maezoo.registry import build, get, register

#: methods the model calls on its tokenizer
_TOKENIZER_METHODS = ("validate", "grid", "forward", "patchify")


@register("model", "mae")
def mae(
    tokenizer: str,
    tokenizer_args: dict[str, Any] | None = None,
    embed_dim: Size = 768,
    depth: Size = 12,
    num_heads: Annotated[Size, Divides("embed_dim")] = 12,
    mlp_ratio: Positive = 4.0,
    cls_token: bool = True,
    drop_path: Rate = 0.0,
    decoder_dim: Size = 512,
    decoder_depth: Size = 8,
    decoder_heads: Annotated[Size, Divides("decoder_dim")] = 16,
    masking: str = "random",
    mask_ratio: Ratio | None = 0.75,
    masking_args: dict[str, Any] | None = None,
    mask_mode: MaskMode = "drop",
    replace_rate: Rate = 0.0,
    target: str = "norm",
    loss: str = "mse",
    decoder_masking: str | dict[str, Any] | None = None,
) -> MaskedAutoencoder:
    """A masked autoencoder around the registered tokenizer ``tokenizer`` (defaults: MAE ViT-B, decoder 8 x 512).

    Args:
        tokenizer: registered tokenizer name (built-in or from the ``maezoo.tokenizers`` entry points).
        tokenizer_args: keyword arguments of the tokenizer. ``embed_dim`` is passed for you when the
            tokenizer's constructor takes it; the tokenizer must end up with ``embed_dim`` equal to ours.
        embed_dim, depth, num_heads, mlp_ratio, cls_token, drop_path: the ViT encoder.
        decoder_dim, decoder_depth, decoder_heads: MAE's transformer decoder (same ``mlp_ratio``).
        masking: registered masking strategy name.
        mask_ratio: the strategy's ``ratio`` argument (:func:`~maezoo.core.masking.build_masking`); ``None`` for
            strategies without a single ratio (``grid``, ``time_frequency``), whose options go in ``masking_args``.
        masking_args: further keyword arguments of the strategy (a ``ratio`` here wins over ``mask_ratio``).
        mask_mode: ``"drop"`` (MAE) or ``"replace"`` (SimMIM/BERT style); ``replace_rate`` as in
            :class:`~maezoo.core.mae.MaskedAutoencoder`.
        target: registered target (``norm`` = MAE's norm-pix loss, ``raw``).
        loss: registered masked loss (``mse``, ``l1``, ...).
        decoder_masking: among the hidden tokens, the subset the decoder reconstructs and the loss scores: a
            registered strategy name or ``{"name": "running_cell", "args": {"ratio": 0.5}}`` (VideoMAE V2); ``None``:
            every hidden token.

    Shapes:
        forward(x) -> pred/target ``[B, N, tokenizer.target_dim]``, ``mask.mask`` ``[B, N]``;
        encode(x, pool="cls"|"mean") -> ``[B, embed_dim]``.
    """
    tok = build_tokenizer(tokenizer, tokenizer_args, embed_dim)
    enc = ViTEncoder(embed_dim, depth, num_heads, mlp_ratio, cls_token=cls_token, drop_path=drop_path)
    dec = TransformerDecoder(
        embed_dim, tok.target_dim, decoder_dim, decoder_depth, decoder_heads, mlp_ratio,
        num_prefix_tokens=enc.num_prefix_tokens,
    )
    strategy = build_masking(masking, ratio=mask_ratio, args=masking_args)
    return MaskedAutoencoder(
        tok, enc, dec, strategy, target=target, loss=loss, mask_mode=mask_mode, replace_rate=replace_rate,
        decoder_masking=decoder_masking,
    )


# a tiny configuration for tests/core/test_registry.py, which builds every registered model with its defaults
mae.smoke_kwargs = {  # type: ignore[attr-defined]
    "tokenizer": "image",
    "tokenizer_args": {"img_size": 8, "patch_size": 4, "in_chans": 1},
    "embed_dim": 16, "depth": 1, "num_heads": 2, "decoder_dim": 8, "decoder_depth": 1, "decoder_heads": 2,
}


def accepts(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` (a class or function) takes the keyword argument ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return True
    p = params.get(name)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def build_tokenizer(name: str, args: dict[str, Any] | None, embed_dim: int) -> nn.Module:
    """Build the registered tokenizer ``name`` for an encoder of width ``embed_dim`` and check its interface.

    Raises ``TypeError`` for unknown options (listing the valid ones) and ``ValueError`` when the result
    does not expose an ``int`` ``embed_dim``/``target_dim`` or its ``embed_dim`` differs from ``embed_dim``.
    """
    if not isinstance(name, str):
        raise TypeError(f"tokenizer must be a registered tokenizer name (str), got {type(name).__name__}")
    if args is not None and not isinstance(args, dict):
        raise TypeError(f"tokenizer_args must be a dict of keyword arguments, got {type(args).__name__}")
    kwargs = dict(args or {})
    factory = get("tokenizer", name)
    where = f"tokenizer {name!r} ({getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)})"
    if "embed_dim" in kwargs and kwargs["embed_dim"] != embed_dim:
        raise ValueError(
            f"tokenizer_args sets embed_dim={kwargs['embed_dim']} but the model's embed_dim is {embed_dim}; "
            "set embed_dim once, on the model (it is passed to the tokenizer)"
        )
    if accepts(factory, "embed_dim"):
        kwargs["embed_dim"] = embed_dim
    tok = build("tokenizer", name, **kwargs)
    if not isinstance(tok, nn.Module):
        raise ValueError(
            f"{where} built a {type(tok).__name__}, not a torch.nn.Module; a tokenizer subclasses "
            "maezoo.core.Tokenizer (an entry point may name the class or a factory function returning one)"
        )
    missing = [m for m in _TOKENIZER_METHODS if not callable(getattr(tok, m, None))]
    if missing:
        raise ValueError(f"{where} lacks the method(s) {', '.join(missing)} of maezoo.core.Tokenizer")
    for attr in ("embed_dim", "target_dim"):
        value = getattr(tok, attr, None)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(
                f"{where} must set a positive int attribute {attr!r} in its constructor, got {value!r} "
                "(embed_dim: width of its tokens; target_dim: values per token that patchify() returns)"
            )
    if tok.embed_dim != embed_dim:
        raise ValueError(
            f"{where} makes {tok.embed_dim}-dim tokens but the encoder has embed_dim={embed_dim}; "
            f"build the model with embed_dim={tok.embed_dim} (or give the tokenizer an embed_dim argument)"
        )
    return tok


# -- several modalities in one encoder ------------------------------------------------------------------------
_MODALITY_KEYS = ("tokenizer", "args", "target", "loss", "weight")

#: the default of :func:`multimae`: image patches and word-piece ids (M3AE's pair; the ids need a vocabulary)
DEFAULT_MODALITIES: dict[str, dict[str, Any]] = {
    "image": {"tokenizer": "image", "args": {"img_size": 224, "patch_size": 16}},
    "text": {"tokenizer": "text", "args": {"max_positions": 64}, "target": "raw", "loss": "ce", "weight": 0.5},
}


@register("model", "multimae")
def multimae(
    modalities: dict[str, dict[str, Any]] | list[str] | None = None,
    embed_dim: Size = 768,
    depth: Size = 12,
    num_heads: Annotated[Size, Divides("embed_dim")] = 12,
    mlp_ratio: Positive = 4.0,
    drop_path: Rate = 0.0,
    decoder: str = "shared",
    decoder_dim: Size = 512,
    decoder_depth: Size = 8,
    decoder_heads: Annotated[Size, Divides("decoder_dim")] = 16,
    masking: str = "per_modality",
    masking_args: dict[str, Any] | None = None,
) -> nn.Module:
    """Several registered tokenizers in one ViT encoder (:mod:`maezoo.core.multimodal`): M3AE or MultiMAE.

    Args:
        modalities: ``{name: {"tokenizer": registered name, "args": {...}, "target": "norm", "loss": "mse",
            "weight": 1.0}}`` in the order their tokens are concatenated; ``embed_dim`` is passed to each tokenizer.
            A list of registered tokenizer names (``["image", "audio"]``) takes each one's defaults. Default: image
            (224², patch 16) + text (word-piece ids, target ids, cross-entropy, weight 0.5).
        decoder: ``"shared"`` (M3AE: one transformer over all modalities) or ``"per_modality"`` (MultiMAE:
            cross-attention to the encoder, then ``decoder_depth`` blocks per modality).
        masking: ``"per_modality"`` (``masking_args``: ``ratio``, ``ratios``, ``strategies``) or
            ``"dirichlet_budget"`` (``num_visible``, ``alpha``, ``sample_subsets``).
    """
    from maezoo.core.modal_masking import CrossModalMasking
    from maezoo.core.multimodal import JointTokenizer, ModalityDecoders, MultiModalAutoencoder, SharedDecoder

    specs = _modality_specs(modalities if modalities is not None else DEFAULT_MODALITIES)
    parts = {n: build_tokenizer(s["tokenizer"], s.get("args"), embed_dim) for n, s in specs.items()}
    enc = ViTEncoder(embed_dim, depth, num_heads, mlp_ratio, cls_token=True, drop_path=drop_path)
    decoders = {"shared": SharedDecoder, "per_modality": ModalityDecoders}
    if decoder not in decoders:
        raise ValueError(f"decoder must be 'shared' (M3AE) or 'per_modality' (MultiMAE), got {decoder!r}")
    dec = decoders[decoder](embed_dim, {n: t.target_dim for n, t in parts.items()}, decoder_dim, decoder_depth,
                            decoder_heads, mlp_ratio, num_prefix_tokens=enc.num_prefix_tokens)
    strategy = build("masking", masking, **(masking_args or {}))
    if not isinstance(strategy, CrossModalMasking):
        raise ValueError(f"masking {masking!r} draws one grid's mask; a multimodal model needs 'per_modality' or "
                         "'dirichlet_budget'")
    return MultiModalAutoencoder(
        JointTokenizer(parts), enc, dec, strategy,
        targets={n: s["target"] for n, s in specs.items() if "target" in s},
        losses={n: s["loss"] for n, s in specs.items() if "loss" in s},
        weights={n: s["weight"] for n, s in specs.items() if "weight" in s})


def _modality_specs(modalities: Any) -> dict[str, dict[str, Any]]:
    """``{name: spec}`` checked; a list of registered tokenizer names gives each its default spec (image and text as
    in :data:`DEFAULT_MODALITIES`, any other ``{"tokenizer": name}``)."""
    if isinstance(modalities, list | tuple) and all(isinstance(m, str) for m in modalities):
        modalities = {m: DEFAULT_MODALITIES.get(m, {"tokenizer": m}) for m in modalities}
    if not isinstance(modalities, dict) or not modalities:
        raise ValueError("modalities must be a non-empty {name: {tokenizer: ..., args: {...}}} mapping, got "
                         f"{modalities!r}")
    for name, spec in modalities.items():
        if not isinstance(spec, dict) or "tokenizer" not in spec:
            raise ValueError(f"modality {name!r}: give {{tokenizer: <registered name>, args: {{...}}}}, got {spec!r}")
        unknown = sorted(set(spec) - set(_MODALITY_KEYS))
        if unknown:
            raise ValueError(f"modality {name!r}: unknown key(s) {unknown}; valid keys: {', '.join(_MODALITY_KEYS)}")
    return modalities


multimae.smoke_kwargs = {  # type: ignore[attr-defined]
    "modalities": {"image": {"tokenizer": "image", "args": {"img_size": 8, "patch_size": 4, "in_chans": 1}},
                   "text": {"tokenizer": "text", "args": {"vocab_size": 64, "max_positions": 16}, "target": "raw",
                            "loss": "ce", "weight": 0.5}},
    "embed_dim": 16, "depth": 1, "num_heads": 2, "decoder_dim": 8, "decoder_depth": 1, "decoder_heads": 2,
}
