"""Video modality: VideoMAE (tubelet tokenizer, tube masking, V2 running-cell decoder masking), video datasets
with a decoded-clip cache, the generated moving-digits set and reconstruction figures (PNG strips + GIF)."""

from maezoo.video import data, models, official, tokenizer, visualize  # noqa: F401  (registrations)
