"""Speed levers stay faithful: host syncs per step, one-sort masks, the dense masked loss, the CPU attention
choice and device-cached position embeddings give the plain path's masks, losses and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import maezoo
from maezoo.core import attention as att
from maezoo.core.masking import Mask, build_masking, random_bool_mask
from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.engine.trainer import Trainer, TrainerConfig
from maezoo.optim import build_optimizer

aten = torch.ops.aten
#: aten ops that make the host wait for the device (a scalar read, or an output size known only from data)
SYNC_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
            aten.unique_consecutive.default, aten._unique2.default, aten.repeat_interleave.Tensor}


class SyncCounter(TorchDispatchMode):
    """Counts host synchronisations: scalar reads (``item``/``bool``/``float``/``int`` of a tensor) and
    data-dependent shapes (``nonzero``, boolean indexing, ``masked_select``, ``unique``)."""

    def __init__(self) -> None:
        super().__init__()
        self.count, self.ops = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        bool_index = func is aten.index.Tensor and any(
            i is not None and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else []))
        if func in SYNC_OPS or bool_index:
            self.count += 1
            self.ops.append(str(func))
        return func(*args, **kwargs)


def _model(**kw):
    cfg = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=4, decoder_dim=32,
               decoder_depth=1, decoder_heads=4, mask_ratio=0.75)
    return maezoo.create_model("mae_vit", **{**cfg, **kw}).train()


def test_one_training_step_costs_at_most_two_host_syncs():
    model = _model()
    opt = build_optimizer(model, 1e-3)
    x = torch.randn(4, 3, 32, 32)
    with SyncCounter() as c:
        out = model(x, generator=torch.Generator().manual_seed(0))
        loss_now = float(out.loss.detach())  # the trainer's one read of the loss (guard + log)
        out.loss.backward()
        opt.step()
    assert math.isfinite(loss_now)
    # the tokenizer's finiteness check of the batch and the loss read; no mask, loss or optimizer sync
    assert c.count <= 2, c.ops


def test_trainer_loop_costs_at_most_two_host_syncs_per_step(tmp_path):
    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)), 0

    steps = 4
    cfg = TrainerConfig(max_steps=steps, batch_size=8, num_workers=0, progress=False, precision="fp32", threads=1,
                        warmup_steps=0, log_every=1000, ckpt_every=1000)
    trainer = Trainer(cfg)
    with SyncCounter() as c:
        trainer.fit(_model(), Images(), tmp_path, {"name": "mae_vit"})
    # per step: the batch's finiteness check and the loss read; once per run: the DataLoader iterator draws its
    # base seed with .item() on a host generator
    assert c.count <= 2 * steps + 1, c.ops


@pytest.mark.parametrize("spec", ["random", {"name": "random", "args": {"ratio": 0.6}}, "tube", "coarse", "grid",
                                  "block", "time_frequency", "node"])
def test_exact_count_matches_the_mask_and_builds_it_without_syncs(spec):
    strategy = build_masking(spec)
    grid = {"tube": (2, 4, 4), "node": (37,)}.get(spec if isinstance(spec, str) else "", (8, 8))
    g = torch.Generator().manual_seed(3)
    mask = strategy(5, grid, generator=g)
    count = strategy.exact_count(grid)
    assert count is not None and (mask.mask.sum(1) == count).all()
    # the sync-free construction gives the same index tensors as the checked (counting) one
    again = Mask.from_bool(mask.mask)
    for name in ("ids_keep", "ids_masked", "ids_restore"):
        assert torch.equal(getattr(mask, name), getattr(again, name)), name
    with SyncCounter() as c:
        strategy(5, grid, generator=torch.Generator().manual_seed(3))
    if spec != "block":  # block masking draws its rectangles on the host by design
        assert c.count == 0, c.ops


def _reference_mask(mask: torch.Tensor) -> Mask:
    """The previous construction: stable sort of the mask, argsort for ids_restore (two sorts, one sync)."""
    order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices
    n_keep = mask.shape[1] - int(mask[0].sum())
    return Mask(mask, order[:, :n_keep], order[:, n_keep:], torch.argsort(order, dim=1))


def test_mask_indices_equal_the_sorting_construction():
    g = torch.Generator().manual_seed(0)
    for b, n, m in [(1, 1, 0), (3, 10, 7), (8, 196, 147), (2, 50, 0)]:
        mask = random_bool_mask(b, n, m, g, "cpu")
        ours, ref = Mask.from_bool(mask, m), _reference_mask(mask)
        for name in ("ids_keep", "ids_masked", "ids_restore"):
            assert torch.equal(getattr(ours, name), getattr(ref, name)), (b, n, m, name)
        x = torch.arange(b * n).view(b, n)
        back = torch.gather(torch.cat([x.gather(1, ours.ids_keep), x.gather(1, ours.ids_masked)], 1), 1, ours.ids_restore)
        assert torch.equal(back, x)


def test_one_sort_random_mask_is_the_double_argsort_mask():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ours = random_bool_mask(6, 49, 36, g1, "cpu")
    noise = torch.rand(6, 49, generator=g2)
    assert torch.equal(ours, noise.argsort(1).argsort(1) < 36)


@pytest.mark.parametrize("mask_mode", ["drop", "replace"])
def test_dense_masked_loss_equals_row_selecting_loss_with_same_gradients(mask_mode):
    x = torch.randn(3, 3, 32, 32)
    model = _model(mask_mode=mask_mode)
    out = model(x, generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    out2 = model(x, mask=out.mask)
    plain = model.loss_fn(out2.pred, out2.target, out2.mask.mask)  # the bool-selecting loss (one sync)
    plain.backward()
    torch.testing.assert_close(out.loss, plain, rtol=1e-6, atol=1e-7)
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(fast[n], p.grad, rtol=1e-5, atol=1e-7, msg=n)


def test_attention_choice_by_device_precision_and_length():
    short, long_ = torch.zeros(2, 50, 8), torch.zeros(2, att.CPU_EXPLICIT_ATTENTION_MAX_TOKENS + 1, 8)
    assert att.attention_kernel(short) == "sdpa"  # fp32: SDPA
    assert att.attention_kernel(short.bfloat16()) == "explicit"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert att.attention_kernel(short) == "explicit"
        assert att.attention_kernel(long_) == "sdpa"


def test_explicit_attention_in_bf16_matches_sdpa_loss_and_gradients(monkeypatch):
    x = torch.randn(4, 3, 32, 32)
    model = _model()

    def run():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, generator=torch.Generator().manual_seed(2))
        out.loss.backward()
        return out.loss.detach(), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}

    loss_fast, g_fast = run()
    assert not model.encoder.blocks[0].attn.fused_attn and not model.decoder.blocks[0].attn.fused_attn
    monkeypatch.setattr(att, "CPU_EXPLICIT_ATTENTION_MAX_TOKENS", 0)
    loss_sdpa, g_sdpa = run()
    assert model.encoder.blocks[0].attn.fused_attn and model.decoder.blocks[0].attn.fused_attn
    torch.testing.assert_close(loss_fast, loss_sdpa, rtol=2e-2, atol=1e-3)
    for n in g_sdpa:  # bf16 rounding differs (logits rounded to bf16 before the softmax); directions agree
        cos = torch.nn.functional.cosine_similarity(g_fast[n].flatten(), g_sdpa[n].flatten(), dim=0)
        assert cos > 0.99, (n, float(cos))


def test_fp32_attention_is_sdpa_and_unchanged():
    x = torch.randn(2, 3, 32, 32)
    model = _model()
    out = model(x, generator=torch.Generator().manual_seed(0))
    assert model.encoder.blocks[0].attn.fused_attn and model.decoder.blocks[0].attn.fused_attn
    assert math.isfinite(float(out.loss.detach()))


def test_position_embedding_cached_on_device_and_dtype():
    a = sincos_pos_embed(64, (4, 4), "cpu", torch.bfloat16)
    assert a is sincos_pos_embed(64, (4, 4), torch.device("cpu"), torch.bfloat16)  # no copy per call
    torch.testing.assert_close(a, sincos_pos_embed(64, (4, 4)).bfloat16())
    with torch.inference_mode():
        b = sincos_pos_embed(32, (3, 5), "cpu", torch.float32)
    assert not b.is_inference()  # usable under autograd later
