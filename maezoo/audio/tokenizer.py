"""Spectrogram patches: 16 x 16 patches over (time, frequency) of normalised log-mel filterbanks.

The input is a batch of normalised filterbanks ``[B, T, F]`` (time first, as Audio-MAE feeds ``[B, 1, T, F]``
to its patch embedding). The grid ``(T / p_t, F / p_f)`` is derived from each batch, so one model runs at 128
frames (Speech Commands) and at 1,024 (AudioSet) alike; the fixed 2-D sin-cos position embedding is built for
that grid, time as rows and frequency as columns (MAE's ``get_2d_sincos_pos_embed`` layout).

The normalisation statistics of the training set live in the tokenizer as buffers (``norm_mean``,
``norm_std``), so they are saved with the checkpoint, and :meth:`AudioTokenizer.features` turns raw
waveforms into model inputs with them.

Shapes:
    x: ``[B, T, F]``; grid ``(T/p_t, F/p_f)``; tokens ``[B, N, D]``
    patchify(x): ``[B, N, p_t * p_f]`` in ``(p_t, p_f)`` order; unpatchify is its inverse
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from maezoo.audio.frontend import AUDIOSET_STATS, FbankConfig, batched_fbank, normalize, pad_or_crop, resample
from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.core.tokenizer import Tokenizer, Tokens
from maezoo.registry import register


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@register("tokenizer", "audio")
class AudioTokenizer(Tokenizer):
    """Audio-MAE's patch embedding over ``[B, T, F]`` filterbanks.

    Args:
        embed_dim: token width (must divide by 4 for the 2-D sin-cos positions).
        patch_size: ``(time, frequency)`` patch, 16 x 16 in Audio-MAE.
        mel_bins: ``F``, the filterbank's mel bins (128).
        target_frames: ``T`` the datasets pad or crop to (1,024 AudioSet, 512 ESC-50, 128 Speech Commands);
            used by :meth:`features` and :meth:`example_input`; other lengths are accepted too.
        norm_mean, norm_std: the training set's filterbank statistics (default: AudioSet's).
    """

    def __init__(
        self,
        embed_dim: int = 768,
        patch_size: int | tuple[int, int] = 16,
        mel_bins: int = 128,
        target_frames: int = 1024,
        norm_mean: float = AUDIOSET_STATS[0],
        norm_std: float = AUDIOSET_STATS[1],
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if embed_dim % 4:
            raise ValueError(f"audio tokenizer needs embed_dim divisible by 4 (2-D sin-cos positions), got {embed_dim}")
        if norm_std <= 0:
            raise ValueError(f"norm_std must be > 0, got {norm_std}; compute it on the training split (fbank_stats)")
        self.patch_size = _pair(patch_size)
        self.embed_dim, self.mel_bins, self.target_frames = embed_dim, mel_bins, target_frames
        self.check_finite = check_finite
        self._check_size(target_frames, mel_bins)
        self.target_dim = self.patch_size[0] * self.patch_size[1]
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        w = self.proj.weight.data  # MAE: initialise like a linear layer on the flattened patch
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.proj.bias)
        self.register_buffer("norm_mean", torch.tensor(float(norm_mean)))
        self.register_buffer("norm_std", torch.tensor(float(norm_std)))

    def _check_size(self, t: int, f: int) -> None:
        pt, pf = self.patch_size
        if t < pt or f < pf:
            raise ValueError(f"spectrogram of {t} frames x {f} mel bins is smaller than one {pt}x{pf} patch; "
                             "pad the clips to more frames (target_frames) or use smaller patches")
        if t % pt or f % pf:
            raise ValueError(f"spectrogram of {t} frames x {f} mel bins does not divide into {pt}x{pf} patches; "
                             f"pad or crop to a multiple (e.g. target_frames={max(pt, t - t % pt)})")

    def validate(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"audio tokenizer expects normalised filterbanks [B, T, F] (time, mel bins), got {shape}; "
                             "turn waveforms into inputs with AudioTokenizer.features(waves, sample_rate)")
        if x.shape[2] != self.mel_bins:
            raise ValueError(f"filterbanks have {x.shape[2]} mel bins but the tokenizer was built for "
                             f"mel_bins={self.mel_bins}; compute {self.mel_bins} bins or build with mel_bins={x.shape[2]}")
        self._check_size(x.shape[1], x.shape[2])
        if not x.is_floating_point():
            raise ValueError(f"filterbank batch must be floating point, got {x.dtype}")
        if self.check_finite and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
            raise ValueError("filterbank batch contains NaN or infinite values; check the audio files and the front end")

    def grid(self, x: Tensor) -> tuple[int, int]:
        return (x.shape[1] // self.patch_size[0], x.shape[2] // self.patch_size[1])

    def forward(self, x: Tensor) -> Tokens:
        grid = self.grid(x)
        t = self.proj(x.unsqueeze(1)).flatten(2).transpose(1, 2)  # [B, N, D], time-major
        pos = sincos_pos_embed(self.embed_dim, grid, t.device, t.dtype)
        return Tokens(t + pos, grid, {"pos_embed": pos})

    def patchify(self, x: Tensor) -> Tensor:
        pt, pf = self.patch_size
        return rearrange(x, "b (t p) (f q) -> b (t f) (p q)", p=pt, q=pf)

    def unpatchify(self, patches: Tensor, grid: tuple[int, int]) -> Tensor:
        pt, pf = self.patch_size
        return rearrange(patches, "b (t f) (p q) -> b (t p) (f q)", t=grid[0], f=grid[1], p=pt, q=pf)

    @torch.no_grad()
    def features(self, waves: Tensor, sample_rate: int, lengths: Tensor | None = None) -> Tensor:
        """Model inputs from raw mono waveforms: resample to 16 kHz, Kaldi fbank, pad/crop, normalise with the
        stored statistics (batched on the waveforms' device).

        Shapes:
            waves ``[B, L]`` at ``sample_rate`` (``lengths`` ``[B]`` when zero-padded) -> ``[B, target_frames, mel_bins]``
        """
        cfg = FbankConfig(mel_bins=self.mel_bins)
        w = resample(waves.float(), int(sample_rate), cfg.sample_rate)
        if lengths is not None:
            lengths = (lengths.float() * cfg.sample_rate / sample_rate).floor().long()
        fb = pad_or_crop(batched_fbank(w, lengths, cfg), self.target_frames)
        return normalize(fb, float(self.norm_mean), float(self.norm_std))

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Random filterbanks of a 2 x (mel_bins / 16) patch grid."""
        return torch.randn(batch_size, 2 * self.patch_size[0], self.mel_bins)
