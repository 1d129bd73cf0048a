"""Generic fixtures shared by the test files (keep this small)."""

from __future__ import annotations

import os

import pytest
import torch

# Tests run tiny models, for which intra-op threads only add overhead; on a shared, loaded CPU box two
# OpenMP threads made a tiny training step ~80x slower. Override with MAEZOO_TEST_THREADS=N.
_THREADS = int(os.environ.get("MAEZOO_TEST_THREADS", "1"))
torch.set_num_threads(_THREADS)
os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))  # inherited by subprocess tests


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_image_mae():
    """Factory for a tiny image MAE (fast on CPU): ``tiny_image_mae(mask_mode="replace", ...)``."""
    import maezoo

    def make(**kwargs):
        cfg = dict(
            img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=2,
            decoder_dim=16, decoder_depth=1, decoder_heads=2, mask_ratio=0.75,
        )
        cfg.update(kwargs)
        return maezoo.create_model("mae_vit", **cfg)

    return make
