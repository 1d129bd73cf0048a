"""Multimodal masked autoencoders (image + text, M3AE): image-caption datasets.

Importing this package registers the ``cifar10_captions``, ``caption_shards`` and ``caption_folder`` datasets. It
reaches the other modalities only through the registry (``cifar10`` images, the ``wordpiece`` vocabulary).
"""

from maezoo.multimodal import data, pairs  # noqa: F401  (registers the datasets)
