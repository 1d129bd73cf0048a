"""Image + text in one encoder (M3AE): builders, image-caption datasets and the figure.

Importing this package registers the ``m3ae*`` builders and the ``cifar10_captions``, ``caption_shards`` and
``caption_folder`` datasets. It reaches the other modalities only through the registry (the ``image`` and
``text`` tokenizers, ``cifar10`` images, the ``wordpiece`` vocabulary), never by importing them.
"""

from maezoo.multimodal import data, models, pairs, visualize  # noqa: F401  (registers the datasets, builders and figure)
from maezoo.multimodal.models import m3ae, m3ae_cifar, m3ae_vit_base, m3ae_vit_large

__all__ = ["m3ae", "m3ae_cifar", "m3ae_vit_base", "m3ae_vit_large"]
