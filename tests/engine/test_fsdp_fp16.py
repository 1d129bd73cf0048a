"""fp16 loss scaling under FSDP2 on 2 gloo ranks: the engine's step helper (``maezoo.step.OptimStep``, torch's
``GradScaler``) scales the loss of a model sharded with an fp16 ``MixedPrecisionPolicy``; an overflow in one rank's
gradient shard makes *every* rank skip that update and halve its scale (the non-finite check runs on the DTensor
gradients, so its result is agreed over the ranks), and training goes on in lockstep.

On a CPU the Trainer refuses ``precision: fp16`` (``maezoo.runtime.resolve_precision``: fp16 is for GPUs), so this
test drives the step helper directly; the Trainer run ``trainer.precision=fp16 trainer.distributed=fsdp`` on CUDA
with NCCL is left to a GPU."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import maezoo
from maezoo.engine import fsdp
from maezoo.step import OptimStep

KW = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2, decoder_dim=16, decoder_depth=1,
          decoder_heads=2)


def _local(model) -> dict[str, torch.Tensor]:
    return {n: p.to_local().detach().clone() for n, p in model.named_parameters()}


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = fsdp.shard_model(maezoo.create_model("mae_vit", **KW), "fp16")
    stepper = OptimStep(torch.optim.AdamW(model.parameters(), lr=1e-3), "fp16", "cpu")
    log = []
    for step in range(4):
        before = _local(model)
        stepper.zero_grad()
        with stepper.autocast():
            res = model(torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(10 * step + rank)),
                        generator=torch.Generator().manual_seed(step))
        stepper.backprop(res.loss)
        if step == 1 and rank == 1:  # an overflow in rank 1's shard of one gradient only
            next(iter(model.parameters())).grad.to_local().view(-1)[0] = float("inf")
        stepper.update(step, float(res.loss.detach()))
        after = _local(model)
        moved = any(not torch.equal(before[k], after[k]) for k in before)  # this rank's shards
        log.append({"scale": stepper.scaler.get_scale(), "moved": moved,
                    "dtype": str(res.pred.dtype), "loss": float(res.loss.detach())})
    gathered: list = [None] * world
    dist.all_gather_object(gathered, log)
    if rank == 0:
        torch.save(gathered, out)
    dist.barrier()  # every rank done communicating before gloo tears down (else a rank may abort at exit)
    dist.destroy_process_group()


def test_fp16_loss_scaling_under_fsdp_skips_an_overflow_on_every_rank(tmp_path):
    out = tmp_path / "log.pt"
    mp.spawn(_rank, args=(2, 29581, str(out)), nprocs=2, join=True)
    logs = torch.load(out)
    for log in logs:
        assert log[0]["dtype"] == "torch.float16"  # computed in fp16 (gathered fp16 parameters, autocast)
        assert [e["scale"] for e in log] == [65536.0, 32768.0, 32768.0, 32768.0]
        assert [e["moved"] for e in log] == [True, False, True, True]  # step 1 skipped
        assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log)
