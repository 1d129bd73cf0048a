"""Shared typed names: dataset splits and transforms, and the argument types model builders declare.

Builders annotate their arguments with these (``mask_ratio: Ratio = 0.75``, ``depth: Size = 12``), so a recipe's
``model.args`` is checked against the signature and the ranges (:func:`maezoo.config.check_args`) before any
folder or dataset exists. ``Divides("embed_dim")`` marks an argument that must divide another one::

    num_heads: Annotated[Size, Divides("embed_dim")] = 12
"""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from maezoo.config import Divides, Range

#: a dataset split (image and graph datasets have train/test only)
Split = Literal["train", "val", "test"]
#: a dataset's augmentation: pre-training, fine-tuning, or none (features, testing)
Transform = Literal["pretrain", "finetune", "eval"]
SPLITS: tuple[str, ...] = typing.get_args(Split)
TRANSFORMS: tuple[str, ...] = typing.get_args(Transform)

#: a share strictly between 0 and 1 (mask ratios: 0 hides nothing, 1 everything)
Ratio = Annotated[float, Range(gt=0, lt=1)]
#: a probability that may be 0 (dropout, stochastic depth, replace rate)
Rate = Annotated[float, Range(ge=0, lt=1)]
#: a count or a width (tokens, channels, blocks, heads)
Size = Annotated[int, Range(ge=1)]
#: a strictly positive number (MLP ratio, a standard deviation, a loss exponent)
Positive = Annotated[float, Range(gt=0)]
#: a number that may be 0 (a leaky slope)
NonNegative = Annotated[float, Range(ge=0)]

__all__ = ["SPLITS", "TRANSFORMS", "Divides", "NonNegative", "Positive", "Range", "Rate", "Ratio", "Size", "Split",
           "Transform"]
