"""Side-by-side speed of one image-MAE pre-training step: maezoo vs. Hugging Face transformers vs. lightly.

The step is ViT-B/16 MAE pre-training as in the paper: mask ratio 0.75, norm-pix loss, decoder 8 x 512
(16 heads, MLP ratio 4), one forward + backward + ``torch.optim.AdamW`` step, on the same random batch.
Every peer runs in this one process, interleaved, with the order reversed on every other repeat so
that slow drifts of the machine (thermal, other tenants) cancel out; the reported figure is the median
over ``--repeats`` timed steps after ``--warmup`` untimed ones, in fp32 and under bf16 autocast.

Peers (the last two are *not* maezoo dependencies; install them for the measurement only,
``pip install transformers lightly``; a peer that is not installed is skipped with a message):

* ``maezoo``: ``maezoo.create_model("mae_vit_base_patch16")`` (defaults: mask 0.75, norm-pix, decoder 8 x 512).
* ``transformers``: ``ViTMAEForPreTraining`` with ``ViTMAEConfig(norm_pix_loss=True, mask_ratio=0.75)``
  (ViT-B/16 encoder, decoder 8 x 512 x 16 heads, LayerNorm eps 1e-6) and ``attn_implementation="sdpa"``.
* ``lightly``: ``MaskedVisionTransformerTIMM`` around timm's ``vit_base_patch16_224`` and ``MAEDecoderTIMM``
  wired as lightly's MAE example does (decoder predicts the masked tokens only), plus MAE's norm-pix
  target; the timm classifier head is dropped (``num_classes=0``): it is unused by MAE and gets no gradient.

Usage::

    python benchmarks/mae_step_speed.py                       # all peers, fp32 and bf16, batch 8, 224^2
    python benchmarks/mae_step_speed.py --precision bf16 --peers maezoo,transformers --repeats 3
    python benchmarks/mae_step_speed.py --render benchmarks/results/mae_step_speed.json   # re-render the .md

Writes the JSON (``--out``) and a Markdown table next to it (same name, ``.md``) rendered from that JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

ALL_PEERS = ("maezoo", "transformers", "lightly")
ALL_PRECISIONS = ("fp32", "bf16")

# The MAE paper's ViT-B/16 pre-training configuration, shared by every peer.
CFG = dict(
    patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
    decoder_dim=512, decoder_depth=8, decoder_heads=16, mask_ratio=0.75, norm_pix_loss=True,
)
OPT = dict(lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)  # torch.optim.AdamW, default implementation


# --------------------------------------------------------------------------------------------------
# Peers: each builder returns (model, loss_fn) where loss_fn(images) -> scalar loss, or raises ImportError.
# --------------------------------------------------------------------------------------------------
def build_maezoo(image_size: int) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    import maezoo

    model = maezoo.create_model(
        "mae_vit_base_patch16", img_size=image_size, mask_ratio=CFG["mask_ratio"], norm_pix_loss=CFG["norm_pix_loss"],
        decoder_dim=CFG["decoder_dim"], decoder_depth=CFG["decoder_depth"], decoder_heads=CFG["decoder_heads"],
    )
    return model, lambda x: model(x).loss


def build_transformers(image_size: int) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = ViTMAEConfig(
        image_size=image_size, patch_size=CFG["patch_size"], num_channels=3,
        hidden_size=CFG["embed_dim"], num_hidden_layers=CFG["depth"], num_attention_heads=CFG["num_heads"],
        intermediate_size=int(CFG["embed_dim"] * CFG["mlp_ratio"]), qkv_bias=True, layer_norm_eps=1e-6,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        decoder_hidden_size=CFG["decoder_dim"], decoder_num_hidden_layers=CFG["decoder_depth"],
        decoder_num_attention_heads=CFG["decoder_heads"],
        decoder_intermediate_size=int(CFG["decoder_dim"] * CFG["mlp_ratio"]),
        mask_ratio=CFG["mask_ratio"], norm_pix_loss=CFG["norm_pix_loss"],
    )
    model = ViTMAEForPreTraining._from_config(config, attn_implementation="sdpa")
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "sdpa":
        raise RuntimeError(f"transformers ViTMAE did not take attn_implementation='sdpa' (got {impl!r})")
    return model, lambda x: model(pixel_values=x).loss


def build_lightly(image_size: int) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    from timm.models.vision_transformer import VisionTransformer

    with warnings.catch_warnings():  # MAEDecoderTIMM is deprecated in lightly 1.6 (still the example's module)
        warnings.simplefilter("ignore")
        from lightly.models import utils
        from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM

    class LightlyMAE(nn.Module):
        """lightly's ``examples/pytorch/mae.py`` model at ViT-B/16, with MAE's norm-pix target."""

        def __init__(self) -> None:
            super().__init__()
            vit = VisionTransformer(
                img_size=image_size, patch_size=CFG["patch_size"], embed_dim=CFG["embed_dim"], depth=CFG["depth"],
                num_heads=CFG["num_heads"], mlp_ratio=CFG["mlp_ratio"], num_classes=0,
            )  # = timm's vit_base_patch16_224 (at image_size), classifier head dropped
            self.mask_ratio = CFG["mask_ratio"]
            self.patch_size = vit.patch_embed.patch_size[0]
            self.backbone = MaskedVisionTransformerTIMM(vit=vit)
            self.sequence_length = self.backbone.sequence_length
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.decoder = MAEDecoderTIMM(
                    num_patches=vit.patch_embed.num_patches, patch_size=self.patch_size, embed_dim=vit.embed_dim,
                    decoder_embed_dim=CFG["decoder_dim"], decoder_depth=CFG["decoder_depth"],
                    decoder_num_heads=CFG["decoder_heads"], mlp_ratio=CFG["mlp_ratio"],
                    proj_drop_rate=0.0, attn_drop_rate=0.0,
                )
            self.criterion = nn.MSELoss()

        def forward(self, images: Tensor) -> Tensor:
            b = images.shape[0]
            idx_keep, idx_mask = utils.random_token_mask(
                size=(b, self.sequence_length), mask_ratio=self.mask_ratio, device=images.device
            )
            x_encoded = self.backbone.encode(images=images, idx_keep=idx_keep)
            x_decode = self.decoder.embed(x_encoded)
            x_masked = utils.repeat_token(self.decoder.mask_token, (b, self.sequence_length))
            x_masked = utils.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
            x_decoded = self.decoder.decode(x_masked)
            x_pred = self.decoder.predict(utils.get_at_index(x_decoded, idx_mask))
            with torch.no_grad():
                target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)
                if CFG["norm_pix_loss"]:  # MAE's norm_pix_loss (not in lightly's example)
                    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
                    target = (target - mean) / (var + 1e-6) ** 0.5
            return self.criterion(x_pred.float(), target.float())

    model = LightlyMAE()
    return model, model


BUILDERS = {"maezoo": build_maezoo, "transformers": build_transformers, "lightly": build_lightly}
VERSION_OF = {"maezoo": "maezoo", "transformers": "transformers", "lightly": "lightly"}


# --------------------------------------------------------------------------------------------------
def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def count_params(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def one_step(loss_fn, opt: torch.optim.Optimizer, x: Tensor, precision: str) -> float:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = loss_fn(x)
    loss.backward()
    opt.step()
    dt = time.perf_counter() - t0
    if not torch.isfinite(loss.detach()):
        raise RuntimeError(f"non-finite loss {loss.item()}")
    return dt


def render_markdown(data: dict) -> str:
    precs = data["config"]["precisions"]
    peers = list(data["peers"])
    cfg = data["config"]
    lines = [
        "# One MAE pre-training step: maezoo vs. peers",
        "",
        f"ViT-B/16 at {cfg['image_size']}², batch {cfg['batch']}, mask {cfg['mask_ratio']}, norm-pix loss, "
        f"decoder {cfg['decoder_depth']} × {cfg['decoder_dim']} ({cfg['decoder_heads']} heads); forward + backward + "
        f"AdamW step; median of {cfg['repeats']} after {cfg['warmup']} warm-up, peers interleaved (order reversed "
        "every other repeat) in one process.",
        "",
        f"Machine: {data['device']}, {data['cpu_model']}, {data['threads']} threads; torch {data['versions']['torch']}, "
        + ", ".join(f"{k} {v}" for k, v in data["versions"].items() if k != "torch" and v) + ".",
        "",
        "| peer | params (total / trainable) | " + " | ".join(f"{p} s/step" for p in precs) + " | "
        + " | ".join(f"{p} ratio (peer / maezoo)" for p in precs) + " |",
        "|---|---|" + "---|" * (2 * len(precs)),
    ]
    for name in peers:
        d = data["peers"][name]
        pc = d["params"]
        row = [name, f"{pc['total']:,} / {pc['trainable']:,}"]
        row += [f"{d['median'][p]:.3f}" if p in d["median"] else "–" for p in precs]
        row += [f"{data['ratios'].get(name, {}).get(p, float('nan')):.2f}" if p in d["median"] else "–" for p in precs]
        lines.append("| " + " | ".join(row) + " |")
    if data.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in data["skipped"].items())]
    la = data.get("loadavg_1min") or {}
    if la.get("start") is not None:
        busy = max(la["start"], la["end"]) > data["threads"] + 0.5
        verdict = ("above the thread count: shared, contended cores, absolute times inflated; compare the interleaved "
                   "ratios" if busy else "at or below the thread count: a quiet machine")
        lines += ["", f"1-minute load average at start / end of the timed loop: {la['start']:.1f} / {la['end']:.1f} "
                  f"on {data['threads']} threads ({verdict})."]
    for note in data.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += ["", "Per-step timings (s):", ""]
    for name in peers:
        for p in precs:
            ts = data["peers"][name]["timings"].get(p)
            if ts:
                lines.append(f"- {name} {p}: " + ", ".join(f"{t:.3f}" for t in ts))
    lines += ["", f"Command: `{data['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", default="fp32,bf16", help="comma list of fp32,bf16")
    ap.add_argument("--peers", default=",".join(ALL_PEERS), help="comma list of " + ",".join(ALL_PEERS))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/mae_step_speed.json")
    ap.add_argument("--render", metavar="JSON", help="only re-render the Markdown of an existing JSON result")
    args = ap.parse_args(argv)

    if args.render:
        data = json.loads(Path(args.render).read_text())
        md = render_markdown(data)
        Path(args.render).with_suffix(".md").write_text(md)
        print(md)
        return 0

    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in precisions:
        if p not in ALL_PRECISIONS:
            ap.error(f"unknown precision {p!r}; choose from {ALL_PRECISIONS}")
    for p in peers:
        if p not in ALL_PEERS:
            ap.error(f"unknown peer {p!r}; choose from {ALL_PEERS}")

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    from importlib.metadata import PackageNotFoundError, version

    def _ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    models, loss_fns, opts, params, skipped = {}, {}, {}, {}, {}
    for name in peers:
        torch.manual_seed(args.seed)
        try:
            model, loss_fn = BUILDERS[name](args.image_size)
        except ImportError as e:
            msg = f"not installed ({e.name or e}); pip install {VERSION_OF[name]} to include it"
            print(f"[skip] {name}: {msg}", file=sys.stderr)
            skipped[name] = msg
            continue
        model.train()
        models[name], loss_fns[name] = model, loss_fn
        opts[name] = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **OPT)
        params[name] = count_params(model)
        print(f"{name:>12}: {params[name]['total']:,} parameters ({params[name]['trainable']:,} trainable)")
    active = list(models)
    if not active:
        print("no peer could be built", file=sys.stderr)
        return 1

    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=gen)

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    timings: dict[str, dict[str, list[float]]] = {n: {p: [] for p in precisions} for n in active}
    for prec in precisions:
        for r in range(args.warmup + args.repeats):
            order = active if r % 2 == 0 else active[::-1]
            for name in order:
                torch.manual_seed(args.seed + r)  # same mask draws for a peer across precisions
                dt = one_step(loss_fns[name], opts[name], x, prec)
                tag = "warm-up" if r < args.warmup else f"rep {r - args.warmup + 1}"
                print(f"  {prec} {tag:>7} {name:>12}: {dt:.3f} s", flush=True)
                if r >= args.warmup:
                    timings[name][prec].append(dt)

    medians = {n: {p: statistics.median(ts) for p, ts in timings[n].items()} for n in active}
    ratios = {}
    if "maezoo" in medians:
        ratios = {n: {p: medians[n][p] / medians["maezoo"][p] for p in precisions} for n in active}

    data = {
        "benchmark": "mae_step_speed",
        "device": "cpu",
        "cpu_model": cpu_model_name(),
        "threads": torch.get_num_threads(),
        # 1-minute load average before / after the timed loop: far above `threads` means other processes
        # shared the cores and the absolute times are inflated (the interleaved ratios are the robust figure).
        "loadavg_1min": {"start": load_start, "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__, "timm": _ver("timm"),
            "maezoo": _ver("maezoo"), "transformers": _ver("transformers"), "lightly": _ver("lightly"),
        },
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "config": {
            "batch": args.batch, "image_size": args.image_size, "repeats": args.repeats, "warmup": args.warmup,
            "precisions": precisions, "seed": args.seed, **CFG, "optimizer": {"name": "AdamW", **OPT},
            "bf16": "torch.autocast('cpu', dtype=torch.bfloat16) around forward + loss; fp32 parameters",
            "step": "zero_grad(set_to_none) + forward + loss + backward + AdamW.step, timed with perf_counter",
        },
        "peers": {n: {"params": params[n], "timings": timings[n], "median": medians[n]} for n in active},
        "ratios": ratios,
        "skipped": skipped,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    md = render_markdown(json.loads(out.read_text()))
    out.with_suffix(".md").write_text(md)
    print()
    print(md)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
