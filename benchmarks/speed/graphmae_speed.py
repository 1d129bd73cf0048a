"""Cora pre-training speed: maezoo's GraphMAE against the official GraphMAE (THUDM/GraphMAE, branch ``pyg``).

Both run in this one process tree, one after the other (``--rounds`` alternations), on the same data and
the same configuration (the paper's Cora settings), and the epochs per second of each are timed over
``--epochs`` epochs after ``--warmup`` epochs. Writes ``benchmarks/speed/results/graphmae_speed.json``.

The official code is never copied into maezoo: pass the path of a checkout of its ``pyg`` branch, e.g.::

    git --git-dir=<fetched GraphMAE git dir> archive pyg main_transductive.py configs.yml graphmae | tar -x -C /tmp/gmae
    pip install ogb tensorboardX
    python benchmarks/speed/graphmae_speed.py /tmp/gmae

The script copies that checkout into a temporary folder and applies there the one edit PEERS.md
describes (Planetoid root ``""`` -> ``"."``) and copies the Cora raw files into ``./cora/raw``. The
official run is started with ``--use_cfg`` (1500 epochs); its tqdm progress is read live and it is
stopped once the timed epochs are done. Without a checkout only maezoo's epochs/s are timed (to compare maezoo
with itself before and after a change, e.g. with ``PYTHONPATH`` pointing at an older tree).

``--also-bf16`` times maezoo with bf16 autocast too, in every round (``maezoo_bf16``, with its own ratio). On a
machine shared with other jobs, two threads per side stall in every parallel region; compare with one thread per
side there: ``OMP_NUM_THREADS=1 python benchmarks/speed/graphmae_speed.py /tmp/gmae --threads 1`` (the variable
reaches the official subprocess). Every run records the load average before and after each timed run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORA_RAW = REPO.parent / "shared" / "data" / "planetoid" / "Cora" / "raw"


def prepare_official(checkout: Path, work: Path) -> Path:
    dst = work / "graphmae_official"
    shutil.copytree(checkout, dst, ignore=shutil.ignore_patterns(".git", "chem", "imgs"))
    du = dst / "graphmae" / "datasets" / "data_util.py"
    du.write_text(du.read_text().replace('Planetoid("", dataset_name', 'Planetoid(".", dataset_name'))
    if not CORA_RAW.is_dir():
        raise SystemExit(f"Cora raw files not found at {CORA_RAW}")
    shutil.copytree(CORA_RAW, dst / "cora" / "raw")
    return dst


def time_official(root: Path, warmup: int, epochs: int, timeout: float) -> dict:
    """Start main_transductive.py, timestamp each '# Epoch k' tqdm update, stop after warmup+epochs."""
    cmd = [sys.executable, "main_transductive.py", "--dataset", "cora", "--use_cfg", "--seeds", "0", "--device", "-1"]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0)
    seen: dict[int, float] = {}
    pat = re.compile(rb"# Epoch (\d+): train_loss: ([0-9.]+)")
    buf, loss, t_start = b"", None, time.perf_counter()
    try:
        while True:
            chunk = proc.stderr.read1(4096) if hasattr(proc.stderr, "read1") else os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            buf = (buf + chunk)[-8192:]
            now = time.perf_counter()
            for m in pat.finditer(buf):
                seen.setdefault(int(m.group(1)), now)
                loss = float(m.group(2))
            if warmup + epochs in seen or now - t_start > timeout:
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    # tqdm shows "# Epoch k" once epoch k has finished
    a, b = warmup - 1, warmup + epochs - 1 if warmup + epochs - 1 in seen else max(seen, default=-1)
    if a not in seen or b <= a:
        raise RuntimeError(f"could not time the official run (epochs seen: {sorted(seen)[:5]}...)")
    return {"epochs_timed": b - a, "seconds": seen[b] - seen[a], "epochs_per_s": (b - a) / (seen[b] - seen[a]),
            "last_loss": loss}


def time_maezoo(warmup: int, epochs: int, overrides: list[str], work: Path) -> dict:
    """maezoo's GraphMAE pre-training through the engine's Trainer, with the Cora recipe's model and trainer.

    The schedule is that of the full 1,500-epoch run (as in the official run); the Trainer stops after
    ``warmup + epochs`` steps (``trainer.stop_after``) and logs every step's wall-clock time.
    """
    import os as _os

    from maezoo.engine.trainer import Trainer
    from maezoo.systems.runner import load_recipe

    _os.environ["MAEZOO_DATA"] = str(work / "data")
    total = warmup + epochs
    loaded = load_recipe("graph/graphmae_cora", ["seeds=[0]", f"trainer.stop_after={total}", "trainer.log_every=100000",
                                                 "trainer.progress=false", "trainer.ckpt_every=100000", *overrides])
    cfg = loaded.variants[0].cfg
    system = loaded.system()
    spec = system._spec(cfg)
    model = system._model(spec, 0)
    stamps: dict[int, float] = {}  # wall clock at the end of each step, taken by a Trainer callback

    def stamp(step: int, _model) -> None:
        stamps[step] = time.perf_counter()

    trainer = Trainer(cfg.trainer, seed=0)
    s = trainer.fit(model, system._dataset(cfg, "train", "pretrain"), work / f"maezoo-{time.time_ns()}", spec,
                    callbacks=[stamp])
    a, b = warmup, total
    return {"epochs_timed": b - a, "seconds": stamps[b] - stamps[a], "epochs_per_s": (b - a) / (stamps[b] - stamps[a]),
            "last_loss": s.final_loss, "overrides": overrides, "threads": trainer.threads}


def _load() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: report them with every figure)."""
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("official", type=Path, nargs="?", default=None,
                    help="checkout of THUDM/GraphMAE branch pyg (not modified); without it only maezoo is timed")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4, help="rounds, each timing both (order alternates)")
    ap.add_argument("--bf16", action="store_true", help="maezoo with bf16 autocast")
    ap.add_argument("--also-bf16", action="store_true",
                    help="also time maezoo with bf16 autocast in every round (`maezoo_bf16`, its own ratio)")
    ap.add_argument("--no-masked-only", action="store_true", help="maezoo decoder passes messages to all nodes")
    ap.add_argument("--threads", type=int, default=2, help="maezoo's torch threads (the official run uses torch's default)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--pause", type=float, default=5.0, help="seconds to wait after each timed run")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "speed" / "results" / "graphmae_speed.json")
    args = ap.parse_args()
    import torch

    common = [f"model.args.decode_masked_only={str(not args.no_masked_only).lower()}", f"trainer.threads={args.threads}"]
    overrides = [f"trainer.precision={'bf16' if args.bf16 else 'fp32'}", *common]
    runs: dict[str, list] = {"official": [], "maezoo": []}
    load_start = _load()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        timers = {"maezoo": lambda: time_maezoo(args.warmup, args.epochs, overrides, work)}
        if args.also_bf16:
            runs["maezoo_bf16"] = []
            bf16 = ["trainer.precision=bf16", *common]
            timers["maezoo_bf16"] = lambda: time_maezoo(args.warmup, args.epochs, bf16, work)
        if args.official is not None:
            root = prepare_official(args.official.resolve(), work)
            timers["official"] = lambda: time_official(root, args.warmup, args.epochs, args.timeout)
        else:
            runs.pop("official")
        for r in range(args.rounds):
            # the order alternates between rounds, with a pause after each run, so that neither side
            # always runs right after the other
            names = ["official", "maezoo", "maezoo_bf16"]
            for name in (names if r % 2 == 0 else names[::-1]):
                if name not in timers:
                    continue
                runs[name].append({**timers[name](), "loadavg_1min_after": _load()[0]})
                print(f"round {r}: {name:11s} {runs[name][-1]['epochs_per_s']:.3f} epochs/s", flush=True)
                time.sleep(args.pause)
    eps = {k: sum(x["epochs_timed"] for x in v) / sum(x["seconds"] for x in v) for k, v in runs.items()}
    ratio = eps["maezoo"] / eps["official"] if "official" in eps else None
    per_round = [m["epochs_per_s"] / o["epochs_per_s"] for o, m in zip(runs.get("official", []), runs["maezoo"])]
    load = _load()
    from maezoo.results import hardware

    extra = {}
    if "maezoo_bf16" in runs:
        extra = {"maezoo_bf16_epochs_per_s": eps["maezoo_bf16"],
                 "ratio_bf16": eps["maezoo_bf16"] / eps["official"] if "official" in eps else None,
                 "ratio_bf16_per_round": [m["epochs_per_s"] / o["epochs_per_s"]
                                          for o, m in zip(runs.get("official", []), runs["maezoo_bf16"])]}

    doc = {"benchmark": "GraphMAE Cora pre-training epochs/s (paper config: GAT 512x4 heads, 2 layers, mask 0.5)",
           "official_epochs_per_s": eps.get("official"), "maezoo_epochs_per_s": eps["maezoo"], "ratio": ratio,
           "ratio_per_round": per_round, **extra,
           "order": "official, maezoo(, maezoo_bf16) in even rounds, the reverse in odd rounds",
           "runs": runs, "warmup": args.warmup, "epochs": args.epochs, "torch_threads": torch.get_num_threads(),
           "loadavg_at_start": load_start, "loadavg_at_end": load, "hardware": hardware(),
           "precision": "bf16" if args.bf16 else "fp32",
           "note": "both timed in one run; the machine is shared, compare the ratio rather than absolute figures"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmpf = args.out.with_suffix(".json.tmp")
    tmpf.write_text(json.dumps(doc, indent=2))
    os.replace(tmpf, args.out)
    if ratio is None:
        print(f"maezoo {eps['maezoo']:.3f} epochs/s (official not run)")
        return
    print(f"official {eps['official']:.3f} epochs/s | maezoo {eps['maezoo']:.3f} epochs/s | ratio {ratio:.2f}x "
          f"(per round: {', '.join(f'{x:.2f}' for x in per_round)})")
    if extra:
        print(f"maezoo bf16 {extra['maezoo_bf16_epochs_per_s']:.3f} epochs/s | ratio {extra['ratio_bf16']:.2f}x")


if __name__ == "__main__":
    main()
