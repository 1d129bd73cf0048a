"""WebDataset shards as an engine data source: 2 gloo ranks x 2 loader workers over 4 shards see every sample
exactly once per epoch, a resumed stream restarts at the same sample (also through the Trainer), corrupt samples
and truncated shards are skipped and counted, and ``maezoo shard`` writes shards from a registered dataset."""

from __future__ import annotations

import argparse
import os
import tarfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import maezoo
from maezoo.data.shards import ShardDataset, read_index, write_shards
from maezoo.engine.trainer import Trainer, TrainerConfig

N, PER_SHARD, BS = 64, 16, 4


def _write(folder: Path, n: int = N) -> Path:
    data = [(torch.full((1, 8, 8), float(i)), i % 3) for i in range(n)]
    write_shards(data, folder, maxcount=PER_SHARD)
    return folder


def _ids(batch) -> list[int]:
    return batch[0][:, 0, 0, 0].long().tolist()


def _rank_epochs(rank: int, world: int, folder: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ds = ShardDataset(folder, "tensor", seed=5, shuffle_buffer=8)
    per_epoch = ds.batches_per_epoch(world, 2, BS)
    it = iter(ds.make_loader(rank, world, BS, 0, num_workers=2))
    epochs = [[i for _ in range(per_epoch) for i in _ids(next(it)[0])] for _ in range(2)]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, epochs)
    if rank == 0:
        torch.save(gathered, out)
    dist.barrier()  # every rank done communicating before gloo tears down (else a rank may abort at exit)
    dist.destroy_process_group()


def test_two_ranks_two_workers_see_every_sample_once_per_epoch(tmp_path):
    folder = _write(tmp_path / "shards")
    assert len(read_index(folder)) == 4
    out = tmp_path / "seen.pt"
    mp.spawn(_rank_epochs, args=(2, str(folder), 29533, str(out)), nprocs=2, join=True)
    per_rank = torch.load(out)
    for epoch in range(2):
        seen = per_rank[0][epoch] + per_rank[1][epoch]
        assert sorted(seen) == list(range(N)), f"epoch {epoch}: not every sample exactly once"
        assert len(per_rank[0][epoch]) == len(per_rank[1][epoch])  # equal batches per rank
    assert per_rank[0][0] != per_rank[0][1]  # reshuffled between epochs


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_stream_restarts_at_the_same_sample(tmp_path, workers):
    ds = ShardDataset(_write(tmp_path / "s"), "tensor", seed=1, shuffle_buffer=8)
    full_it = iter(ds.make_loader(1, 2, BS, 0, workers))
    full = [_ids(next(full_it)[0]) for _ in range(20)]  # crosses epochs (8 batches per rank and epoch)
    for start in (3, 9):
        it = iter(ds.make_loader(1, 2, BS, start, workers))
        assert [_ids(next(it)[0]) for _ in range(20 - start)] == full[start:]


def test_trainer_resumes_mid_epoch_on_shards(tmp_path):
    folder = _write(tmp_path / "s")

    def fit(run: Path, resume: bool, stop: int = 0):
        torch.manual_seed(0)
        model = maezoo.create_model("mae_vit", img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1,
                                    num_heads=2, decoder_dim=16, decoder_depth=1, decoder_heads=2)
        cfg = TrainerConfig(max_steps=10, batch_size=BS, num_workers=2, ckpt_every=2, progress=False, threads=1,
                            precision="fp32", device="cpu", warmup_steps=1, stop_after=stop)
        ds = ShardDataset(folder, "tensor", seed=0, shuffle_buffer=8)
        s = Trainer(cfg).fit(model, ds, run, {"name": "mae_vit"}, resume=resume)
        return model, s

    ref, s = fit(tmp_path / "ref", False)
    assert s.steps == 10 and s.bad_samples == 0
    fit(tmp_path / "cut", False, stop=5)  # killed mid-epoch (16 batches per epoch); last checkpoint at step 4
    resumed, s2 = fit(tmp_path / "cut", True)
    assert s2.resumed_from == 4 and s2.steps == 10
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_corrupt_samples_and_truncated_shards_are_counted(tmp_path):
    folder = _write(tmp_path / "s")
    # a sample whose .npy is garbage, and a shard cut off after its first members
    shard0 = folder / "shard-000000.tar"
    with tarfile.open(shard0) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(shard0, "w") as tf:
        for m, data in members:
            if m.name.endswith("000000003.npy"):
                data = b"not an array"
                m.size = len(data)
            import io

            tf.addfile(m, io.BytesIO(data))
    shard1 = folder / "shard-000001.tar"
    shard1.write_bytes(shard1.read_bytes()[:5000])
    ds = ShardDataset(folder, "tensor", seed=0, shuffle=False)
    it = iter(ds.make_loader(0, 1, BS, 0, 0))
    bad = good = 0
    with pytest.warns(UserWarning):
        for _ in range(ds.batches_per_epoch(1, 1, BS)):
            batch, n_bad, _ = next(it)
            bad += n_bad
            good += 0 if batch is None else len(batch[0])
    assert good + bad == N and 1 + 1 <= bad < PER_SHARD + 1


def test_shard_command_writes_a_registered_dataset(tmp_path):
    from maezoo.shard_cmd import add_parser, main

    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers(dest="cmd"))
    args = ap.parse_args(["shard", "digits", str(tmp_path / "d"), "--arg", "image_size=8", "--maxcount", "500"])
    assert main(args) == 0
    ds = maezoo.build("dataset", "shards", source=str(tmp_path / "{split}".replace("{split}", "d")))
    src = maezoo.build("dataset", "digits", split="train", image_size=8)
    assert len(ds) == len(src) and len(read_index(tmp_path / "d")) == -(-len(src) // 500)
    batch, bad, _ = next(iter(ds.make_loader(0, 1, 8, 0, 0)))
    assert bad == 0 and batch[0].shape == (8, *src[0][0].shape)
    with pytest.raises(SystemExit, match="unknown dataset"):
        main(ap.parse_args(["shard", "nope", str(tmp_path / "x")]))
