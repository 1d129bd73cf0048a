"""Evaluation skips and counts samples that fail to load, as pre-training does (a corrupt JPEG must not end a run)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

from maezoo.eval.features import extract_features, make_loader, skipped_samples


class _Jpegs(torch.utils.data.Dataset):
    """Eight 8x8 JPEGs in memory; the ones in ``bad`` are cut short, as a corrupt file on disk would be."""

    def __init__(self, bad: set[int]) -> None:
        self.blobs = []
        for i in range(8):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(buf, format="JPEG")
            data = buf.getvalue()
            self.blobs.append(data[: len(data) // 3] if i in bad else data)

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int):
        img = Image.open(io.BytesIO(self.blobs[i])).convert("RGB")  # raises on the truncated ones
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).float(), i


class _Mean(torch.nn.Module):
    def encode(self, x, pool="cls"):
        return x.flatten(1).mean(1, keepdim=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_feature_pass_skips_and_counts_corrupt_images(workers: int, capsys) -> None:
    loader = make_loader(_Jpegs(bad={2, 5}), batch_size=3, num_workers=workers)
    # (with workers the warnings are printed by the worker processes, out of pytest's sight)
    with pytest.warns(UserWarning, match="skipping sample") if workers == 0 else contextlib.nullcontext():
        feats, labels = extract_features(_Mean(), loader)
    assert feats.shape == (6, 1) and labels.tolist() == [0, 1, 3, 4, 6, 7]
    assert skipped_samples(loader) == 2
    assert "skipped 2 sample(s)" in capsys.readouterr().out


def test_a_batch_with_no_loadable_sample_is_a_clear_error() -> None:
    loader = make_loader(_Jpegs(bad=set(range(8))), batch_size=4)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="every sample of a batch"):
        extract_features(_Mean(), loader)
