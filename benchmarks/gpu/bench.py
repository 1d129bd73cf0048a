"""The GPU benchmark: MAE and VideoMAE steps against transformers, and the image pipeline from JPEG files.

Run it with ``benchmarks/gpu/run.sh`` (which installs maezoo and transformers first); one call on a bare H100 or
H200 takes under 8 minutes. Sections (``--sections``, default all):

* ``image``: the MAE pre-training step (zero_grad + forward + backward + AdamW) for ViT-B/16 and ViT-L/16 at 224²,
  mask 0.75, norm-pix, decoder 8 x 512, bf16 autocast, batch 256, ``torch.compile``: maezoo against transformers'
  ``ViTMAEForPreTraining`` (sdpa), the pair built and interleaved in one process (the builders, the timed step,
  ``FlopCounterMode`` and the matmul peak are ``benchmarks/speed/mae_step.py``'s).
* ``video``: VideoMAE ViT-B, 16 x 224², tubelet 2 x 16 x 16, tube mask 0.9 (the same mask for both), decoder
  4 x 384, batch 32: maezoo's ``videomae_vit_base`` against ``VideoMAEForPreTraining``.
* ``data``: ImageNet-sized JPEG files (500 x 375) written here on every core, then pre-trained from through the
  engine (:class:`maezoo.engine.trainer.Trainer`: ImageFolder + MAE augmentation, one loader worker per core,
  pinned memory, compiled ViT-B) and compared with the ``image`` section's synthetic-input step; the loader alone
  is timed as well.

MFU = FLOPs of one forward + backward (``torch.utils.flop_counter.FlopCounterMode``) / step time / the bf16 peak
measured in the same process (a timed 8192² ``mm``). Results: ``benchmarks/gpu/results/<device>.json`` and the
Markdown table beside it. ``--dry-run``: every section on the CPU at toy sizes, no compile, in well under a
minute (CI runs it, so the script cannot rot); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "speed"))
import mae_step as ms  # noqa: E402  (benchmarks/speed/mae_step.py: builders, timed step, FLOPs, matmul peak)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VIDEO = {"base": dict(embed_dim=768, depth=12, num_heads=12, decoder_dim=384, decoder_depth=4, decoder_heads=6),
         "toy": dict(embed_dim=32, depth=2, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2)}
VIDEO_CFG = dict(patch_size=16, tubelet_size=2, mask_ratio=0.9)
#: goals of issue 28 (H100, bf16, compiled)
GOALS = {"ViT-B/16": 6800, "ViT-L/16": 3900, "VideoMAE ViT-B": 1230}


@dataclass
class Plan:
    """Sizes of one benchmark call: the real one, or the dry run's toys."""

    device: torch.device
    compile: bool
    image_size: int
    batch: int
    image_models: dict[str, str]  # label -> mae_step size
    video_size: int
    video_frames: int
    video_batch: int
    video_model: str
    warmup: int
    repeats: int
    jpegs: int
    jpeg_size: tuple[int, int]
    data_steps: int
    workers: int
    peak_n: int


def make_plan(args: argparse.Namespace) -> Plan:
    cores = os.cpu_count() or 1
    if args.dry_run:
        return Plan(torch.device("cpu"), False, 32, 4, {"ViT-B/16": "toy", "ViT-L/16": "toy"}, 32, 4, 2, "toy",
                    1, 2, 24, (50, 40), 4, min(2, cores), 256)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        raise SystemExit("no CUDA device: this benchmark is for a GPU (use --dry-run to check it on a CPU)")
    return Plan(device, not args.no_compile, 224, args.batch, {"ViT-B/16": "base", "ViT-L/16": "large"}, 224, 16,
                args.video_batch, "base", args.warmup, args.repeats, args.jpegs, (500, 375), args.data_steps,
                max(1, cores - 1), 8192)


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
def compiled(entry: ms.Entry, call) -> ms.Entry:
    """The same model, optimizer and context, its step through ``torch.compile(model)``."""
    cm = torch.compile(entry.model)
    return ms.Entry(entry.model, lambda x: call(cm, x), entry.opt, entry.context, entry.optimizer)


def time_pair(entries: dict[str, ms.Entry], x: torch.Tensor, plan: Plan) -> dict[str, dict]:
    """Interleaved timing (order reversed every other round); per entry the median, spread, FLOPs and peak memory."""
    out: dict[str, dict] = {}
    for name, e in entries.items():
        flops, _ = ms.flops_and_memory(e, x, "bf16")
        t0 = time.perf_counter()
        for _ in range(plan.warmup):  # the first call compiles
            ms.one_step(e, x, "bf16")
        out[name] = {"flops": flops, "warmup_s": time.perf_counter() - t0, "timings": [],
                     "params": sum(p.numel() for p in e.model.parameters())}
    order = list(entries)
    for r in range(plan.repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            out[name]["timings"].append(ms.one_step(entries[name], x, "bf16"))
    for name, e in entries.items():
        if x.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(x.device)
        ms.one_step(e, x, "bf16")
        out[name]["peak_memory_bytes"] = torch.cuda.max_memory_allocated(x.device) if x.device.type == "cuda" else None
        ts = out[name]["timings"]
        out[name].update(median_s=statistics.median(ts), min_s=min(ts), max_s=max(ts))
    return out


def rate_rows(times: dict[str, dict], batch: int, peak_flops: float) -> None:
    """Samples/s, MFU and the ratio to transformers, in place."""
    for r in times.values():
        r["samples_per_s"] = batch / r["median_s"]
        r["mfu"] = r["flops"] / r["median_s"] / peak_flops if r.get("flops") else None
    peer = times.get("transformers")
    for r in times.values():
        r["speedup_vs_transformers"] = peer["median_s"] / r["median_s"] if peer else None


def release(*objs) -> None:
    del objs
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------------
def image_section(plan: Plan, peak: float, skipped: dict[str, str]) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for label, size in plan.image_models.items():
        entries: dict[str, ms.Entry] = {}
        for name in ("maezoo", "transformers"):
            torch.manual_seed(0)
            try:
                e = ms.build(name, size, plan.image_size)
            except ImportError as err:
                skipped[f"{label} {name}"] = f"not installed ({err.name or err})"
                continue
            e.model.to(plan.device).train()
            if plan.compile:
                call = (lambda m, x: m(x).loss) if name == "maezoo" else (lambda m, x: m(pixel_values=x).loss)
                e = compiled(e, call)
            entries[name] = e
        x = torch.randn(plan.batch, 3, plan.image_size, plan.image_size, device=plan.device)
        times = time_pair(entries, x, plan)
        rate_rows(times, plan.batch, peak)
        results[label] = {"size": size, "arch": ms.arch(size), "entries": times}
        print(f"[image] {label}: " + ", ".join(f"{n} {r['samples_per_s']:.0f}/s" for n, r in times.items()), flush=True)
        release(entries, x)
    return results


def build_video(name: str, plan: Plan):
    """``(model, loss_fn(x, mask))`` for maezoo's VideoMAE or transformers' ``VideoMAEForPreTraining``."""
    a = {**VIDEO[plan.video_model], **VIDEO_CFG}
    if name == "maezoo":
        import maezoo

        model = maezoo.create_model("videomae", img_size=plan.video_size, num_frames=plan.video_frames,
                                    pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD, **a)
        return model, lambda m, x, mask: m(x, mask=mask).loss
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    cfg = VideoMAEConfig(image_size=plan.video_size, patch_size=a["patch_size"], num_channels=3,
                         num_frames=plan.video_frames, tubelet_size=a["tubelet_size"], hidden_size=a["embed_dim"],
                         num_hidden_layers=a["depth"], num_attention_heads=a["num_heads"],
                         intermediate_size=4 * a["embed_dim"], decoder_hidden_size=a["decoder_dim"],
                         decoder_num_hidden_layers=a["decoder_depth"], decoder_num_attention_heads=a["decoder_heads"],
                         decoder_intermediate_size=4 * a["decoder_dim"], norm_pix_loss=True)
    model = VideoMAEForPreTraining._from_config(cfg, attn_implementation="sdpa")
    # transformers takes [B, T, C, H, W]
    return model, lambda m, x, mask: m(pixel_values=x.transpose(1, 2), bool_masked_pos=mask.mask).loss


def _bind(runner, call, mask):
    return lambda x: call(runner, x, mask)


def video_section(plan: Plan, peak: float, skipped: dict[str, str]) -> dict[str, dict]:
    x = torch.randn(plan.video_batch, 3, plan.video_frames, plan.video_size, plan.video_size, device=plan.device)
    entries: dict[str, ms.Entry] = {}
    mask = None
    for name in ("maezoo", "transformers"):
        torch.manual_seed(0)
        try:
            model, call = build_video(name, plan)
        except ImportError as err:
            skipped[f"VideoMAE {name}"] = f"not installed ({err.name or err})"
            continue
        model.to(plan.device).train()
        if mask is None and name == "maezoo":  # one mask, drawn by maezoo's tube strategy, for both
            mask = model.sample_mask(x, generator=torch.Generator().manual_seed(0))
        if mask is None:
            raise RuntimeError("the VideoMAE comparison needs maezoo's model for its mask")
        runner = torch.compile(model) if plan.compile else model
        entries[name] = ms.Entry(model, _bind(runner, call, mask), ms._peer_opt(model))
    times = time_pair(entries, x, plan)
    rate_rows(times, plan.video_batch, peak)
    print("[video] " + ", ".join(f"{n} {r['samples_per_s']:.0f} clips/s" for n, r in times.items()), flush=True)
    release(entries, x)
    return {"VideoMAE ViT-B": {"size": plan.video_model, "arch": {**VIDEO[plan.video_model], **VIDEO_CFG,
                                                                   "num_frames": plan.video_frames}, "entries": times}}


def _write_jpeg(job: tuple[str, int, int, int]) -> None:
    import numpy as np
    from PIL import Image

    path, seed, w, h = job
    rng = np.random.default_rng(seed)
    # smooth colour fields plus noise: about the entropy (and so the decode cost) of a photograph
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.005, 0.05, size=(3, 2))
    img = np.stack([127 + 100 * np.sin(xx * f[c, 0] + yy * f[c, 1] + c) for c in range(3)], -1)
    img += rng.normal(0, 12, img.shape)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def write_jpegs(root: Path, n: int, size: tuple[int, int], workers: int) -> float:
    """``n`` JPEG files in an ImageFolder layout (10 classes) under ``root``; returns the seconds it took."""
    jobs = []
    for i in range(n):
        d = root / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        jobs.append((str(d / f"{i:06d}.jpg"), i, *size))
    t0 = time.perf_counter()
    with Pool(max(1, workers)) as pool:
        pool.map(_write_jpeg, jobs, chunksize=16)
    return time.perf_counter() - t0


def loader_rate(dataset, plan: Plan, batches: int) -> float:
    """Images/s of the engine's loader alone (sampler, robust dataset, workers, pinned memory), after one batch."""
    from torch.utils.data import DataLoader

    from maezoo.data.robust import RobustDataset, collate_skip_bad
    from maezoo.engine.trainer import StepBatchSampler

    sampler = StepBatchSampler(len(dataset), plan.batch, seed=0)
    loader = DataLoader(RobustDataset(dataset), batch_sampler=sampler, num_workers=plan.workers,
                        collate_fn=collate_skip_bad, pin_memory=plan.device.type == "cuda", prefetch_factor=4)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * plan.batch / (time.perf_counter() - t0)
    del it
    return rate


def data_section(plan: Plan, synthetic: float | None, workdir: Path) -> dict:
    from torchvision.datasets import ImageFolder

    from maezoo.engine.trainer import Trainer, TrainerConfig
    from maezoo.image.data import mae_pretrain_transform

    root = workdir / "jpegs"
    write_s = write_jpegs(root, plan.jpegs, plan.jpeg_size, os.cpu_count() or 1)
    dataset = ImageFolder(str(root), transform=mae_pretrain_transform(plan.image_size, IMAGENET_MEAN, IMAGENET_STD))
    alone = loader_rate(dataset, plan, max(2, plan.data_steps // 2))
    print(f"[data] {plan.jpegs} JPEGs written in {write_s:.1f} s; loader alone {alone:.0f} images/s", flush=True)
    import maezoo

    size = plan.image_models["ViT-B/16"]
    a = ms.arch(size)
    spec = {"name": "mae_vit", "kwargs": {k: a[k] for k in ("patch_size", "embed_dim", "depth", "num_heads",
                                                            "decoder_dim", "decoder_depth", "decoder_heads")}}
    spec["kwargs"]["img_size"] = plan.image_size
    torch.manual_seed(0)
    model = maezoo.create_model(spec["name"], **spec["kwargs"])
    log_every = max(1, plan.data_steps // 4)
    cfg = TrainerConfig(max_steps=plan.data_steps, batch_size=plan.batch, precision="bf16", compile=plan.compile,
                        device=plan.device.type, num_workers=plan.workers, ckpt_every=10**9, log_every=log_every,
                        warmup_steps=0, progress=False, threads=os.cpu_count() or 1 if plan.device.type == "cpu" else 1)
    run_dir = workdir / "run"
    summary = Trainer(cfg).fit(model, dataset, run_dir, spec)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    windows = [r["train/samples_per_s"] for r in rows if "train/samples_per_s" in r][1:]  # the first holds compile
    fed = statistics.median(windows) if windows else summary.samples_per_s
    out = {"jpegs": plan.jpegs, "jpeg_size": list(plan.jpeg_size), "write_s": write_s, "workers": plan.workers,
           "loader_images_per_s": alone, "trainer_images_per_s": fed, "trainer_windows": windows,
           "data_wait_share": summary.data_wait_share, "synthetic_images_per_s": synthetic,
           "fed_share": fed / synthetic if synthetic else None,
           "transform": "ImageFolder + RandomResizedCrop(224, 0.2-1, bicubic) + flip + ToTensor + Normalize"}
    print(f"[data] trainer from JPEGs {fed:.0f} images/s" + (f" = {fed / synthetic:.0%} of synthetic" if synthetic else ""),
          flush=True)
    release(model)
    return out


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def render_markdown(data: dict) -> str:
    lines = [f"Device: {data['device_name']}; torch {data['versions']['torch']}, transformers "
             f"{data['versions'].get('transformers') or '–'}; bf16 autocast, compile {data['compile']}; bf16 matmul "
             f"peak measured here {data['peak_tflops']:.3g} TFLOP/s." + (" DRY RUN (CPU, toy sizes): the figures mean "
                                                                          "nothing." if data["dry_run"] else ""),
             "", "| model | batch | entry | samples/s | vs transformers | MFU | s/step (min–max) | peak memory | goal |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, sec in {**data.get("image", {}), **data.get("video", {})}.items():
        batch = data["config"]["video_batch" if label.startswith("Video") else "batch"]
        for name, r in sec["entries"].items():
            mem = f"{r['peak_memory_bytes'] / 2**30:.1f} GiB" if r.get("peak_memory_bytes") else "–"
            goal = f"≥ {GOALS[label]:,}" if name == "maezoo" and label in GOALS else ""
            lines.append(f"| {label} | {batch} | {name} | {r['samples_per_s']:,.0f} | "
                         f"{_fmt(r.get('speedup_vs_transformers'), '.2f')}× | {_fmt(r.get('mfu'), '.1%')} | "
                         f"{r['median_s']:.4f} ({r['min_s']:.4f}–{r['max_s']:.4f}) | {mem} | {goal} |")
    d = data.get("data")
    if d:
        lines += ["", f"Image pipeline: {d['jpegs']} JPEGs of {d['jpeg_size'][0]}×{d['jpeg_size'][1]} ({d['transform']}), "
                  f"{d['workers']} loader workers: loader alone {d['loader_images_per_s']:,.0f} images/s; the engine "
                  f"pre-training ViT-B from them {d['trainer_images_per_s']:,.0f} images/s (data wait "
                  f"{d['data_wait_share']:.0%}), {_fmt(d['fed_share'], '.0%')} of the synthetic-input step (goal ≥ 95%)."]
    if data.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in data["skipped"].items())]
    lines += ["", f"Command: `{data['command']}` ({data['wall_s']:.0f} s)"]
    return "\n".join(lines) + "\n"


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("maezoo", "transformers", "timm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, no compile (checks the script only)")
    ap.add_argument("--sections", default="image,video,data")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--video-batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--jpegs", type=int, default=8192)
    ap.add_argument("--data-steps", type=int, default=40)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    plan = make_plan(args)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - {"image", "video", "data"}
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}; choose from image, video, data")
    if plan.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.perf_counter()
    peak = ms.matmul_peak(plan.device, torch.bfloat16, n=plan.peak_n) * 1e9
    print(f"bf16 matmul peak {peak / 1e12:.3g} TFLOP/s on {plan.device}", flush=True)
    skipped: dict[str, str] = {}
    data: dict = {"benchmark": "gpu", "dry_run": args.dry_run, "compile": plan.compile,
                  "device_name": torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda"
                  else f"CPU {ms.cpu_model_name()}", "peak_tflops": peak / 1e12, "versions": _versions(),
                  "cpu_count": os.cpu_count(), "config": {"batch": plan.batch, "video_batch": plan.video_batch,
                                                          "image_size": plan.image_size, "warmup": plan.warmup,
                                                          "repeats": plan.repeats, "video_frames": plan.video_frames},
                  "command": "benchmarks/gpu/run.sh " + " ".join(argv if argv is not None else sys.argv[1:])}
    if "image" in sections:
        data["image"] = image_section(plan, peak, skipped)
    if "video" in sections:
        data["video"] = video_section(plan, peak, skipped)
    if "data" in sections:
        vitb = data.get("image", {}).get("ViT-B/16", {}).get("entries", {}).get("maezoo")
        with tempfile.TemporaryDirectory(prefix="maezoo-gpu-bench-") as tmp:
            data["data"] = data_section(plan, vitb["samples_per_s"] if vitb else None, Path(tmp))
    data["skipped"] = skipped
    data["wall_s"] = time.perf_counter() - t_start
    name = "dry_run" if args.dry_run else torch.cuda.get_device_name(plan.device).replace(" ", "_")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{name}.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    md = render_markdown(data)
    out.with_suffix(".md").write_text(md)
    print("\n" + md + f"\nwrote {out} and {out.with_suffix('.md')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
