"""FSDP2 on a several-modality model with MultiMAE's per-modality decoders: every transformer block and every
cross-attention block of the decoders is an FSDP unit of its own (``fsdp_unit``). 2 gloo ranks, each on half of
the batch and drawing its rows of the global batch's masks on the sharded model (the engine's
``global_batch_mask``), end with the weights of one unsharded process that draws the whole batch's masks and
averages the two halves' losses."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import maezoo
from maezoo.core.multimodal import _CrossBlock
from maezoo.engine import fsdp
from maezoo.engine.sample_seeding import global_batch_mask

KW = {**maezoo.get("model", "multimae").smoke_kwargs, "decoder": "per_modality", "embed_dim": 32, "num_heads": 2,
      "decoder_dim": 16, "decoder_depth": 1}
STEPS = 3


def _model():
    torch.manual_seed(0)
    return maezoo.create_model("multimae", **KW)


def _half(step: int, rank: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s half of step ``step``'s batch: 4 images and captions of different lengths."""
    g = torch.Generator().manual_seed(100 * step + rank)
    text = torch.randint(5, 64, (4, 12), generator=g)
    for i, n in enumerate((12, 9, 6, 4)):
        text[i, n - 1], text[i, n:] = 3, 0
    text[:, 0] = 2
    return {"image": torch.randn(4, 1, 8, 8, generator=g), "text": text}


def _mask_gen(step: int) -> torch.Generator:
    return torch.Generator().manual_seed(10 * step)


def _rank(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = _model()
    units = fsdp.sharded_blocks(model)
    model = fsdp.shard_model(model, "fp32")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(STEPS):
        opt.zero_grad()
        x = _half(step, rank)
        model(x, mask=global_batch_mask(model, x, _mask_gen(step), rank, world)).loss.backward()
        opt.step()
    from torch.distributed.fsdp import FSDPModule

    crosses = [m for m in units if isinstance(m, _CrossBlock)]
    state = fsdp.full_state(model)
    if rank == 0:
        torch.save({"state": state, "crosses": len(crosses), "sharded": all(isinstance(m, FSDPModule) for m in units)},
                   out)
    dist.barrier()
    dist.destroy_process_group()


def _reference() -> dict[str, torch.Tensor]:
    """SGD, not Adam: Adam scales the attention key biases' gradient, zero up to rounding (softmax ignores a shift
    shared by all keys), to a full step, so rounding noise alone would move them apart."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(STEPS):
        opt.zero_grad()
        halves = [_half(step, r) for r in range(2)]
        whole = model.sample_mask({k: torch.cat([h[k] for h in halves]) for k in halves[0]}, _mask_gen(step))
        loss = sum(model(h, mask={k: m.rows(4 * r, 4 * r + 4) for k, m in whole.items()}).loss
                   for r, h in enumerate(halves)) / 2
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_cross_attention_blocks_are_fsdp_units():
    units = fsdp.sharded_blocks(_model())
    crosses = [m for m in units if isinstance(m, _CrossBlock)]
    assert len(crosses) == 2  # one per modality decoder
    assert len(units) == len({id(m) for m in units}) == 1 + 2 * (1 + 1)  # encoder block; per modality: cross + block


def test_two_fsdp_ranks_equal_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "state.pt"
    mp.spawn(_rank, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    assert got["crosses"] == 2 and got["sharded"]
    want, start = _reference(), _model().state_dict()
    assert got["state"].keys() == want.keys()
    moved = [(want[k] - start[k]).abs().max().item() for k in want if want[k].is_floating_point()]
    assert min(moved) > 1e-3  # every weight moved by 100 x the tolerance
    bad = {k: (got["state"][k] - want[k]).abs().max().item() for k in want
           if not torch.allclose(got["state"][k], want[k], atol=1e-5, rtol=1e-5)}
    assert not bad, f"{len(bad)} of {len(want)} tensors differ: {dict(list(bad.items())[:4])}"
