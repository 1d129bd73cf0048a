"""Image + text in one encoder (M3AE): builders, paired datasets and the figure.

Importing this package registers the ``m3ae*`` builders. It reaches the image and text tokenizers and the
word-piece vocabulary through the registry, never by importing ``maezoo.image`` or ``maezoo.text``.
"""

from maezoo.multimodal import models  # noqa: F401  (registers the builders)
from maezoo.multimodal.models import m3ae, m3ae_cifar, m3ae_vit_base, m3ae_vit_large

__all__ = ["m3ae", "m3ae_cifar", "m3ae_vit_base", "m3ae_vit_large"]
