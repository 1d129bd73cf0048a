"""Layer ids of parameters for layer-wise learning-rate decay, for plain and multi-stage encoders.

Layer ``0`` is the input side (tokenizer, class/mask tokens, position embeddings, patch embeddings),
blocks get ``1 .. L`` in forward order, and everything else (heads, final norms, the decoder) ``L + 1``.
The optimiser then scales block ``i``'s learning rate by ``decay ** (L + 1 - i)``.

Convention (in order of precedence, see :func:`layer_ids`):
    1. An encoder may define ``layer_ids() -> dict[str, int]`` keyed by its own parameter names (without
       the ``encoder.`` prefix); those ids are used as given (and ``num_layers`` should be their maximum).
    2. Otherwise names are parsed by :func:`layer_id`. Stage and block indices are read from
       ``stages.<s>.`` (0-based ``s``, an ``nn.ModuleList`` of stages), ``stage<s>.`` (1-based, e.g.
       ``stage1.blocks.0``) or ``blocks<s>.<i>`` (1-based, ConvMAE's ``blocks1``/``blocks2``/``blocks3``),
       and ``blocks.<i>``. Block ``i`` of stage ``s`` is ``sum(stage_depths[:s]) + i + 1``; a stage's
       parameters outside its blocks (downsampling, stage norm) rank with the last block of the stage
       before (``sum(stage_depths[:s])``, so stage 0's stem is 0); ``patch_embed<s>`` (1-based) ranks as
       the stem of stage ``s``. The encoder gives ``stage_depths`` as an attribute, or it is read from
       ``len(stages[s].blocks)`` / ``len(blocks<s>)``.
    3. Without stages: today's ViT rule, ``blocks.<i>`` -> ``i + 1``; ``tokenizer``/``mask_token``/
       ``cls_token``/``pos_embed``/``patch_embed`` -> 0; anything else -> ``L + 1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

_STAGE_PATTERNS = (
    (re.compile(r"(?:^|\.)stages\.(\d+)(?:\.|$)"), 0),
    (re.compile(r"(?:^|\.)stage(\d+)(?:\.|$)"), 1),
    (re.compile(r"(?:^|\.)blocks(\d+)(?:\.|$)"), 1),
    (re.compile(r"(?:^|\.)patch_embed(\d+)(?:\.|$)"), 1),
)
_BLOCK = re.compile(r"(?:^|\.)blocks\d*\.(\d+)(?:\.|$)")
_INPUT_SUFFIXES = ("cls_token", "pos_embed", "mask_token", "dist_token", "reg_token")


def parse_stage_block(name: str) -> tuple[int | None, int | None]:
    """``(stage, block)`` of a parameter name, stage 0-based; ``None`` where absent.

    >>> parse_stage_block("encoder.stages.1.blocks.2.attn.qkv.weight")
    (1, 2)
    >>> parse_stage_block("encoder.blocks3.0.mlp.fc1.weight")
    (2, 0)
    """
    stage = None
    for pattern, base in _STAGE_PATTERNS:
        m = pattern.search(name)
        if m:
            stage = int(m.group(1)) - base
            break
    m = _BLOCK.search(name)
    return stage, (int(m.group(1)) if m else None)


def layer_id(name: str, num_layers: int, stage_depths: Sequence[int] | None = None) -> int:
    """Layer id of parameter ``name`` in ``0 .. num_layers + 1`` (see the module docstring for the rules).

    Raises:
        ValueError: ``name`` lies in a stage but ``stage_depths`` is not given, names a stage beyond
            ``stage_depths``, or ``sum(stage_depths) != num_layers``.
    """
    parts = name.split(".")
    stage, block = parse_stage_block(name)
    if stage is not None:
        if stage_depths is None:
            raise ValueError(
                f"parameter {name!r} lies in stage {stage} of a multi-stage encoder; pass stage_depths (blocks per "
                "stage) or build the table with maezoo.core.layers.layer_ids(model)"
            )
        if sum(stage_depths) != num_layers:
            raise ValueError(f"stage_depths {list(stage_depths)} sum to {sum(stage_depths)}, not num_layers={num_layers}")
        if stage == 0 and block is None and "patch_embed" in name:
            return 0
        stage = min(stage, len(stage_depths))  # e.g. ConvMAE's patch_embed4 after the last stage
        offset = sum(stage_depths[:stage])
        return offset + block + 1 if block is not None and stage < len(stage_depths) else offset
    if block is not None:
        return block + 1
    if parts[0] in ("tokenizer", "mask_token") or name.endswith(_INPUT_SUFFIXES) or "patch_embed" in parts:
        return 0
    return num_layers + 1


def stage_depths_of(encoder: nn.Module) -> list[int] | None:
    """Blocks per stage: ``encoder.stage_depths``, or ``len(stages[s].blocks)``, or ``len(blocks<s>)``."""
    depths = getattr(encoder, "stage_depths", None)
    if depths is not None:
        return [int(d) for d in depths]
    stages = getattr(encoder, "stages", None)
    if isinstance(stages, (nn.ModuleList, nn.Sequential)):
        return [len(getattr(st, "blocks", ())) for st in stages]
    numbered = sorted((int(k[6:]), len(m)) for k, m in encoder.named_children() if re.fullmatch(r"blocks\d+", k))
    return [d for _, d in numbered] or None


def num_layers_of(encoder: nn.Module) -> int:
    """``L``: ``encoder.num_layers``, else the sum of :func:`stage_depths_of`, else ``len(encoder.blocks)``."""
    if getattr(encoder, "num_layers", None) is not None:
        return int(encoder.num_layers)
    depths = stage_depths_of(encoder)
    if depths is not None:
        return sum(depths)
    return len(getattr(encoder, "blocks", ()))


def layer_ids(model: nn.Module, encoder_attr: str = "encoder") -> tuple[dict[str, int], int]:
    """``({param_name: layer_id}, num_layers)`` for every parameter of ``model``.

    ``model`` is a :class:`~maezoo.core.mae.MaskedAutoencoder`-like module with the encoder at
    ``model.<encoder_attr>`` (or is itself the encoder when it has no such attribute). Use it as
    ``param_groups(model, layer_id=lambda name, L: table[name], num_layers=L)``.
    """
    encoder = getattr(model, encoder_attr, None)
    prefix = f"{encoder_attr}." if isinstance(encoder, nn.Module) else ""
    encoder = encoder if isinstance(encoder, nn.Module) else model
    num_layers = num_layers_of(encoder)
    custom = encoder.layer_ids() if callable(getattr(encoder, "layer_ids", None)) else None
    depths = stage_depths_of(encoder)
    table: dict[str, int] = {}
    for name, _ in model.named_parameters():
        if custom is not None and name.startswith(prefix) and name[len(prefix):] in custom:
            table[name] = int(custom[name[len(prefix):]])
        elif prefix and not name.startswith(prefix) and name.split(".")[0] != "tokenizer" and name != "mask_token":
            table[name] = num_layers + 1  # decoder, heads
        else:
            table[name] = layer_id(name, num_layers, depths)
    return table, num_layers


__all__ = ["layer_id", "layer_ids", "num_layers_of", "parse_stage_block", "stage_depths_of"]
