"""audio modality (in progress)."""
