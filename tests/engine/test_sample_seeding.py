"""Masks seeded by sample (maezoo/engine/sample_seeding.py): each rank's rows of the global batch's mask are the
rows the 1-rank run draws for the same samples, for a several-modality model's dict batches (every cross-modal
strategy) and for padded text, whose masks depend on each sample's own length."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import maezoo
from maezoo.engine import fsdp
from maezoo.engine.sample_seeding import global_batch_mask

SMOKE = maezoo.get("model", "multimae").smoke_kwargs
MASKINGS = {
    "per_modality, captions hidden whole in half": ("per_modality", {"ratios": {"image": 0.75, "text": 0.5},
                                                                     "hide_all": {"text": 0.5}}),
    "per_modality, whole words": ("per_modality", {"ratios": {"image": 0.75, "text": 0.5},
                                                   "strategies": {"text": "whole_word"}}),
    "dirichlet budget over subsets": ("dirichlet_budget", {"num_visible": 5, "alpha": 0.7, "sample_subsets": True}),
}


def _batch(b: int) -> dict[str, torch.Tensor]:
    """``b`` images and captions of lengths 3..12 (``[CLS] ids [SEP] [PAD]...``)."""
    g = torch.Generator().manual_seed(0)
    text = torch.randint(5, 64, (b, 12), generator=g)
    for i in range(b):
        n = 3 + (5 * i) % 10
        text[i, n - 1], text[i, n:] = 3, 0
    text[:, 0] = 2
    return {"image": torch.randn(b, 1, 8, 8, generator=g), "text": text}


@pytest.mark.parametrize("name", list(MASKINGS))
@pytest.mark.parametrize("world", [2, 4])
def test_each_rank_draws_its_rows_of_the_one_rank_mask(name, world):
    masking, args = MASKINGS[name]
    torch.manual_seed(0)
    model = maezoo.create_model("multimae", **SMOKE, masking=masking, masking_args=args)
    b = 3
    x = _batch(world * b)
    whole = model.sample_mask(x, generator=torch.Generator().manual_seed(7))  # what the 1-rank run draws
    assert any(bool(m.mask.any()) for m in whole.values())
    for rank in range(world):
        mine = {k: v[rank * b:(rank + 1) * b] for k, v in x.items()}
        got = global_batch_mask(model, mine, torch.Generator().manual_seed(7), rank, world)
        assert set(got) == set(whole)
        for mod, m in got.items():
            want = whole[mod].rows(rank * b, (rank + 1) * b)
            assert torch.equal(m.mask, want.mask), (mod, rank)
            assert torch.equal(m.ids_masked, want.ids_masked) and torch.equal(m.ids_keep, want.ids_keep)
            if want.masked_valid is not None:
                assert torch.equal(m.masked_valid, want.masked_valid)
        out = model(mine, mask=got)
        assert torch.isfinite(out.loss)


def test_one_rank_and_tensor_batches_keep_their_paths():
    torch.manual_seed(0)
    model = maezoo.create_model("multimae", **SMOKE)
    assert global_batch_mask(model, _batch(3), torch.Generator().manual_seed(0), 0, 1) is None
    image = maezoo.create_model("mae", **maezoo.get("model", "mae").smoke_kwargs)
    x = torch.randn(12, 1, 8, 8)
    whole = image.sample_mask(x, generator=torch.Generator().manual_seed(3))
    got = global_batch_mask(image, x[6:], torch.Generator().manual_seed(3), 1, 2)
    assert torch.equal(got.mask, whole.mask[6:])


@pytest.mark.parametrize("masking", ["random", "whole_word"])
def test_padded_text_ranks_draw_their_rows_and_never_hide_padding(masking):
    torch.manual_seed(0)
    model = maezoo.create_model("bert", **{**maezoo.get("model", "bert").smoke_kwargs, "masking": masking})
    world, b = 2, 4
    x = _batch(world * b)["text"]
    whole = model.sample_mask(x, generator=torch.Generator().manual_seed(5))
    pad = x[:, 1:] == 0
    assert not bool((whole.mask & pad).any())
    for rank in range(world):
        got = global_batch_mask(model, x[rank * b:(rank + 1) * b], torch.Generator().manual_seed(5), rank, world)
        want = whole.rows(rank * b, (rank + 1) * b)
        assert torch.equal(got.mask, want.mask) and torch.equal(got.masked_valid, want.masked_valid)
        assert torch.isfinite(model(x[rank * b:(rank + 1) * b], mask=got).loss)


def _bert():
    torch.manual_seed(0)
    return maezoo.create_model("bert", **maezoo.get("model", "bert").smoke_kwargs)


def _sharded_rank(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = fsdp.shard_model(_bert(), "fp32")
    x = _batch(2 * world)["text"][2 * rank:2 * rank + 2]
    model(x).loss.backward()  # after a step the root's parameters are sharded again
    mask = global_batch_mask(model, x, torch.Generator().manual_seed(9), rank, world)  # reads ids, embeds nothing
    gathered: list = [None] * world
    dist.all_gather_object(gathered, mask.mask)
    if rank == 0:
        torch.save(gathered, out)
    dist.barrier()
    dist.destroy_process_group()


def test_text_masks_of_an_fsdp_sharded_model(tmp_path):
    out = tmp_path / "masks.pt"
    mp.spawn(_sharded_rank, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    whole = _bert().sample_mask(_batch(4)["text"], generator=torch.Generator().manual_seed(9))
    assert torch.equal(torch.cat(torch.load(out)), whole.mask)
