"""The published checkpoints maezoo maps, where they live, and a cached, checksummed download for user code.

Tests never download: :func:`download` is for users (``maezoo zoo --download NAME``). A checksum is verified
when the entry pins one; otherwise the file's SHA-256 is computed, written beside it (``<file>.sha256``) and
checked on every later use, so a cache that changed on disk is noticed.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from maezoo.hub.io import HubError

MAE = "https://dl.fbaipublicfiles.com/mae"
HF = "https://huggingface.co"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str
    model: str
    url: str
    note: str = ""
    sha256: str | None = None


def _entries() -> list[ZooEntry]:
    rows = []
    for size, model in (("base", "mae_vit_base_patch16"), ("large", "mae_vit_large_patch16"), ("huge", "mae_vit_huge_patch14")):
        rows += [
            ZooEntry(f"mae_pretrain_vit_{size}", "mae_official", model, f"{MAE}/pretrain/mae_pretrain_vit_{size}.pth",
                     "encoder only (decoder initialised); norm-pix"),
            ZooEntry(f"mae_pretrain_vit_{size}_full", "mae_official", model,
                     f"{MAE}/pretrain/mae_pretrain_vit_{size}_full.pth", "encoder + decoder; norm-pix"),
            ZooEntry(f"mae_visualize_vit_{size}", "mae_official", model, f"{MAE}/visualize/mae_visualize_vit_{size}.pth",
                     "encoder + decoder; raw-pixel targets"),
            ZooEntry(f"vit_{size}_patch{14 if size == 'huge' else 16}_224.mae", "timm_vit", model,
                     f"{HF}/timm/vit_{size}_patch{14 if size == 'huge' else 16}_224.mae", "encoder only (timm)"),
            ZooEntry(f"facebook/vit-mae-{size}", "hf_vitmae", model, f"{HF}/facebook/vit-mae-{size}",
                     "ViTMAEForPreTraining folder; layer_norm_eps 1e-12 kept"),
        ]
    for name, note in (("videomae-base", "ViT-B, Kinetics-400, 1600 epochs"), ("videomae-base-short", "ViT-B, K400, 800 epochs"),
                       ("videomae-large", "ViT-L, Kinetics-400"), ("videomae-base-ssv2", "ViT-B, Something-Something v2"),
                       ("videomae-base-short-ssv2", "ViT-B, SSv2, 800 epochs")):
        rows.append(ZooEntry(f"MCG-NJU/{name}", "hf_videomae", "videomae_official",
                             f"{HF}/MCG-NJU/{name}", f"VideoMAEForPreTraining folder; {note}"))
    rows.append(ZooEntry("videomae_official", "videomae_official", "videomae_official",
                         "https://github.com/MCG-NJU/VideoMAE/blob/main/MODEL_ZOO.md",
                         "pre-training checkpoint.pth (ViT-S/B/L/H); also VideoMAE V2's pre-training files "
                         "(https://github.com/OpenGVLab/VideoMAEv2/blob/master/docs/MODEL_ZOO.md)"))
    rows.append(ZooEntry("gaunernst/vit_base_patch16_1024_128.audiomae_as2m", "timm_audiomae", "audiomae_vit_base",
                         f"{HF}/gaunernst/vit_base_patch16_1024_128.audiomae_as2m",
                         "timm folder; Audio-MAE AudioSet-2M encoder only (decoder initialised), 1024 x 128 fbank"))
    rows.append(ZooEntry("audiomae_official", "timm_audiomae", "audiomae_vit_base",
                         "https://github.com/facebookresearch/AudioMAE#checkpoints",
                         "official pre-training .pth (Google Drive): encoder mapped; its Swin V2 decoder is not"))
    for name, model, note in (("google-bert/bert-base-uncased", "bert_base", "BertForPreTraining folder (MLM part); vocab.txt"),
                              ("google-bert/bert-base-cased", "bert_base", "cased; tokenizer.json read as it is"),
                              ("google/bert_uncased_L-2_H-128_A-2", "bert_tiny", "BERT-Tiny (Turc et al.)")):
        rows.append(ZooEntry(name, "hf_bert", model, f"{HF}/{name}", note))
    rows.append(ZooEntry("PatchTSTForPretraining", "hf_patchtst", "patchtst_hf", "https://github.com/huggingface/transformers/tree/main/src/transformers/models/patchtst",
                         "folders with norm_type=layernorm, pre_norm=True (others refused); export back with --to hf"))
    rows.append(ZooEntry("convmae_base_official", "convmae_official", "convmae_base",
                         "https://github.com/Alpha-VL/ConvMAE/blob/main/PRETRAIN.md",
                         "ConvMAE-Base pre-training checkpoint (Google Drive), encoder + decoder"))
    rows.append(ZooEntry("graphmae_pyg", "graphmae_official", "graphmae", "https://github.com/THUDM/GraphMAE/tree/pyg",
                         "checkpoint.pt of main_transductive.py --save_model (GAT) or main_graph.py (GIN)"))
    return rows


ZOO: tuple[ZooEntry, ...] = tuple(_entries())


def zoo_table() -> str:
    """Markdown table of every mapped checkpoint."""
    lines = ["| checkpoint | family | maezoo model | source | notes |", "|---|---|---|---|---|"]
    lines += [f"| `{e.name}` | {e.family} | `{e.model}` | {e.url} | {e.note} |" for e in ZOO]
    return "\n".join(lines)


def find(name: str) -> ZooEntry:
    for e in ZOO:
        if e.name == name:
            return e
    raise HubError(f"unknown zoo entry {name!r}; `maezoo zoo` lists them ({', '.join(e.name for e in ZOO[:3])} ...)")


def cache_dir() -> Path:
    return Path(os.environ.get("MAEZOO_HUB_CACHE", Path.home() / ".cache" / "maezoo" / "hub"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(name: str, root: Path | None = None) -> Path:
    """The local copy of a zoo entry's file (``.pth`` entries only; fetch Hugging Face folders with
    ``huggingface_hub.snapshot_download``), downloaded once into the cache and checksummed."""
    e = find(name)
    if not e.url.startswith(HF) and not e.url.endswith(".pth"):
        raise HubError(f"{name} has no single download URL (files on Google Drive/OneDrive/Baidu, or ones you train); "
                       f"see {e.url} and pass the file or folder")
    if not e.url.endswith(".pth"):
        raise HubError(f"{name} is a Hugging Face repository; fetch it with huggingface_hub.snapshot_download("
                       f"{e.url.removeprefix(HF + '/')!r}) and pass the folder")
    dst = (root or cache_dir()) / Path(e.url).name
    record = dst.with_name(dst.name + ".sha256")
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.part{os.getpid()}")
        urllib.request.urlretrieve(e.url, tmp)  # noqa: S310 (fixed https URLs of the table above)
        os.replace(tmp, dst)
    digest = sha256_of(dst)
    expected = e.sha256 or (record.read_text().strip() if record.is_file() else None)
    if expected and digest != expected:
        raise HubError(f"{dst}: SHA-256 {digest} differs from the expected {expected}; delete the file and download again")
    record.write_text(digest + "\n")
    return dst


__all__ = ["ZOO", "ZooEntry", "cache_dir", "download", "find", "zoo_table"]
