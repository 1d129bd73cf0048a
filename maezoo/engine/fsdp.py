"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for ``trainer.distributed: fsdp``.

* Sharding: every block of every ``blocks`` list (the encoder's and the decoder's transformer blocks, a
  multi-stage encoder's stages' blocks) and every module whose class sets ``fsdp_unit = True`` (MultiMAE's
  per-modality cross-attention blocks) is one FSDP unit, then the root (tokenizer, norms, heads, tokens).
* Precision: a :class:`~torch.distributed.fsdp.MixedPrecisionPolicy` from ``trainer.precision``: parameters
  gathered in bf16/fp16 for compute, gradients reduced in fp32, the sharded master weights fp32.
* ``trainer.activation_checkpointing``: each block recomputes its activations in the backward pass.
* Checkpoints: sharded model and optimizer state through ``torch.distributed.checkpoint`` (DCP), every rank writing
  its own shards into ``checkpoints/dcp_step_<N>/``; the checkpoint folder beside it keeps the full unsharded
  weights (safetensors) for evaluation and interop. One process (``fsdp`` without torchrun) writes DCP too. DCP
  re-shards on load (its files hold every tensor's global shape and each shard's offsets), so a run resumes on
  another number of ranks, 2 -> 1 and 1 -> 2 tested: the engine keeps the saved effective batch by setting the
  per-rank batch (``trainer.batch_size``) to effective batch / (ranks x accum_steps), and every rank draws the
  masks of the whole global batch (:mod:`maezoo.engine.sample_seeding`), so the resumed run sees the samples and
  masks of the uninterrupted one; its weights agree within float rounding (a gradient averaged over two halves of
  the batch instead of summed over one). Refused: a stream of shards (its sample order depends on the number of
  ranks) and a checkpoint of a ``ddp`` run.

On a CPU the ranks use gloo (tested with 2 ranks); NCCL on GPUs is the same code path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

DCP_PREFIX = "dcp_step_"


def sharded_blocks(model: nn.Module) -> list[nn.Module]:
    """Every element of every ``nn.ModuleList`` named ``blocks`` (encoder, decoder, stages) and every module whose
    class sets ``fsdp_unit = True``, in the model's module order."""
    out: dict[int, nn.Module] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and name.rsplit(".", 1)[-1] == "blocks":
            out.update((id(b), b) for b in mod)
        elif getattr(type(mod), "fsdp_unit", False):
            out.setdefault(id(mod), mod)
    return list(out.values())


def mixed_precision(precision: str):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def shard_model(model: nn.Module, precision: str, activation_checkpointing: bool = False) -> nn.Module:
    """Shard ``model`` in place (blocks, then the root) and return it."""
    from torch.distributed.fsdp import fully_shard

    blocks = sharded_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no `blocks` lists to shard; use trainer.distributed=ddp")
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

        ids = {id(b) for b in blocks}
        apply_activation_checkpointing(model, check_fn=lambda m: id(m) in ids)
        blocks = sharded_blocks(model)
    mp = mixed_precision(precision)
    for block in blocks:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full, unsharded weights on the CPU (a collective: every rank calls it; rank 0 gets the tensors)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {_clean(k): v.detach().contiguous().clone() for k, v in sd.items()}


def _clean(key: str) -> str:
    return key.replace("_checkpoint_wrapped_module.", "")


class FullWeights:
    """What :func:`maezoo.engine.checkpoint.save_model` needs from a model: its (full) ``state_dict``."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def save_dcp(run_dir: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer, keep: set[int]) -> str:
    """Every rank writes its shards of the model and optimizer state; returns the folder's name. Old DCP folders
    not in ``keep`` (steps of the checkpoints still kept) are removed by rank 0."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(run_dir) / "checkpoints"
    name = f"{DCP_PREFIX}{step:08d}"
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(root / name), no_dist=not dist.is_initialized())
    if dist.is_initialized():
        dist.barrier()
    if not dist.is_initialized() or dist.get_rank() == 0:
        for old in root.glob(f"{DCP_PREFIX}*"):
            if int(old.name[len(DCP_PREFIX):]) not in keep | {step}:
                shutil.rmtree(old, ignore_errors=True)
    return name


def load_dcp(run_dir: Path, name: str, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Load the sharded model and optimizer state of ``checkpoints/<name>`` (re-sharded to this run's ranks)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(Path(run_dir) / "checkpoints" / name), no_dist=not dist.is_initialized())
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
