"""Audio datasets: lists of clips turned into normalised Kaldi filterbanks, bad files skipped and counted.

Every builder returns an :class:`AudioClips` of ``(fbank [T, F], label)`` pairs with ``num_classes``,
``targets``, ``skipped`` (bad files per reason) and ``model_kwargs`` (frame count, mel bins and the training
split's normalisation statistics, which the ``mae`` system passes to the model builder, so they are saved in the
checkpoint's ``model.json`` and as tokenizer buffers).

* ``fsdd``: the Free Spoken Digit Dataset (``{digit}_{speaker}_{take}.wav``, 8 kHz), extracted from
  ``shared/data/fsdd/fsdd-recordings.tar`` into the data root. ``name`` picks the split:
  ``fsdd-official`` (takes 0-4 are the test set) or ``fsdd-loso-<speaker>`` (leave that speaker out).
* ``audio_folder``: ``root/<class>/*.wav`` with Speech Commands' ``testing_list.txt``/``validation_list.txt``,
  or ``root/{train,val,test}/<class>/*.wav``.
* ``audio_json``: the AST/Audio-MAE form ``{"data": [{"wav": path, "labels": "mid1,mid2"}]}`` plus
  ``class_labels_indices.csv`` (``index,mid,display_name``); several labels per clip give multi-hot targets
  (multi-label: mAP).

``clip_norm=True`` (off by default, as in Audio-MAE) subtracts each clip's own per-mel-bin mean over its valid frames
before the dataset normalisation (cepstral mean normalisation, which removes a speaker's or microphone's long-term
spectral colouring). On FSDD it did not help the pre-trained encoder: held-out george / theo linear probe 31.3 / 44.5
with it vs 31.9 / 49.7 without (1,200 pre-training steps, shared CPU), so the FSDD recipe leaves it off.
``AudioTokenizer.features`` does not apply it.

Filterbanks are computed once (:func:`maezoo.audio.frontend.kaldi_fbank`, the Kaldi reference) and cached in
``<data root>/audio_cache/`` keyed by the files and settings. A file that cannot be used (unreadable or not
audio despite its ``.wav`` name, 0 samples, NaN samples, silent, shorter than one patch) is skipped, counted in
``skipped`` and reported in one warning naming examples; stereo files are downmixed and other sample rates
resampled to 16 kHz.

Shapes:
    sample: ``(fbank [target_frames, mel_bins] float32, label)``; label ``int``, or ``[num_classes]`` float
    (multi-hot, or soft after waveform mixup)
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from maezoo.audio.augment import AugmentConfig, spec_augment, time_shift
from maezoo.audio.frontend import (
    AudioFileError,
    FbankConfig,
    fbank_stats,
    kaldi_fbank,
    load_audio,
    normalize,
    pad_or_crop,
)
from maezoo.config import data_root
from maezoo.data.sources import download_or_explain, extract_archive, prepared_folder
from maezoo.registry import register

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
FSDD_TAR = "fsdd/fsdd-recordings.tar"
FSDD_VERSION = "1.0.10"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v{FSDD_VERSION}.tar.gz"
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
_FBANK = FbankConfig()


@dataclass
class Clip:
    """One audio file and its label(s); ``group`` is e.g. the speaker."""

    path: Path
    label: int | tuple[int, ...]
    group: str = ""


@dataclass
class Scan:
    """Filterbanks of the usable clips of a list and what was skipped.

    Shapes:
        fbanks ``[N_ok, target_frames, mel_bins]`` (not normalised); frames ``[N_ok]`` (valid frames per clip)
    """

    fbanks: Tensor
    frames: Tensor
    kept: list[int]
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


def _reason(exc: AudioFileError) -> str:
    msg = str(exc)
    for key, reason in (("0 samples", "empty"), ("NaN", "nan"), ("silent", "silent"), ("shorter", "too_short")):
        if key in msg:
            return reason
    return "unreadable"


def clip_fbank(path: Path, cfg: FbankConfig, min_frames: int) -> Tensor:
    """Load one clip and return its (unpadded) Kaldi filterbank; :class:`AudioFileError` when unusable.

    Shapes:
        returns ``[frames, mel_bins]``
    """
    wave = load_audio(path, cfg.sample_rate)
    if float(wave.abs().max()) == 0.0:
        raise AudioFileError(f"{path}: the clip is silent (all samples are 0); remove it from the dataset")
    frames = cfg.frames(wave.numel())
    if frames < min_frames:
        raise AudioFileError(f"{path}: {wave.numel() / cfg.sample_rate:.3f} s gives {frames} frames, shorter than one "
                             f"{min_frames}-frame patch; remove it or use smaller patches")
    return kaldi_fbank(wave, cfg)


def _cache_key(clips: Sequence[Clip], target_frames: int, cfg: FbankConfig, min_frames: int, pad: str) -> str:
    h = hashlib.sha1(f"v1|{target_frames}|{cfg}|{min_frames}|{pad}".encode())
    for c in clips:
        st = c.path.stat() if c.path.exists() else None
        h.update(f"{c.path}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:20]


_MEMO: dict[str, Scan] = {}


def scan_clips(clips: Sequence[Clip], target_frames: int, cfg: FbankConfig = _FBANK, min_frames: int = 16,
               cache: bool = True, pad: str = "zero") -> Scan:
    """Filterbanks of every usable clip, padded (``pad``: see :func:`pad_or_crop`) or cropped to ``target_frames``
    (memoised and cached on disk)."""
    key = _cache_key(clips, target_frames, cfg, min_frames, pad)
    if key in _MEMO:
        return _MEMO[key]
    path = data_root() / "audio_cache" / f"{key}.pt"
    if cache and path.is_file():
        try:
            scan = Scan(**torch.load(path, weights_only=True))
            _MEMO[key] = scan
            return scan
        except Exception:  # a damaged cache file is recomputed
            path.unlink(missing_ok=True)
    banks, frames, kept, reasons, examples = [], [], [], Counter(), []
    for i, clip in enumerate(clips):
        try:
            fb = clip_fbank(clip.path, cfg, min_frames)
        except AudioFileError as exc:
            reasons[_reason(exc)] += 1
            if len(examples) < 5:
                examples.append(str(exc))
            continue
        banks.append(pad_or_crop(fb, target_frames, pad))
        frames.append(min(fb.shape[0], target_frames))
        kept.append(i)
    fbanks = torch.stack(banks) if banks else torch.zeros(0, target_frames, cfg.mel_bins)
    scan = Scan(fbanks, torch.tensor(frames, dtype=torch.long), kept, dict(reasons), examples)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(scan.__dict__, tmp)
        tmp.replace(path)
    _MEMO[key] = scan
    return scan


def clip_mean_norm(fbanks: Tensor, frames: Tensor, pad: str = "zero") -> Tensor:
    """Per-clip cepstral mean normalisation: subtract each clip's per-bin mean over its ``frames`` valid frames;
    zero padding stays 0 (the normalised mean), repeated frames are shifted like the frames they repeat.

    Shapes:
        fbanks ``[N, T, F]``, frames ``[N]`` -> ``[N, T, F]``
    """
    t = torch.arange(fbanks.shape[1])
    valid = (t[None, :] < frames[:, None]).to(fbanks.dtype)[..., None]  # [N, T, 1]
    mean = (fbanks * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
    out = fbanks - mean
    return out * valid if pad == "zero" else out


class AudioClips(Dataset):
    """Normalised filterbanks of usable clips with labels, augmented per :class:`AugmentConfig` when given.

    Attributes: ``num_classes``, ``classes``, ``targets`` (class ids; the first label of multi-label clips),
    ``multilabel``, ``skipped`` (``{reason: count}``), ``frames`` (valid frames per clip), ``groups``,
    ``model_kwargs``.
    """

    def __init__(self, clips: Sequence[Clip], fbanks: Tensor, frames: Tensor, classes: Sequence[str],
                 stats: tuple[float, float], skipped: dict[str, int], augment: AugmentConfig | None = None,
                 multilabel: bool = False, cfg: FbankConfig = _FBANK, pad: str = "zero",
                 clip_norm: bool = False) -> None:
        self.clips, self.classes, self.num_classes = list(clips), list(classes), len(classes)
        self.fbanks = normalize(fbanks, *stats)
        self.frames, self.stats, self.skipped = frames, stats, dict(skipped)
        self.augment, self.multilabel, self.cfg, self.pad = augment, multilabel, cfg, pad
        self.clip_norm = clip_norm
        self.groups = [c.group for c in self.clips]
        self._targets = [c.label if isinstance(c.label, int) else c.label[0] for c in self.clips]
        self.model_kwargs = {"target_frames": int(fbanks.shape[1]), "mel_bins": int(fbanks.shape[2]),
                             "norm_mean": float(stats[0]), "norm_std": float(stats[1])}

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def targets(self) -> list[int]:
        return self._targets

    def _label(self, i: int) -> Tensor:
        y = torch.zeros(self.num_classes)
        lab = self.clips[i].label
        y[list(lab) if isinstance(lab, tuple) else lab] = 1.0
        return y

    @property
    def soft_labels(self) -> bool:
        """Labels are ``[num_classes]`` float vectors (multi-label data, or waveform mixup while training)."""
        return self.multilabel or bool(self.augment and self.augment.mixup > 0)

    def _mixed(self, i: int) -> tuple[Tensor, Tensor]:
        """AST/Audio-MAE waveform mixup with a random other clip; ``lam ~ Beta(10, 10)``."""
        j = int(torch.randint(len(self), ()).item())
        a, b = (load_audio(self.clips[k].path, self.cfg.sample_rate) for k in (i, j))
        n = a.numel()
        b = torch.nn.functional.pad(b, (0, max(0, n - b.numel())))[:n]
        lam = float(torch.distributions.Beta(10.0, 10.0).sample())
        fb = kaldi_fbank(lam * a + (1 - lam) * b, self.cfg)
        n = min(fb.shape[0], self.fbanks.shape[1])
        fb = pad_or_crop(fb, self.fbanks.shape[1], self.pad)
        if self.clip_norm:
            fb = clip_mean_norm(fb[None], torch.tensor([n]), self.pad)[0]
        return normalize(fb, *self.stats), lam * self._label(i) + (1 - lam) * self._label(j)

    def __getitem__(self, i: int) -> tuple[Tensor, int | Tensor]:
        aug = self.augment
        if aug is not None and aug.mixup > 0 and float(torch.rand(())) < aug.mixup:
            x, y = self._mixed(i)
        else:
            x = self.fbanks[i]
            y = self._label(i) if self.soft_labels else self.targets[i]
        if aug is not None:
            x = time_shift(spec_augment(x, aug.freqm, aug.timem), aug.time_shift)
        return x, y


def _warn_skipped(what: str, scan: Scan, total: int) -> None:
    n = sum(scan.skipped.values())
    if n:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(scan.skipped.items()))
        warnings.warn(f"{what}: skipped {n} of {total} clips ({counts}); e.g. {scan.examples[0]}", stacklevel=3)


def _augment(transform: str, freqm: int, timem: int, shift: int, mixup: float) -> AugmentConfig | None:
    if transform not in ("pretrain", "eval", "finetune"):
        raise ValueError(f"unknown transform {transform!r}; use 'pretrain', 'eval' or 'finetune'")
    if transform == "finetune":
        return AugmentConfig(freqm, timem, shift, mixup)
    if transform == "pretrain" and shift:
        return AugmentConfig(time_shift=shift)
    return None


def build_clips(split_clips: dict[str, list[Clip]], split: str, transform: str, classes: Sequence[str], *,
                target_frames: int, mel_bins: int = 128, patch_frames: int = 16,
                norm_stats: Sequence[float] | None = None, freqm: int = 0, timem: int = 0, time_shift: int = 0,
                mixup: float = 0.0, multilabel: bool = False, pad: str = "zero", clip_norm: bool = False,
                what: str = "audio") -> AudioClips:
    """An :class:`AudioClips` for ``split`` of ``split_clips`` (which must hold ``train``), normalised with
    ``norm_stats`` or the statistics of the usable training clips (after :func:`clip_mean_norm` with
    ``clip_norm``)."""
    if split not in split_clips:
        raise ValueError(f"{what} has no {split!r} split; available: {', '.join(sorted(split_clips))}")
    if target_frames < patch_frames or target_frames % patch_frames:
        raise ValueError(f"target_frames={target_frames} must be a positive multiple of the {patch_frames}-frame patch")
    if pad not in ("zero", "repeat"):
        raise ValueError(f"pad={pad!r}: use 'zero' (Audio-MAE's zero padding) or 'repeat' (tile short clips)")
    aug = _augment(transform, freqm, timem, time_shift, mixup)
    cfg = FbankConfig(mel_bins=mel_bins)
    scan = scan_clips(split_clips[split], target_frames, cfg, patch_frames, pad=pad)
    _warn_skipped(f"{what} {split}", scan, len(split_clips[split]))
    if not scan.kept:
        raise ValueError(f"{what} {split}: none of the {len(split_clips[split])} clips is usable "
                         f"({scan.skipped}); e.g. {scan.examples[:1]}")
    if norm_stats is not None:
        if len(norm_stats) != 2 or norm_stats[1] <= 0:
            raise ValueError(f"norm_stats must be [mean, std] with std > 0, got {list(norm_stats)}")
        stats = (float(norm_stats[0]), float(norm_stats[1]))
    else:
        train = scan if split == "train" else scan_clips(split_clips["train"], target_frames, cfg, patch_frames, pad=pad)
        stats = fbank_stats(clip_mean_norm(train.fbanks, train.frames, pad) if clip_norm else train.fbanks)
    clips = [split_clips[split][i] for i in scan.kept]
    fbanks = clip_mean_norm(scan.fbanks, scan.frames, pad) if clip_norm else scan.fbanks
    return AudioClips(clips, fbanks, scan.frames, classes, stats, scan.skipped, aug, multilabel, cfg, pad, clip_norm)


# -- FSDD ---------------------------------------------------------------------------------------------------
def _fsdd_layout(folder: Path) -> Path:
    rec = folder / "recordings" if (folder / "recordings").is_dir() else folder
    if not any(rec.glob("*_*_*.wav")):
        raise ValueError("no recordings/{digit}_{speaker}_{take}.wav files")
    return rec


def fsdd_folder(root: str | Path | None = None) -> Path:
    """The folder of FSDD's wav files: ``<root>/fsdd/recordings``, extracted from the shared tar if needed."""
    return prepared_folder(Path(root) if root else data_root(), "fsdd", "FSDD", _fsdd_layout, FSDD_TAR, _download_fsdd)


def _download_fsdd(base: Path, folder: Path) -> Path:
    """Fetch the FSDD release archive from GitHub and keep its ``recordings/`` as ``<base>/fsdd/recordings``."""
    import urllib.request

    base.mkdir(parents=True, exist_ok=True)
    archive = base / f".fsdd-{FSDD_VERSION}.tar.gz"
    download_or_explain("FSDD", folder / "recordings", FSDD_URL, lambda: urllib.request.urlretrieve(FSDD_URL, archive))
    try:
        return _fsdd_layout(extract_archive(archive, folder, "delete it and run again to download it afresh",
                                            pick=lambda tmp: next(tmp.glob("*/recordings")).parent))
    finally:
        archive.unlink(missing_ok=True)


def fsdd_splits(folder: Path, name: str) -> dict[str, list[Clip]]:
    """``train``/``test`` clips of the split scheme ``name`` (``fsdd-official`` or ``fsdd-loso-<speaker>``)."""
    scheme = name.removeprefix("fsdd-")
    clips = []
    for p in sorted(folder.glob("*.wav")):
        parts = p.stem.split("_")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            continue
        clips.append((Clip(p, int(parts[0]), parts[1]), int(parts[2])))
    speakers = sorted({c.group for c, _ in clips})
    if scheme == "official":
        is_test = [take < 5 for _, take in clips]
    elif scheme.startswith("loso-") and scheme[5:] in speakers:
        is_test = [c.group == scheme[5:] for c, _ in clips]
    else:
        raise ValueError(f"unknown FSDD split {name!r}; use fsdd-official or fsdd-loso-<speaker> with a speaker "
                         f"of {', '.join(speakers)}")
    return {"train": [c for (c, _), t in zip(clips, is_test) if not t],
            "test": [c for (c, _), t in zip(clips, is_test) if t]}


@register("dataset", "fsdd")
def fsdd(split: str = "train", transform: str = "eval", name: str = "fsdd-official", target_frames: int = 64,
         mel_bins: int = 128, root: str | None = None, norm_stats: list[float] | None = None, freqm: int = 0,
         timem: int = 0, time_shift: int = 0, mixup: float = 0.0, pad: str = "zero",
         clip_norm: bool = False,
         patch_frames: int = 16) -> AudioClips:
    """Free Spoken Digit Dataset: 10 digits, 6 speakers x 50 takes, 8 kHz (resampled to 16 kHz).

    ``name``: ``fsdd-official`` (takes 0-4 test, 5-49 train) or ``fsdd-loso-<speaker>`` (that speaker's 500
    clips are the test set). ``freqm``/``timem``/``time_shift``/``mixup``: fine-tuning augmentations
    (``time_shift`` also while pre-training). ``pad``: ``zero`` (Audio-MAE) or ``repeat`` (tile short clips).
    ``clip_norm``: per-clip mean normalisation (:func:`clip_mean_norm`). ``patch_frames``: the model's time
    patch; clips shorter than one patch are skipped and counted (set it to the model's ``patch_size[0]``).
    """
    splits = fsdd_splits(fsdd_folder(root), name)
    return build_clips(splits, split, transform, [str(d) for d in range(10)], target_frames=target_frames,
                       mel_bins=mel_bins, norm_stats=norm_stats, freqm=freqm, timem=timem, time_shift=time_shift,
                       mixup=mixup, pad=pad, clip_norm=clip_norm, patch_frames=patch_frames, what=name)


# -- user data: folders and AST JSON lists -----------------------------------------------------------------
def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def folder_splits(root: Path) -> tuple[dict[str, list[Clip]], list[str]]:
    """Clips per split of an audio folder (see :func:`audio_folder`) and the class names."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such audio folder; pass root=<folder with class sub-folders>")
    if (root / "train").is_dir():
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
        index = {c: i for i, c in enumerate(classes)}
        out = {}
        for split in ("train", "val", "test"):
            if (root / split).is_dir():
                out[split] = [Clip(p, index[p.parent.name]) for c in classes if (root / split / c).is_dir()
                              for p in _audio_files(root / split / c)]
        return out, classes
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders; expected <class>/*.wav or train/<class>/*.wav")
    index = {c: i for i, c in enumerate(classes)}
    lists = {}
    for split, fname in (("test", "testing_list.txt"), ("val", "validation_list.txt")):
        f = root / fname
        lists[split] = {ln.strip() for ln in f.read_text().splitlines() if ln.strip()} if f.is_file() else set()
    out = {"train": [], "val": [], "test": []}
    for c in classes:
        for p in _audio_files(root / c):
            rel = p.relative_to(root).as_posix()
            split = "test" if rel in lists["test"] else "val" if rel in lists["val"] else "train"
            out[split].append(Clip(p, index[c]))
    if not lists["test"]:
        raise ValueError(f"{root}: no testing_list.txt and no train/ and test/ folders; say which clips are test clips")
    return out, classes


@register("dataset", "audio_folder")
def audio_folder(split: str = "train", transform: str = "eval", root: str = "", target_frames: int = 128,
                 mel_bins: int = 128, norm_stats: list[float] | None = None, freqm: int = 0, timem: int = 0,
                 time_shift: int = 0, mixup: float = 0.0, pad: str = "zero", clip_norm: bool = False,
                 patch_frames: int = 16) -> AudioClips:
    """Clips in class folders: ``root/<class>/*.wav`` split by Speech Commands' ``testing_list.txt`` and
    ``validation_list.txt`` (paths relative to ``root``; the rest is ``train``), or ``root/{train,val,test}/<class>/``.
    """
    if not root:
        raise ValueError("audio_folder needs root=<folder with class sub-folders>; in a recipe set data.args.root=...")
    splits, classes = folder_splits(Path(root).expanduser())
    return build_clips(splits, split, transform, classes, target_frames=target_frames, mel_bins=mel_bins,
                       norm_stats=norm_stats, freqm=freqm, timem=timem, time_shift=time_shift, mixup=mixup,
                       pad=pad, clip_norm=clip_norm, patch_frames=patch_frames, what=f"audio folder {root}")


def read_label_csv(path: Path) -> dict[str, int]:
    """``class_labels_indices.csv`` (``index,mid,display_name``) -> ``{mid: index}``."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {r["mid"]: int(r["index"]) for r in rows}
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a class_labels_indices.csv with columns index,mid,display_name ({exc})") from exc


def read_json_list(path: Path, index: dict[str, int]) -> list[Clip]:
    """An AST data list ``{"data": [{"wav": path, "labels": "mid1,mid2"}]}``; relative paths are read from its folder."""
    try:
        entries = json.loads(Path(path).read_text())["data"]
        clips = []
        for e in entries:
            mids = [m for m in str(e["labels"]).split(",") if m]
            unknown = [m for m in mids if m not in index]
            if unknown or not mids:
                raise ValueError(f"labels {unknown or e['labels']!r} of {e['wav']} are not in the label csv")
            wav = Path(e["wav"])
            clips.append(Clip(wav if wav.is_absolute() else Path(path).parent / wav, tuple(index[m] for m in mids)))
        return clips
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not an AST data list {{'data': [{{'wav': ..., 'labels': ...}}]}} ({exc})") from exc


@register("dataset", "audio_json")
def audio_json(split: str = "train", transform: str = "eval", train: str = "", test: str = "", val: str | None = None,
               label_csv: str = "", target_frames: int = 1024, mel_bins: int = 128,
               norm_stats: list[float] | None = None, freqm: int = 0, timem: int = 0, time_shift: int = 0,
               mixup: float = 0.0, multilabel: bool | None = None, pad: str = "zero",
               clip_norm: bool = False, patch_frames: int = 16) -> AudioClips:
    """AST/Audio-MAE data lists (``train``/``test``/``val`` JSON files) with ``label_csv``.

    ``multilabel``: None decides from the data (any clip with several labels -> multi-hot ``[C]`` float targets,
    which the protocols train with binary cross-entropy and score with mAP); True gives multi-hot targets even
    when every clip has one label; False keeps the first label of each clip as its class id.
    """
    missing = [k for k, v in (("train", train), ("test", test), ("label_csv", label_csv)) if not v]
    if missing:
        raise ValueError(f"audio_json needs {', '.join(missing)} (paths of the JSON lists and class_labels_indices.csv); "
                         f"in a recipe set {', '.join(f'data.args.{k}=...' for k in missing)}")
    index = read_label_csv(Path(label_csv).expanduser())
    files = {"train": train, "test": test, **({"val": val} if val else {})}
    splits = {k: read_json_list(Path(v).expanduser(), index) for k, v in files.items() if v}
    if "train" not in splits:
        raise ValueError("audio_json needs train=<train json> (it also gives the normalisation statistics)")
    multi = any(isinstance(c.label, tuple) and len(c.label) > 1 for cs in splits.values() for c in cs)
    multi = multi if multilabel is None else multilabel
    if not multi:
        splits = {k: [Clip(c.path, c.label[0] if isinstance(c.label, tuple) else c.label) for c in cs]
                  for k, cs in splits.items()}
    classes = [m for m, _ in sorted(index.items(), key=lambda kv: kv[1])]
    return build_clips(splits, split, transform, classes, target_frames=target_frames, mel_bins=mel_bins,
                       norm_stats=norm_stats, freqm=freqm, timem=timem, time_shift=time_shift, mixup=mixup,
                       multilabel=multi, pad=pad, clip_norm=clip_norm, patch_frames=patch_frames,
                       what=f"audio list {files.get(split)}")
