"""Meta-device initialisation: a model built on ``meta``, sharded by FSDP2 over 2 gloo ranks and materialised has the
state dict of the normally built model at the same seed, bit for bit (every modality's builder); training with
``trainer.meta_init`` is covered in tests/engine/test_fsdp.py (its weights equal the normal fsdp run's)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import maezoo
from maezoo.engine import fsdp
from maezoo.engine.meta_init import build_on_meta, is_meta, materialize, record_of

TINY_VIT = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2, decoder_dim=16,
                decoder_depth=1, decoder_heads=2)
MODELS = [
    ("mae_vit", TINY_VIT),
    ("videomae", dict(img_size=16, num_frames=4, tubelet_size=2, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                      decoder_dim=16, decoder_depth=1, decoder_heads=2)),
    ("audiomae", dict(target_frames=32, mel_bins=16, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                      decoder_dim=16, decoder_depth=1, decoder_heads=2)),
    ("convmae", dict(img_size=32, embed_dims=[8, 16, 32], depths=[1, 1, 1], num_heads=2, decoder_dim=16,
                     decoder_depth=1, decoder_heads=2)),
    ("bert_tiny", {}),
    ("patchtst", dict(patch_len=8, embed_dim=16, num_heads=2, depth=1, pos_embed="sincos")),
    ("graphmae", dict(in_dim=8, hidden=16, num_layers=2, heads=2)),
]


def _normal(name: str, kwargs: dict, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return maezoo.create_model(name, **kwargs)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"{len(bad)} of {len(a)} tensors differ: {bad[:4]}"


@pytest.mark.parametrize(("name", "kwargs"), MODELS, ids=[m[0] for m in MODELS])
def test_meta_build_equals_the_normal_build(name, kwargs):
    ref = _normal(name, kwargs, seed=3)
    before = torch.get_rng_state()
    model = build_on_meta(lambda: maezoo.create_model(name, **kwargs), seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is left alone
    assert is_meta(model) and all(p.device.type == "meta" for p in model.parameters())
    materialize(model)
    assert not is_meta(model)
    _equal(model.state_dict(), ref.state_dict())


def test_a_model_not_built_on_meta_is_refused_with_the_fix():
    model = _normal("mae_vit", TINY_VIT, 0).to("meta")
    with pytest.raises(ValueError, match="build_on_meta"):
        materialize(model)

    class FromNumpy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("table", torch.from_numpy(np.ones(3, dtype=np.float32)))

    with pytest.raises(ValueError, match="meta_init=false"):
        build_on_meta(FromNumpy)


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    results = {}
    for checkpointing in (False, True):
        model = build_on_meta(lambda: maezoo.create_model("mae_vit", **TINY_VIT), seed=3)
        record = record_of(model)
        fsdp.shard_model(model, "fp32", activation_checkpointing=checkpointing)
        materialize(model, "cpu", record)
        local = {n: p.to_local().numel() for n, p in model.named_parameters() if "blocks" in n}
        state = fsdp.full_state(model)
        # it trains: one AdamW step on the sharded model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss = model(torch.randn(4, 1, 16, 16), generator=torch.Generator().manual_seed(rank)).loss
        loss.backward()
        opt.step()
        moved = fsdp.full_state(model)
        results[checkpointing] = (state, sum(local.values()), moved)
    if rank == 0:
        torch.save(results, out)
    dist.barrier()  # every rank done communicating before gloo tears down (else a rank may abort at exit)
    dist.destroy_process_group()


def test_meta_init_under_fsdp_equals_the_normal_build_on_two_ranks(tmp_path):
    out = tmp_path / "state.pt"
    mp.spawn(_rank, args=(2, 29551, str(out)), nprocs=2, join=True)
    ref = _normal("mae_vit", TINY_VIT, 3)
    block_params = sum(p.numel() for n, p in ref.named_parameters() if "blocks" in n)
    for checkpointing, (state, local, moved) in torch.load(out).items():
        _equal(state, ref.state_dict())
        assert local == block_params // 2, f"activation checkpointing {checkpointing}: blocks not sharded in two"
        changed = [k for k in state if not torch.equal(state[k], moved[k])]
        assert len(changed) > len(state) // 2  # the optimiser step moved the weights


def test_trainer_meta_init_trains_to_the_weights_of_the_normal_build(tmp_path):
    from maezoo.engine.trainer import Trainer, TrainerConfig

    data = [(torch.randn(1, 16, 16), 0) for _ in range(16)]
    spec = {"name": "mae_vit", "kwargs": TINY_VIT}
    weights = {}
    for meta in (False, True):
        cfg = TrainerConfig(max_steps=3, batch_size=4, num_workers=0, progress=False, threads=1, precision="fp32",
                            device="cpu", warmup_steps=1, meta_init=meta)
        model = _normal("mae_vit", TINY_VIT, seed=7)
        Trainer(cfg, seed=7).fit(model, data, tmp_path / str(meta), spec)
        weights[meta] = model.state_dict()
    _equal(weights[True], weights[False])
    # a model built by build_on_meta is materialised by the trainer (no full build anywhere)
    model = build_on_meta(lambda: maezoo.create_model("mae_vit", **TINY_VIT), seed=7)
    cfg = TrainerConfig(max_steps=3, batch_size=4, num_workers=0, progress=False, threads="auto", precision="fp32",
                        device="cpu", warmup_steps=1)
    Trainer(cfg, seed=7).fit(model, data, tmp_path / "built", spec)
    _equal(model.state_dict(), weights[False])
