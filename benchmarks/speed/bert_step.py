"""Side-by-side speed of one BERT masked-language-modelling pre-training step: maezoo vs. Hugging Face transformers.

The step is BERT-Base pre-training at sequence length 128 (12 x 768, 12 heads, MLP 3072, 30,522 pieces, dropout
0.1): 15% of the real non-special pieces selected, 80/10/10 mask/random/keep, cross-entropy on the selected pieces,
one forward + backward + ``torch.optim.AdamW`` step (the same optimizer for both) on the same batch (a share
``--pad`` of each row is padding). Masks are drawn inside the timed step for both (maezoo in its forward, the peer
as ``DataCollatorForLanguageModeling`` does, in torch ops). Entries run interleaved in this one process (order
reversed on every other repeat); each figure is the median over ``--repeats`` timed steps after ``--warmup``.

Entries (transformers is not a maezoo dependency: ``pip install transformers``):

* ``maezoo``: ``maezoo.create_model("bert_base")`` (post-norm layers of timm's Attention/Mlp, SDPA with the padding
  mask, the vocabulary head on the selected pieces only).
* ``transformers``: ``BertForMaskedLM`` (``attn_implementation="sdpa"``), labels -100 outside the selection.

Usage::

    python benchmarks/speed/bert_step.py --batch 8 --repeats 5          # CPU, fp32
    python benchmarks/speed/bert_step.py --device cuda --precision bf16 --batch 64

Prints one line per entry and the ratio (peer time / maezoo time; above 1: maezoo is faster) and writes the JSON
(``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
V, PAD, UNK, CLS, SEP, MASK = 30522, 0, 100, 101, 102, 103


def batch(b: int, n: int, pad_share: float, seed: int = 0) -> Tensor:
    """``[CLS] pieces [SEP] [PAD]...`` rows; row ``i`` has ``n - round(pad_share * n * i / (b - 1))`` ids."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1000, V, (b, n), generator=g)
    for i in range(b):
        length = n - round(pad_share * n * i / max(b - 1, 1))
        x[i, 0], x[i, length - 1] = CLS, SEP
        x[i, length:] = PAD
    return x


def build_maezoo() -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    import maezoo

    model = maezoo.create_model("bert_base", dropout=0.1)
    return model, lambda x: model(x).loss


def hf_mask(x: Tensor, rate: float = 0.15) -> tuple[Tensor, Tensor]:
    """``DataCollatorForLanguageModeling``'s draw (Bernoulli 15% of non-special pieces, 80/10/10) in torch ops."""
    special = (x == PAD) | (x == CLS) | (x == SEP)
    prob = torch.full(x.shape, rate).masked_fill(special, 0.0)
    selected = torch.bernoulli(prob).bool()
    labels = x.masked_fill(~selected, -100)
    replaced = torch.bernoulli(torch.full(x.shape, 0.8)).bool() & selected
    inputs = x.masked_fill(replaced, MASK)
    rand = torch.bernoulli(torch.full(x.shape, 0.5)).bool() & selected & ~replaced
    return torch.where(rand, torch.randint(V, x.shape), inputs), labels


def build_transformers() -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=V, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1)
    model = BertForMaskedLM._from_config(config, attn_implementation="sdpa")

    def loss(x: Tensor) -> Tensor:
        inputs, labels = hf_mask(x)
        return model(input_ids=inputs, attention_mask=(x != PAD).long(), labels=labels).loss

    return model, loss


def step(model: nn.Module, loss_fn: Callable[[Tensor], Tensor], opt: torch.optim.Optimizer, x: Tensor,
         ctx: Callable[[], contextlib.AbstractContextManager]) -> float:
    t0 = time.perf_counter()
    with ctx():
        loss = loss_fn(x)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--pad", type=float, default=0.25, help="largest share of padding in a row")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "bert_step_cpu.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    x = batch(a.batch, a.seq, a.pad).to(dev)

    def ctx() -> contextlib.AbstractContextManager:
        if a.precision == "bf16":
            return torch.autocast(dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    entries = {}
    for name, build in (("maezoo", build_maezoo), ("transformers", build_transformers)):
        torch.manual_seed(0)
        model, loss_fn = build()
        model.to(dev).train()
        entries[name] = (model, loss_fn, torch.optim.AdamW(model.parameters(), lr=1e-4))
    times: dict[str, list[float]] = {n: [] for n in entries}
    for r in range(a.warmup + a.repeats):
        order = list(entries) if r % 2 == 0 else list(reversed(entries))
        for name in order:
            t = step(*entries[name], x, ctx)
            if r >= a.warmup:
                times[name].append(t)
    med = {n: statistics.median(t) for n, t in times.items()}
    out = {
        "batch": a.batch, "seq": a.seq, "pad": a.pad, "precision": a.precision, "device": str(dev),
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "median_s": med, "min_max_s": {n: [min(t), max(t)] for n, t in times.items()},
        "ratio_transformers_over_maezoo": med["transformers"] / med["maezoo"],
    }
    for n in entries:
        print(f"{n:>13}: {med[n] * 1000:8.1f} ms/step (median of {a.repeats}; min-max "
              f"{min(times[n]) * 1000:.1f}-{max(times[n]) * 1000:.1f})")
    print(f"ratio transformers / maezoo: {out['ratio_transformers_over_maezoo']:.2f} (above 1: maezoo faster)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
