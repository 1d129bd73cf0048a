"""Image modality: patch tokenizer, MAE ViT builders, data and the reconstruction figure."""

from maezoo.image import (  # noqa: F401  (registers datasets and builders)
    convmae,  # noqa: F401  (registers the ConvMAE tokenizer, encoder and builders)
    data,
    folder,  # noqa: F401  (registers the image_folder dataset)
    models,
)
from maezoo.image.tokenizer import PatchTokenizer
from maezoo.image.visualize import reconstruction_grid, save_reconstructions

__all__ = ["PatchTokenizer", "reconstruction_grid", "save_reconstructions"]
