"""Modality-independent data plumbing: the data root, the shared-data copy, robust sample loading."""

from maezoo.data.robust import RobustDataset, collate_skip_bad
from maezoo.data.sources import find_shared_data, repo_root

__all__ = ["RobustDataset", "collate_skip_bad", "find_shared_data", "repo_root"]
