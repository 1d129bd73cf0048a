"""Fine-tuning augmentations of Audio-MAE/AST, with the values a recipe gives.

* SpecAugment: torchaudio's ``FrequencyMasking(freqm)`` and ``TimeMasking(timem)`` (one band of each, width
  drawn uniformly up to the given value), on the normalised filterbank.
* Random time shift: a cyclic roll of the filterbank by up to ``time_shift`` frames (AST's ``torch.roll``).
* Waveform mixup (AST/Audio-MAE's dataset-level mixup): with probability ``mixup``, a clip's waveform is mixed
  with another random clip's, ``lam * a + (1 - lam) * b`` with ``lam ~ Beta(10, 10)``, before the filterbank;
  the label becomes ``lam * y_a + (1 - lam) * y_b``. It lives in :class:`maezoo.audio.data.AudioClips`, which
  holds the waveforms.

Shapes:
    fbank ``[T, F]`` -> ``[T, F]``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio
from torch import Tensor


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation settings (0 turns one off)."""

    #: SpecAugment: max width of the masked frequency band (mel bins); Audio-MAE ESC-50/SPC: 48
    freqm: int = 0
    #: SpecAugment: max width of the masked time band (frames); Audio-MAE ESC-50: 96, SPC: 48
    timem: int = 0
    #: max cyclic time shift (frames)
    time_shift: int = 0
    #: probability of waveform mixup with another clip (Audio-MAE SPC/AudioSet: 0.5)
    mixup: float = 0.0

    def __post_init__(self) -> None:
        for name in ("freqm", "timem", "time_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.mixup <= 1.0:
            raise ValueError(f"mixup is a probability in [0, 1], got {self.mixup}")

    @property
    def active(self) -> bool:
        return bool(self.freqm or self.timem or self.time_shift or self.mixup)


def spec_augment(fbank: Tensor, freqm: int, timem: int) -> Tensor:
    """torchaudio's frequency and time masking (mask value 0, the normalised mean). ``[T, F] -> [T, F]``."""
    if not freqm and not timem:
        return fbank
    x = fbank.t().unsqueeze(0)  # [1, F, T], torchaudio's layout
    if freqm:
        x = torchaudio.transforms.FrequencyMasking(freqm)(x)
    if timem:
        x = torchaudio.transforms.TimeMasking(timem)(x)
    return x.squeeze(0).t()


def time_shift(fbank: Tensor, max_shift: int) -> Tensor:
    """Cyclic roll along time by a uniform integer in ``[-max_shift, max_shift]``. ``[T, F] -> [T, F]``."""
    if not max_shift:
        return fbank
    s = int(torch.randint(-max_shift, max_shift + 1, ()).item())
    return torch.roll(fbank, s, dims=0)


__all__ = ["AugmentConfig", "spec_augment", "time_shift"]
