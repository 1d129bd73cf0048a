"""A view of paired samples keeping some modalities (maezoo/data/modal.py)."""

import pytest
import torch

from maezoo.data.modal import ModalityView


class Pairs(torch.utils.data.Dataset):
    num_classes = 3
    targets = [0, 1, 2]

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return {"image": torch.full((2,), float(i)), "text": torch.arange(i + 1)}, i

    def collate_fn(self, batch):  # pads the texts, as a paired dataset does
        texts = torch.nn.utils.rnn.pad_sequence([b[0]["text"] for b in batch], batch_first=True)
        return {"image": torch.stack([b[0]["image"] for b in batch]), "text": texts}, torch.tensor([b[1] for b in batch])


def test_view_keeps_the_named_modalities_after_the_datasets_collation():
    view = ModalityView(Pairs(), ["image"])
    x, y = view.collate_fn([view[i] for i in range(3)])
    assert set(x) == {"image"} and x["image"].shape == (3, 2) and y.tolist() == [0, 1, 2]
    assert view.num_classes == 3 and view.targets == [0, 1, 2] and len(view) == 3


def test_view_names_missing_modalities_and_non_paired_data():
    with pytest.raises(ValueError, match=r"not \['audio'\]"):
        ModalityView(Pairs(), ["audio"]).collate_fn([Pairs()[0]])
    plain = [(torch.zeros(2), 0), (torch.ones(2), 1)]
    with pytest.raises(ValueError, match="drop the @ suffix"):
        ModalityView(plain, ["image"]).collate_fn(plain)
