"""M3AE (Geng et al., 2205.14204): image patches and word pieces masked together, one ViT encoder for both.

Built on the core's several-modality model (:func:`maezoo.core.builder.multimae`): the image part is the registered
``image`` tokenizer (2-D sin-cos positions, normalised-pixel targets, MSE), the text part the registered ``text``
tokenizer (word-piece ids, learned 1-D positions, cross-entropy on hidden pieces), both at 75% masking, text loss
weighted 0.5, one shared decoder (8 x 512 at ViT-B widths) with a head per modality.

``modalities=["image"]`` builds the same network without text: MAE at the same widths, the image-only model M3AE
is compared with at equal pre-training steps.

Shapes:
    x ``{"image": [B, 3, H, W], "text": [B, L]}`` -> MultiModalOutput (per-modality pred/target on hidden tokens)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from maezoo.core.builder import multimae
from maezoo.core.presets import preset
from maezoo.core.types import Divides, NonNegative, Positive, Rate, Ratio, Size
from maezoo.registry import register

Modality = Literal["image", "text"]


@register("model", "m3ae")
def m3ae(
    vocab_file: str | None = None,
    vocab_size: Size | None = None,
    modalities: list[Modality] | None = None,
    img_size: Size = 224,
    patch_size: Size = 16,
    in_chans: Size = 3,
    max_text_len: Size = 64,
    embed_dim: Size = 768,
    depth: Size = 12,
    num_heads: Annotated[Size, Divides("embed_dim")] = 12,
    drop_path: Rate = 0.0,
    decoder_dim: Size = 512,
    decoder_depth: Size = 8,
    decoder_heads: Annotated[Size, Divides("decoder_dim")] = 16,
    image_mask_ratio: Ratio = 0.75,
    text_mask_ratio: Ratio = 0.75,
    text_masking: Literal["random", "whole_word"] = "random",
    text_weight: NonNegative = 0.5,
    norm_pix_loss: bool = True,
    hide_text: Rate = 0.0,
    masking: Literal["per_modality", "dirichlet_budget"] = "per_modality",
    num_visible: Size | None = None,
    alpha: Positive = 1.0,
    sample_subsets: bool = False,
) -> Any:
    """M3AE (module docstring).

    Args:
        vocab_file: ``tokenizer.json`` / ``vocab.txt`` of the captions' word pieces (a paired dataset passes its
            own); without it ``vocab_size`` pieces (default BERT's 30522).
        modalities: ``["image", "text"]`` (default) or ``["image"]`` (the image-only MAE baseline).
        max_text_len: text positions (ids per caption, ``[CLS]`` and ``[SEP]`` included).
        text_weight: weight of the text loss (M3AE: 0.5; the image loss weighs 1).
        hide_text: with ``per_modality``, the share of samples whose caption is hidden whole, to be predicted from
            the image alone (MultiMAE's subsets of modalities; M3AE: 0).
        masking: ``per_modality`` (M3AE: ``image_mask_ratio`` of the patches, ``text_mask_ratio`` of each caption's
            pieces) or ``dirichlet_budget`` (MultiMAE: ``num_visible`` shown tokens per sample, default a quarter of
            the patches plus a quarter of the text positions, split by Dirichlet(``alpha``), over random non-empty
            subsets of the two with ``sample_subsets``).
    """
    mods = list(modalities or ["image", "text"])
    if not mods or len(set(mods)) != len(mods) or not set(mods) <= {"image", "text"}:
        raise ValueError(f"modalities must be ['image', 'text'], ['image'] or ['text'], got {modalities!r}")
    text_args: dict[str, Any] = {"max_positions": max_text_len}
    if vocab_file is not None:
        text_args["vocab_file"] = vocab_file
    if vocab_size is not None:
        text_args["vocab_size"] = vocab_size
    spec = {
        "image": {"tokenizer": "image", "args": {"img_size": img_size, "patch_size": patch_size, "in_chans": in_chans},
                  "target": "norm" if norm_pix_loss else "raw", "loss": "mse", "weight": 1.0},
        "text": {"tokenizer": "text", "args": text_args, "target": "raw", "loss": "ce", "weight": text_weight},
    }
    model = multimae(
        {m: spec[m] for m in mods}, embed_dim=embed_dim, depth=depth, num_heads=num_heads, drop_path=drop_path,
        decoder="shared", decoder_dim=decoder_dim, decoder_depth=decoder_depth, decoder_heads=decoder_heads,
        masking=masking, masking_args=_masking_args(masking, mods, img_size // patch_size, max_text_len,
                                                    image_mask_ratio, text_mask_ratio, text_masking, hide_text,
                                                    num_visible, alpha, sample_subsets))
    model.tokenizer.visualizer = "image+text"  # the M3AE figure (maezoo/multimodal/visualize.py), image-only too
    return model


def _masking_args(masking: str, mods: list[str], grid: int, text_len: int, image_ratio: float, text_ratio: float,
                  text_masking: str, hide_text: float, num_visible: int | None, alpha: float,
                  sample_subsets: bool) -> dict[str, Any]:
    if masking == "per_modality":
        hide = {"text": hide_text} if hide_text > 0 and "text" in mods else {}
        return {"ratios": {"image": image_ratio, "text": text_ratio}, "strategies": {"text": text_masking},
                "hide_all": hide}
    if num_visible is None:  # as many shown tokens as the per-modality ratios show at most
        num_visible = round(grid * grid * (1 - image_ratio)) * ("image" in mods)
        num_visible += round((text_len - 1) * (1 - text_ratio)) * ("text" in mods)
    return {"num_visible": max(1, int(num_visible)), "alpha": alpha, "sample_subsets": sample_subsets}


#: files written beside a run's weights and read back for these builder arguments (maezoo.engine.checkpoint)
m3ae.run_files = {"vocab_file": "tokenizer.json"}  # type: ignore[attr-defined]
m3ae.smoke_kwargs = {"vocab_size": 64, "img_size": 8, "patch_size": 4, "max_text_len": 16, "embed_dim": 16,  # type: ignore[attr-defined]
                     "depth": 1, "num_heads": 2, "decoder_dim": 8, "decoder_depth": 1, "decoder_heads": 2}


@register("model", "m3ae_vit_base")
@preset(m3ae, embed_dim=768, depth=12, num_heads=12, decoder_dim=512, decoder_depth=8, decoder_heads=16)
def m3ae_vit_base(**kwargs: Any) -> Any:
    """M3AE at the paper's widths: ViT-B/16 encoder at 224², decoder 8 x 512."""
    return m3ae(**kwargs)


@register("model", "m3ae_vit_large")
@preset(m3ae, embed_dim=1024, depth=24, num_heads=16, decoder_dim=512, decoder_depth=8, decoder_heads=16)
def m3ae_vit_large(**kwargs: Any) -> Any:
    """M3AE ViT-L/16 (the paper's largest model), decoder 8 x 512."""
    return m3ae(**kwargs)


@register("model", "m3ae_cifar")
@preset(m3ae, img_size=32, patch_size=4, max_text_len=24, embed_dim=192, depth=6, num_heads=3, decoder_dim=128,
        decoder_depth=2, decoder_heads=4)
def m3ae_cifar(**kwargs: Any) -> Any:
    """A CPU size for 32² images: 8 x 8 patches of 4², encoder 6 x 192 (the ``image/mae_cifar10_small`` encoder),
    decoder 2 x 128, 24 text positions."""
    return m3ae(**kwargs)
