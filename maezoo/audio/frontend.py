"""Audio-MAE's front end: read, downmix, resample to 16 kHz, Kaldi log-mel filterbanks, pad/crop, normalise.

:func:`kaldi_fbank` calls ``torchaudio.compliance.kaldi.fbank`` exactly as Audio-MAE (and AST) do: the waveform
is mean-subtracted, then 128 mel bins, Hanning window of 25 ms, 10 ms shift, ``htk_compat=True``,
``use_energy=False``, ``dither=0``. Audio is resampled to 16 kHz first: at 8 kHz, 4 of the 128 mel filters
between 20 Hz and 4 kHz hold no FFT bin (constant ``log(eps)`` features); at 16 kHz 1 does, as in Audio-MAE.

:func:`batched_fbank` computes the same filterbanks for a whole padded batch at once (framing with ``unfold``,
one FFT and one matrix product for the batch), on any device; it equals the reference within
:data:`BATCHED_TOLERANCE` (tested in ``tests/audio/test_audio.py``).

Normalisation is ``(fbank - mean) / (2 * std)`` with the training split's statistics (AudioSet: -4.2677 /
4.5690); :func:`fbank_stats` computes them for a new dataset.

Shapes:
    waveform ``[L]`` (mono, 16 kHz) -> fbank ``[frames, mel_bins]``; batched: ``[B, L]`` -> ``[B, frames, mel_bins]``
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor

#: the sample rate every clip is resampled to before the filterbanks
SAMPLE_RATE = 16000
#: AudioSet statistics used by Audio-MAE and AST (mean, std of the log-mel filterbanks)
AUDIOSET_STATS = (-4.2677393, 4.5689974)
#: max |batched_fbank - kaldi_fbank| allowed (float32, log-mel units), checked by the tests
BATCHED_TOLERANCE = 2e-3


@dataclass(frozen=True)
class FbankConfig:
    """Audio-MAE's filterbank settings (every value configurable; defaults are the paper's)."""

    mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    sample_rate: int = SAMPLE_RATE

    @property
    def window(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    def frames(self, num_samples: int) -> int:
        """Kaldi frames (``snip_edges=True``) of a clip of ``num_samples`` samples (0 when shorter than a window)."""
        return 0 if num_samples < self.window else 1 + (num_samples - self.window) // self.shift


class AudioFileError(ValueError):
    """An audio file cannot be used (unreadable, empty, NaN samples, too short); the message says which and why."""


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Read ``path`` with soundfile, average the channels (stereo -> mono) and resample to ``sample_rate``.

    Raises :class:`AudioFileError` for a file soundfile cannot decode (e.g. not a wav despite its name),
    0 samples, or NaN/infinite samples.

    Shapes:
        returns ``[L]`` float32
    """
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:  # RuntimeError: older soundfile versions
        raise AudioFileError(f"{path}: not a readable audio file ({exc}); convert it to wav/flac or remove it") from exc
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds 0 samples; remove it from the dataset")
    if not np.isfinite(data).all():
        raise AudioFileError(f"{path}: the file holds NaN or infinite samples; re-export it or remove it")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    return resample(wave, int(sr), sample_rate)


def resample(wave: Tensor, orig: int, new: int = SAMPLE_RATE) -> Tensor:
    """``torchaudio.functional.resample`` (band-limited sinc), a no-op when the rates match. ``[..., L] -> [..., L']``."""
    return wave if orig == new else torchaudio.functional.resample(wave, orig, new)


def kaldi_fbank(wave: Tensor, cfg: FbankConfig = FbankConfig()) -> Tensor:
    """The reference: one clip through ``torchaudio.compliance.kaldi.fbank`` as Audio-MAE calls it.

    Shapes:
        wave ``[L]`` (at ``cfg.sample_rate``) -> ``[frames, mel_bins]`` (``frames = cfg.frames(L)``)
    """
    from torchaudio.compliance import kaldi

    wave = wave.reshape(1, -1).float()
    return kaldi.fbank(wave - wave.mean(), htk_compat=True, sample_frequency=cfg.sample_rate, use_energy=False,
                       window_type="hanning", num_mel_bins=cfg.mel_bins, dither=0.0,
                       frame_shift=cfg.frame_shift_ms, frame_length=cfg.frame_length_ms)


def _mel_matrix(cfg: FbankConfig, n_fft: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    from torchaudio.compliance import kaldi

    banks, _ = kaldi.get_mel_banks(cfg.mel_bins, n_fft, float(cfg.sample_rate), 20.0, 0.0, 100.0, -500.0, 1.0)
    return F.pad(banks, (0, 1)).to(device=device, dtype=dtype)  # [mel_bins, n_fft // 2 + 1]


def batched_fbank(waves: Tensor, lengths: Tensor | None = None, cfg: FbankConfig = FbankConfig()) -> Tensor:
    """:func:`kaldi_fbank` for a zero-padded batch in one pass (any device).

    Each clip is mean-subtracted over its own ``lengths[b]`` samples; frames reaching past a clip's end are set
    to 0, as Audio-MAE's zero padding of the filterbank does. Equal to the per-clip reference within
    :data:`BATCHED_TOLERANCE`.

    Shapes:
        waves ``[B, L]``, lengths ``[B]`` (default: all ``L``) -> ``[B, cfg.frames(L), mel_bins]``
    """
    if waves.dim() != 2:
        raise ValueError(f"batched_fbank expects [B, L] waveforms, got {tuple(waves.shape)}")
    b, length = waves.shape
    if length < cfg.window:
        raise ValueError(f"waveforms of {length} samples are shorter than one {cfg.window}-sample window")
    waves = waves.float()
    lengths = torch.full((b,), length, device=waves.device) if lengths is None else lengths.to(waves.device)
    valid = torch.arange(length, device=waves.device)[None] < lengths[:, None]
    mean = (waves * valid).sum(1, keepdim=True) / lengths[:, None].clamp_min(1)
    waves = (waves - mean) * valid
    frames = waves.unfold(1, cfg.window, cfg.shift)  # [B, M, W]
    frames = frames - frames.mean(-1, keepdim=True)  # remove_dc_offset
    prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - 0.97 * prev  # pre-emphasis (Kaldi replicates the first sample)
    window = torch.hann_window(cfg.window, periodic=False, device=waves.device, dtype=waves.dtype)
    n_fft = 1 << (cfg.window - 1).bit_length()  # round_to_power_of_two
    power = torch.fft.rfft(frames * window, n=n_fft).abs().pow(2)
    mel = power @ _mel_matrix(cfg, n_fft, waves.device, waves.dtype).T
    out = mel.clamp_min(torch.finfo(waves.dtype).eps).log()
    n_valid = torch.where(lengths >= cfg.window, 1 + (lengths - cfg.window) // cfg.shift, 0)
    keep = torch.arange(out.shape[1], device=out.device)[None] < n_valid[:, None]
    return out * keep[..., None]


def pad_or_crop(fbank: Tensor, frames: int, mode: str = "zero") -> Tensor:
    """Pad or crop the time axis to ``frames``. ``[T, F] -> [frames, F]``.

    ``mode="zero"``: Audio-MAE's ``ZeroPad2d`` (0 in log-mel units, i.e. louder than the speech of a short clip);
    ``"repeat"``: tile the clip until it fills ``frames`` (no artificial region in clips much shorter than the
    target, e.g. spoken digits).
    """
    if mode not in ("zero", "repeat"):
        raise ValueError(f"unknown pad mode {mode!r}; use 'zero' (Audio-MAE) or 'repeat'")
    p = frames - fbank.shape[-2]
    if p > 0 and mode == "repeat" and fbank.shape[-2] > 0:
        reps = -(-frames // fbank.shape[-2])
        return fbank.repeat(*([1] * (fbank.dim() - 2)), reps, 1)[..., :frames, :]
    if p > 0:
        return F.pad(fbank, (0, 0, 0, p))
    return fbank[..., :frames, :]


def normalize(fbank: Tensor, mean: float, std: float) -> Tensor:
    """Audio-MAE/AST normalisation ``(fbank - mean) / (2 * std)``."""
    return (fbank - mean) / (2 * std)


def fbank_stats(fbanks: Tensor) -> tuple[float, float]:
    """Mean and std of (padded) filterbanks of a training split, as AST's ``get_norm_stats`` computes them.

    Shapes:
        fbanks ``[N, T, F]`` -> two floats
    """
    f = fbanks.double()
    std = float(f.std())
    if not math.isfinite(std) or std <= 0:
        raise ValueError("filterbank statistics need at least two distinct values; is the training split empty?")
    return float(f.mean()), std


__all__ = [
    "AUDIOSET_STATS", "AudioFileError", "BATCHED_TOLERANCE", "FbankConfig", "SAMPLE_RATE", "batched_fbank",
    "fbank_stats", "kaldi_fbank", "load_audio", "normalize", "pad_or_crop", "resample",
]
