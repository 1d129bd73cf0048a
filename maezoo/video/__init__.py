"""video modality (in progress)."""
