"""Side-by-side speed of one image-MAE pre-training step: maezoo vs. Hugging Face transformers vs. lightly.

The step is MAE pre-training as in the paper: ViT-B/16 (``--model large``: ViT-L/16) at 224², mask ratio 0.75,
norm-pix loss, decoder 8 x 512 (16 heads, MLP ratio 4), one forward + backward + AdamW step on the same
synthetic batch of the real shape. Every entry runs in this one process, interleaved (order reversed on every
other repeat, so slow drifts of a shared machine cancel out); each figure is the median over ``--repeats``
timed steps after ``--warmup`` untimed ones, with the spread (min-max), in fp32 and under bf16 autocast.

Entries (transformers and lightly are *not* maezoo dependencies: ``pip install transformers lightly`` for the
measurement; an entry that cannot be built is skipped with a message):

* ``maezoo``: ``maezoo.create_model("mae_vit_base_patch16")`` with the optimizer maezoo's engine builds
  (:func:`maezoo.optim.build_optimizer`: AdamW, fused kernel where it exists, MAE's decay groups).
* ``transformers``: ``ViTMAEForPreTraining`` (``attn_implementation="sdpa"``, norm-pix) + ``torch.optim.AdamW``.
* ``lightly``: ``MaskedVisionTransformerTIMM`` + ``MAEDecoderTIMM`` wired as lightly's MAE example does, plus
  MAE's norm-pix target, + ``torch.optim.AdamW`` (as the example).
* ``--levers``: maezoo with one speed lever turned off each (``maezoo/sdpa-attention``: fused SDPA attention
  everywhere; ``maezoo/plain-adamw``: ``torch.optim.AdamW`` defaults as the peers) and the asymmetric design's
  counterpart (``maezoo/mask-tokens-in-encoder``: replace mode, the encoder runs on all N tokens with mask tokens,
  the same decoder), so each lever's share is measured in the same run.
* ``--compile``: each entry again under ``torch.compile`` (name suffix ``+compile``; compile time excluded).

Besides time: images/s, ratio to the best peer (its time / ours), FLOPs of one forward + backward from
``torch.utils.flop_counter.FlopCounterMode`` (the optimizer's few element-wise FLOPs not counted), achieved
GFLOP/s against the dense matmul peak measured in the same run (2048² ``mm``, fp32 and bf16), and memory:
the peak allocated on CUDA, on a CPU the bytes saved for backward (activations and
autocast's weight copies, unique storages, parameters themselves excluded).

Usage::

    python benchmarks/speed/mae_step.py --levers                      # CPU: all entries, fp32 and bf16, batch 8
    python benchmarks/speed/mae_step.py --precision bf16 --repeats 3 --entries maezoo,lightly
    python benchmarks/speed/mae_step.py --render benchmarks/speed/results/mae_step_cpu.json

Writes the JSON (``--out``), a Markdown table next to it (same name, ``.md``) and, with ``--readme``, that table
into ``benchmarks/speed/README.md`` between the ``<!-- mae_step:<tag> -->`` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
PEERS = ("transformers", "lightly")
CFG = dict(patch_size=16, mlp_ratio=4.0, decoder_dim=512, decoder_depth=8, decoder_heads=16, mask_ratio=0.75,
           norm_pix_loss=True)
#: encoder sizes; an entry may also override the decoder of ``CFG`` (``toy``: dry runs of the GPU benchmark)
SIZES = {"base": dict(embed_dim=768, depth=12, num_heads=12), "large": dict(embed_dim=1024, depth=24, num_heads=16),
         "toy": dict(embed_dim=32, depth=2, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2)}


def arch(size: str) -> dict:
    """``CFG`` with the encoder (and any decoder override) of ``SIZES[size]``."""
    return {**CFG, **SIZES[size]}
OPT = dict(lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)


@dataclass
class Entry:
    """One timed configuration: a model, its loss on a batch, its optimizer and a context for each step."""

    model: nn.Module
    loss_fn: Callable[[Tensor], Tensor]
    opt: torch.optim.Optimizer
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    optimizer: str = "torch.optim.AdamW (defaults)"
    timings: dict[str, list[float]] = field(default_factory=dict)


def _peer_opt(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **OPT)


# ------------------------------------------------------------------------------------------------
# maezoo and its lever variants
# ------------------------------------------------------------------------------------------------
def build_maezoo(size: str, image_size: int, variant: str = "") -> Entry:
    import maezoo
    from maezoo.core import attention as att
    from maezoo.optim import build_optimizer

    a = arch(size)
    model = maezoo.create_model(
        "mae_vit", img_size=image_size, patch_size=a["patch_size"], embed_dim=a["embed_dim"], depth=a["depth"],
        num_heads=a["num_heads"], mlp_ratio=a["mlp_ratio"], mask_ratio=a["mask_ratio"],
        norm_pix_loss=a["norm_pix_loss"], decoder_dim=a["decoder_dim"], decoder_depth=a["decoder_depth"],
        decoder_heads=a["decoder_heads"], mask_mode="replace" if variant == "mask-tokens-in-encoder" else "drop",
    )
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    if variant == "sdpa-attention":
        @contextlib.contextmanager
        def context():  # SDPA in the input's dtype at every length: the CPU attention lever off
            old, att.CPU_EXPLICIT_ATTENTION_MAX_TOKENS = att.CPU_EXPLICIT_ATTENTION_MAX_TOKENS, 0
            try:
                yield
            finally:
                att.CPU_EXPLICIT_ATTENTION_MAX_TOKENS = old
    if variant == "plain-adamw":
        return Entry(model, lambda x: model(x).loss, _peer_opt(model), context)
    opt = build_optimizer(model, OPT["lr"], OPT["weight_decay"], OPT["betas"])
    fused = bool(opt.defaults.get("fused"))
    return Entry(model, lambda x: model(x).loss, opt, context,
                 optimizer=f"maezoo.optim.build_optimizer (AdamW{', fused' if fused else ''}, MAE decay groups)")


def build_transformers(size: str, image_size: int) -> Entry:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    s = arch(size)
    config = ViTMAEConfig(
        image_size=image_size, patch_size=s["patch_size"], num_channels=3, hidden_size=s["embed_dim"],
        num_hidden_layers=s["depth"], num_attention_heads=s["num_heads"],
        intermediate_size=int(s["embed_dim"] * s["mlp_ratio"]), qkv_bias=True, layer_norm_eps=1e-6,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, decoder_hidden_size=s["decoder_dim"],
        decoder_num_hidden_layers=s["decoder_depth"], decoder_num_attention_heads=s["decoder_heads"],
        decoder_intermediate_size=int(s["decoder_dim"] * s["mlp_ratio"]), mask_ratio=s["mask_ratio"],
        norm_pix_loss=s["norm_pix_loss"],
    )
    model = ViTMAEForPreTraining._from_config(config, attn_implementation="sdpa")
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        raise RuntimeError("transformers ViTMAE did not take attn_implementation='sdpa'")
    return Entry(model, lambda x: model(pixel_values=x).loss, _peer_opt(model))


def build_lightly(size: str, image_size: int) -> Entry:
    from timm.models.vision_transformer import VisionTransformer

    with warnings.catch_warnings():  # MAEDecoderTIMM is deprecated in lightly 1.6 (still the example's module)
        warnings.simplefilter("ignore")
        from lightly.models import utils
        from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM
    s = arch(size)

    class LightlyMAE(nn.Module):
        """lightly's ``examples/pytorch/mae.py`` model, with MAE's norm-pix target."""

        def __init__(self) -> None:
            super().__init__()
            vit = VisionTransformer(img_size=image_size, patch_size=s["patch_size"], embed_dim=s["embed_dim"],
                                    depth=s["depth"], num_heads=s["num_heads"], mlp_ratio=s["mlp_ratio"],
                                    num_classes=0)  # timm's vit_*_patch16_224, classifier head dropped (unused)
            self.mask_ratio, self.patch_size = s["mask_ratio"], vit.patch_embed.patch_size[0]
            self.backbone = MaskedVisionTransformerTIMM(vit=vit)
            self.sequence_length = self.backbone.sequence_length
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.decoder = MAEDecoderTIMM(
                    num_patches=vit.patch_embed.num_patches, patch_size=self.patch_size, embed_dim=vit.embed_dim,
                    decoder_embed_dim=s["decoder_dim"], decoder_depth=s["decoder_depth"],
                    decoder_num_heads=s["decoder_heads"], mlp_ratio=s["mlp_ratio"], proj_drop_rate=0.0,
                    attn_drop_rate=0.0,
                )
            self.criterion = nn.MSELoss()

        def forward(self, images: Tensor) -> Tensor:
            b = images.shape[0]
            idx_keep, idx_mask = utils.random_token_mask(size=(b, self.sequence_length), mask_ratio=self.mask_ratio,
                                                         device=images.device)
            x_encoded = self.backbone.encode(images=images, idx_keep=idx_keep)
            x_decode = self.decoder.embed(x_encoded)
            x_masked = utils.repeat_token(self.decoder.mask_token, (b, self.sequence_length))
            x_masked = utils.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
            x_decoded = self.decoder.decode(x_masked)
            x_pred = self.decoder.predict(utils.get_at_index(x_decoded, idx_mask))
            with torch.no_grad():
                target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)
                mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
                target = (target - mean) / (var + 1e-6) ** 0.5  # MAE's norm_pix_loss (not in lightly's example)
            return self.criterion(x_pred.float(), target.float())

    model = LightlyMAE()
    return Entry(model, model, _peer_opt(model))


def build(name: str, size: str, image_size: int) -> Entry:
    base, _, variant = name.partition("/")
    if base == "maezoo":
        return build_maezoo(size, image_size, variant)
    return {"transformers": build_transformers, "lightly": build_lightly}[base](size, image_size)


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def one_step(e: Entry, x: Tensor, precision: str) -> float:
    """Seconds of zero_grad + forward + loss + backward + optimizer step (the device synchronised around it)."""
    _sync(x.device)
    t0 = time.perf_counter()
    with e.context():
        e.opt.zero_grad(set_to_none=True)
        with _autocast(x.device, precision):
            loss = e.loss_fn(x)
        loss.backward()
        e.opt.step()
    _sync(x.device)
    dt = time.perf_counter() - t0
    if not math.isfinite(float(loss.detach())):
        raise RuntimeError(f"non-finite loss {float(loss)}")
    return dt


def flops_and_memory(e: Entry, x: Tensor, precision: str) -> tuple[int, int]:
    """FLOPs of one forward + backward (FlopCounterMode) and its memory (CUDA peak, else bytes saved for backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    saved: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in e.model.parameters()}

    def pack(t: Tensor) -> Tensor:
        try:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:  # activations only, not the weights themselves
                saved[ptr] = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
    counter = FlopCounterMode(display=False)
    with e.context(), counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        e.opt.zero_grad(set_to_none=True)
        with _autocast(x.device, precision):
            loss = e.loss_fn(x)
        loss.backward()
    e.opt.zero_grad(set_to_none=True)
    mem = torch.cuda.max_memory_allocated(x.device) if x.device.type == "cuda" else sum(saved.values())
    return int(counter.get_total_flops()), int(mem)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of an ``n x n`` matrix product on ``device`` in ``dtype``."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    ts = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(ts) / 1e9


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def summarise(data: dict) -> None:
    """Medians, spreads, images/s, ratios to the best peer, GFLOP/s and utilisation, in place."""
    batch = data["config"]["batch"]
    for prec in data["config"]["precisions"]:
        rows = data["results"].setdefault(prec, {})
        for name, e in data["entries"].items():
            ts = e["timings"].get(prec)
            if not ts:
                continue
            med = statistics.median(ts)
            flops = e.get("flops")
            rows[name] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "images_per_s": batch / med,
                          "gflops_per_s": flops / med / 1e9 if flops else None}
            peak = data["matmul_peak_gflops"].get(prec)
            rows[name]["utilisation"] = rows[name]["gflops_per_s"] / peak if flops and peak else None
        peers = [rows[n]["median_s"] for n in rows if n.split("+")[0] in PEERS and "+compile" not in n]
        best = min(peers) if peers else None
        for r in rows.values():
            r["speedup_vs_best_peer"] = best / r["median_s"] if best else None
        if "maezoo" in rows and "maezoo/mask-tokens-in-encoder" in rows:
            data.setdefault("asymmetric_speedup", {})[prec] = (rows["maezoo/mask-tokens-in-encoder"]["median_s"]
                                                               / rows["maezoo"]["median_s"])


def render_markdown(data: dict) -> str:
    cfg = data["config"]
    lines = [
        f"MAE {cfg['model']} ({cfg['size']}) at {cfg['image_size']}², batch {cfg['batch']}, mask {cfg.get('mask_ratio', CFG['mask_ratio'])}, "
        f"norm-pix loss, decoder {cfg.get('decoder_depth', CFG['decoder_depth'])} × {cfg.get('decoder_dim', CFG['decoder_dim'])}; zero_grad + forward + backward + "
        f"AdamW step; median of {cfg['repeats']} after {cfg['warmup']} warm-up (spread min–max), entries "
        "interleaved in one process.",
        "",
        f"Device: {data['device_name']}; `torch.backends.cpu.get_cpu_capability()` = `{data['cpu_capability']}`; "
        f"{data['threads']} threads; torch {data['versions']['torch']}"
        + "".join(f", {k} {v}" for k, v in data["versions"].items() if k not in ("torch", "python") and v) + ".",
        "Dense matmul peak measured in the same run (2048²): "
        + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in data["matmul_peak_gflops"].items()) + ".",
        "",
        "| entry | precision | s/step (min–max) | images/s | speed-up vs best peer | GFLOP/s (share of peak) "
        "| FLOPs fwd+bwd | memory | optimizer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    mem_label = "peak allocated" if data["device"] == "cuda" else "saved for backward"
    for prec in cfg["precisions"]:
        for name, r in data["results"].get(prec, {}).items():
            e = data["entries"][name]
            util = f"{r['gflops_per_s']:.0f} ({r['utilisation']:.0%})" if r.get("utilisation") else "–"
            sp = f"{r['speedup_vs_best_peer']:.2f}×" if r.get("speedup_vs_best_peer") else "–"
            mem = f"{e['memory'].get(prec, 0) / 2**30:.2f} GiB {mem_label}" if e.get("memory", {}).get(prec) else "–"
            lines.append(f"| {name} | {prec} | {r['median_s']:.3f} ({r['min_s']:.3f}–{r['max_s']:.3f}) | "
                         f"{r['images_per_s']:.2f} | {sp} | {util} | {e.get('flops', 0) / 1e9:.0f} G | {mem} | "
                         f"{e['optimizer']} |")
    if data.get("asymmetric_speedup"):
        lines += ["", "Asymmetric design (step time with mask tokens through the encoder / with the encoder on visible "
                  "tokens only): " + ", ".join(f"{p} {v:.2f}×" for p, v in data["asymmetric_speedup"].items()) + "."]
    if data.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in data["skipped"].items())]
    la = data.get("loadavg_1min") or {}
    if la.get("start") is not None:
        lines += ["", f"1-minute load average at start / end: {la['start']:.1f} / {la['end']:.1f} on {data['threads']} "
                  "threads (above the thread count: other processes shared the cores; compare the interleaved ratios)."]
    lines += ["", f"Command: `{data['command']}`"]
    return "\n".join(lines) + "\n"


def write_readme_section(md: str, tag: str, readme: Path = HERE / "README.md") -> None:
    """Replace the text between ``<!-- mae_step:<tag> -->`` and ``<!-- /mae_step:<tag> -->`` in the README."""
    begin, end = f"<!-- mae_step:{tag} -->", f"<!-- /mae_step:{tag} -->"
    text = readme.read_text() if readme.exists() else ""
    if begin in text and end in text:
        text = text[: text.index(begin) + len(begin)] + "\n" + md + text[text.index(end):]
    else:
        text += f"\n{begin}\n{md}{end}\n"
    readme.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=tuple(SIZES), default="base")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", default="fp32,bf16", help="comma list of fp32,bf16")
    ap.add_argument("--entries", default="maezoo,transformers,lightly")
    ap.add_argument("--levers", action="store_true", help="add maezoo's lever-off variants and the asymmetric row")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile row per entry")
    ap.add_argument("--memory-all", action="store_true", help="memory in every precision (default: the first only)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/speed/results/mae_step_<device>.json")
    ap.add_argument("--readme", default=None, help="also write the table into benchmarks/speed/README.md under this tag")
    ap.add_argument("--render", type=Path, help="only re-render the Markdown of an existing JSON result")
    args = ap.parse_args(argv)
    if args.render:
        data = json.loads(args.render.read_text())
        md = render_markdown(data)
        args.render.with_suffix(".md").write_text(md)
        if args.readme:
            write_readme_section(md, args.readme)
        print(md)
        return 0

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    precisions = [p for p in args.precision.split(",") if p]
    names = [n for n in args.entries.split(",") if n]
    if args.levers:
        names += ["maezoo/sdpa-attention", "maezoo/plain-adamw", "maezoo/mask-tokens-in-encoder"]

    from importlib.metadata import PackageNotFoundError, version

    def _ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    entries: dict[str, Entry] = {}
    skipped: dict[str, str] = {}
    for name in names:
        torch.manual_seed(args.seed)
        try:
            e = build(name, args.model, args.image_size)
        except ImportError as err:
            skipped[name] = f"not installed ({err.name or err}); pip install {name.split('/')[0]}"
            print(f"[skip] {name}: {skipped[name]}", file=sys.stderr)
            continue
        e.model.to(device).train()
        if e.opt.param_groups[0]["params"][0].device != device:  # optimizer built before the move
            e = build(name, args.model, args.image_size) if device.type == "cpu" else e
        entries[name] = e
        if args.compile:
            cm = torch.compile(e.model)
            loss = (lambda m: (lambda x: m(x).loss))(cm) if name.startswith("maezoo") else (
                (lambda m: (lambda x: m(pixel_values=x).loss))(cm) if name == "transformers" else cm)
            entries[name + "+compile"] = Entry(e.model, loss, e.opt, e.context, e.optimizer)
    if not entries:
        print("no entry could be built", file=sys.stderr)
        return 1

    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(args.seed))
    x = x.to(device)
    peak = {p: matmul_peak(device, torch.float32 if p == "fp32" else torch.bfloat16) for p in precisions}
    info: dict[str, dict] = {n: {"memory": {}, "optimizer": e.optimizer,
                                 "params": sum(p.numel() for p in e.model.parameters())} for n, e in entries.items()}
    for name, e in entries.items():
        if "+compile" in name:
            info[name]["flops"] = info[name.split("+")[0]].get("flops")
            continue
        for prec in precisions if args.memory_all else precisions[:1]:  # FLOPs do not depend on the precision
            flops, mem = flops_and_memory(e, x, prec)
            info[name]["flops"], info[name]["memory"][prec] = flops, mem
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    active = list(entries)
    for prec in precisions:
        for r in range(args.warmup + args.repeats):
            for name in active if r % 2 == 0 else active[::-1]:
                torch.manual_seed(args.seed + r)
                dt = one_step(entries[name], x, prec)
                tag = "warm-up" if r < args.warmup else f"rep {r - args.warmup + 1}"
                print(f"  {prec} {tag:>7} {name:>32}: {dt:.3f} s", flush=True)
                if r >= args.warmup:
                    entries[name].timings.setdefault(prec, []).append(dt)
    data = {
        "benchmark": "mae_step",
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu_model_name()}",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "loadavg_1min": {"start": load_start, "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": _ver("timm"),
                     "maezoo": _ver("maezoo"), "transformers": _ver("transformers"), "lightly": _ver("lightly")},
        "command": "python " + " ".join(["benchmarks/speed/mae_step.py", *(argv if argv is not None else sys.argv[1:])]),
        "config": {"model": f"ViT-{args.model[0].upper()}/16", "size": args.model, "batch": args.batch,
                   "image_size": args.image_size, "repeats": args.repeats, "warmup": args.warmup,
                   "precisions": precisions, "seed": args.seed, **arch(args.model), "optimizer_args": OPT},
        "matmul_peak_gflops": peak,
        "entries": {n: {**info[n], "timings": entries[n].timings} for n in entries},
        "skipped": skipped,
        "results": {},
    }
    summarise(data)
    out = args.out or HERE / "results" / f"mae_step_{args.model}_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    md = render_markdown(data)
    out.with_suffix(".md").write_text(md)
    if args.readme:
        write_readme_section(md, args.readme)
    print("\n" + md + f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
