"""timeseries modality (in progress)."""
