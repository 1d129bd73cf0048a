"""How well M3AE's image -> text path names the class: a diagnostic of what the pairs have taught by a step count.

    python benchmarks/m3ae_caption_class.py RUN [RUN ...] --out benchmarks/results/m3ae_caption_class.jsonl

Each RUN is a folder of ``maezoo run multimodal/m3ae_cifar10 ...`` (pair-trained weights, ``tokenizer.json``,
``config.yaml``). Every CIFAR-10 test image goes through the model as in pre-training, its caption hidden whole
(``hide_all`` 1.0) and the model's own share of patches hidden (75% for the recipe), with a fixed generator. The
text head's probabilities at the hidden caption positions are summed per class name (the first word piece of each
class's WordNet lemma: airplane, car, bird ...), and the class with the largest sum is the prediction. Chance is 10%.

This is not a protocol of the papers: it reads the decoder, not the encoder. It shows how far the caption loss has
taught the model to see the class in the image, which is the signal the pair-trained encoder can gain from.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from tokenizers import Tokenizer

from maezoo.core.modal_masking import PerModalityMasking
from maezoo.engine.checkpoint import load_model, resolve_weights
from maezoo.multimodal.captions import CIFAR10_SYNSETS
from maezoo.registry import build


def class_pieces(tokenizer: Tokenizer) -> list[int]:
    """The first word piece of each CIFAR-10 class's WordNet lemma, in class order."""
    return [tokenizer.encode(lemma, add_special_tokens=False).ids[0] for _, lemma in CIFAR10_SYNSETS.values()]


@torch.no_grad()
def caption_class_accuracy(run: Path, batch_size: int) -> dict:
    config = yaml.safe_load((run / "config.yaml").read_text())
    vocab = run / "tokenizer.json"
    pieces = class_pieces(Tokenizer.from_file(str(vocab)))
    data = build("dataset", config["data"]["name"], split="test", transform="eval",
                 **{**config["data"].get("args", {}), "vocab_file": str(vocab)})
    model, _ = load_model(resolve_weights(run).parent)
    model.eval()
    if not isinstance(model.masking, PerModalityMasking):
        raise SystemExit(f"{run}: masking {type(model.masking).__name__}; this diagnostic hides captions whole "
                         "through per_modality masking's hide_all")
    model.masking.hide_all = {"text": 1.0}  # every caption hidden whole: predicted from the image alone
    generator = torch.Generator().manual_seed(0)
    correct = total = 0
    t0 = time.perf_counter()
    for start in range(0, len(data), batch_size):
        x, y = data.collate_fn([data[i] for i in range(start, min(start + batch_size, len(data)))])
        out = model(x, generator=generator)
        prob = out.pred["text"].float().softmax(-1) * out.weight["text"].float()[..., None]  # [B, M, V]
        correct += int((prob.sum(1)[:, pieces].argmax(1) == y).sum())
        total += len(y)
    steps = json.loads((run / "pretrain_summary.json").read_text())["steps"]
    return {"run": str(run), "seed": config["seeds"][0], "steps": steps, "model_args": config["model"].get("args", {}),
            "caption_class_top1": round(100 * correct / total, 2), "test_images": total,
            "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for run in a.runs:
        row = caption_class_accuracy(run, a.batch_size)
        print(json.dumps(row), flush=True)
        with a.out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
