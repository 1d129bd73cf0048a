"""One VideoMAE pre-training step: maezoo vs. Hugging Face ``VideoMAEForPreTraining``, same configuration.

Both models are VideoMAE ViT-S (384 x 12, 6 heads; decoder 4 x 192, 3 heads), 16 frames at ``--size``² (default
112), tubelets 2 x 16 x 16, tube masking 0.9 (the *same* mask, drawn once by maezoo's ``tube`` strategy and
passed to transformers as ``bool_masked_pos``), VideoMAE's normalised target after undoing the ImageNet input
normalisation, masked-only MSE. One step = forward + backward + ``torch.optim.AdamW`` step (the same optimizer
class and settings for both), on the same synthetic batch. Entries run interleaved in this one process (order
reversed on every other repeat so drifts of a shared machine cancel); each figure is the median of ``--repeats``
timed steps after ``--warmup`` untimed ones, per precision (fp32, and bf16 autocast with ``--precision fp32,bf16``).
The result is the ratio transformers time / maezoo time (> 1: maezoo faster).

transformers is *not* a maezoo dependency: ``pip install transformers`` for this measurement only.

    python benchmarks/videomae_step.py --threads 1 --out benchmarks/results/video_step_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from machine_load import load_note  # benchmarks/machine_load.py, beside this script

import maezoo

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CFG = dict(embed_dim=384, depth=12, num_heads=6, decoder_dim=192, decoder_depth=4, decoder_heads=3, patch_size=16,
           tubelet_size=2, num_frames=16, mask_ratio=0.9)


def build_maezoo(size: int):
    model = maezoo.create_model("videomae_vit_small", img_size=size, num_frames=CFG["num_frames"],
                                pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD)

    def step(x, mask, opt, precision):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(x, mask=mask).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return model, step


def build_transformers(size: int):
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    cfg = VideoMAEConfig(image_size=size, patch_size=CFG["patch_size"], num_channels=3, num_frames=CFG["num_frames"],
                         tubelet_size=CFG["tubelet_size"], hidden_size=CFG["embed_dim"], num_hidden_layers=CFG["depth"],
                         num_attention_heads=CFG["num_heads"], intermediate_size=4 * CFG["embed_dim"],
                         decoder_hidden_size=CFG["decoder_dim"], decoder_num_hidden_layers=CFG["decoder_depth"],
                         decoder_num_attention_heads=CFG["decoder_heads"], decoder_intermediate_size=4 * CFG["decoder_dim"],
                         norm_pix_loss=True, use_mean_pooling=True)
    try:
        model = VideoMAEForPreTraining._from_config(cfg, attn_implementation="sdpa")
    except (TypeError, ValueError):
        model = VideoMAEForPreTraining(cfg)

    def step(x, mask, opt, precision):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(pixel_values=x.transpose(1, 2), bool_masked_pos=mask.mask).loss  # HF: [B, T, C, H, W]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return model, step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32", help="comma-separated: fp32,bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    entries = {"maezoo": build_maezoo(args.size), "transformers": build_transformers(args.size)}
    params = {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in entries.items()}
    opts = {}
    for name, (m, _) in entries.items():
        m.to(device).train()
        opts[name] = torch.optim.AdamW(m.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    x = torch.randn(args.batch, 3, CFG["num_frames"], args.size, args.size, device=device)
    mask = entries["maezoo"][0].sample_mask(x, generator=torch.Generator().manual_seed(0))
    results: dict[str, dict] = {}
    for precision in args.precision.split(","):
        times: dict[str, list[float]] = {k: [] for k in entries}
        losses: dict[str, float] = {}
        order = list(entries)
        for r in range(args.warmup + args.repeats):
            for name in (order if r % 2 == 0 else order[::-1]):
                m, step = entries[name]
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                loss = step(x, mask, opts[name], precision)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                if r >= args.warmup:
                    times[name].append(dt)
                losses[name] = float(loss.detach())
        med = {k: statistics.median(v) for k, v in times.items()}
        results[precision] = {
            "median_s": med, "min_s": {k: min(v) for k, v in times.items()}, "max_s": {k: max(v) for k, v in times.items()},
            "clips_per_s": {k: args.batch / v for k, v in med.items()},
            "ratio_transformers_over_maezoo": med["transformers"] / med["maezoo"], "last_loss": losses,
        }
        print(f"{precision}: maezoo {med['maezoo'] * 1e3:.0f} ms, transformers {med['transformers'] * 1e3:.0f} ms "
              f"-> ratio {results[precision]['ratio_transformers_over_maezoo']:.2f}x", flush=True)
    import transformers

    doc = {
        "benchmark": "videomae_step", "device": str(device), "threads": args.threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
        "loadavg_1min": os.getloadavg()[0], "note": load_note(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "maezoo": maezoo.__version__},
        "config": {**CFG, "img_size": args.size, "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup,
                   "optimizer": "torch.optim.AdamW(lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)",
                   "mask": "maezoo tube 0.9, the same for both"},
        "params": params, "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
