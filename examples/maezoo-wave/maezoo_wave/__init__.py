"""maezoo-wave: masked autoencoding of 1-D waveforms, as a maezoo plugin (see docs/plugins.md).

Registered through the entry points in ``pyproject.toml``:
    tokenizer ``wave`` (:class:`WaveTokenizer`), dataset ``wave_sines`` (:func:`sine_waves`),
    model ``wave_mae_tiny`` (:func:`wave_mae_tiny`), masking ``wave_span`` (:mod:`maezoo_wave.masking`).

Shapes:
    x: ``[B, C, L]`` float waveforms; grid ``(L / patch,)``; tokens ``[B, L / patch, embed_dim]``
    patchify(x): ``[B, L / patch, patch * C]`` (each token: ``patch`` consecutive samples of every channel)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

import maezoo
from maezoo.core import MaskedAutoencoder, Tokenizer, Tokens, sincos_pos_embed

#: recipes shipped inside the package (``maezoo run <path>``)
RECIPES = Path(__file__).resolve().parent / "recipes"


class WaveTokenizer(Tokenizer):
    """Cut ``[B, C, L]`` waveforms into non-overlapping windows of ``patch`` samples and embed each linearly."""

    def __init__(self, embed_dim: int = 192, patch: int = 16, channels: int = 1) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"wave tokenizer needs an even embed_dim (1-D sin-cos positions), got {embed_dim}")
        if patch < 1 or channels < 1:
            raise ValueError(f"patch and channels must be positive, got patch={patch}, channels={channels}")
        self.embed_dim, self.patch, self.channels = embed_dim, patch, channels
        self.target_dim = patch * channels
        self.proj = nn.Linear(self.target_dim, embed_dim)

    def validate(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"wave tokenizer expects a [B, C, L] float tensor, got {shape}")
        if x.shape[1] != self.channels:
            raise ValueError(f"waveform has {x.shape[1]} channel(s); the tokenizer was built for channels={self.channels}")
        if x.shape[2] < self.patch or x.shape[2] % self.patch:
            raise ValueError(f"waveform length {x.shape[2]} must be a positive multiple of patch={self.patch}; crop or pad it")
        if not x.is_floating_point():
            raise ValueError(f"waveform must be floating point, got {x.dtype}")

    def grid(self, x: Tensor) -> tuple[int]:
        return (x.shape[-1] // self.patch,)

    def forward(self, x: Tensor) -> Tokens:
        grid = self.grid(x)
        t = self.proj(self.patchify(x))  # [B, N, D]
        pos = sincos_pos_embed(self.embed_dim, grid).to(t.device, t.dtype)  # [N, D]
        return Tokens(t + pos, grid, {"pos_embed": pos})

    def patchify(self, x: Tensor) -> Tensor:
        b, c, length = x.shape
        return x.reshape(b, c, length // self.patch, self.patch).permute(0, 2, 3, 1).reshape(b, length // self.patch, -1)

    def unpatchify(self, patches: Tensor, grid: tuple[int, ...]) -> Tensor:
        b, n = patches.shape[0], grid[0]
        return patches.reshape(b, n, self.patch, self.channels).permute(0, 3, 1, 2).reshape(b, self.channels, n * self.patch)

    def example_input(self, batch_size: int = 2) -> Tensor:
        return torch.randn(batch_size, self.channels, 4 * self.patch)


class SineWaves(Dataset):
    """Noisy sums of sines; the label is the index of the base frequency (``num_classes`` of them)."""

    def __init__(self, waves: Tensor, labels: Tensor, num_classes: int) -> None:
        self.waves, self.labels, self.num_classes = waves, labels, num_classes

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.waves[i], int(self.labels[i])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()


def sine_waves(
    split: str = "train", transform: str = "pretrain", size: int = 512, length: int = 256, channels: int = 1,
    num_classes: int = 4, seed: int = 0,
) -> SineWaves:
    """A synthetic labelled waveform set (``(x [channels, length], label)`` samples), built in memory."""
    if split not in ("train", "test"):
        raise ValueError(f"wave_sines split must be 'train' or 'test', got {split!r}")
    g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    labels = torch.randint(0, num_classes, (size,), generator=g)
    t = torch.arange(length, dtype=torch.float32) / length
    freq = (2.0 + 3.0 * labels.float()).view(-1, 1, 1)  # [size, 1, 1]
    phase = 2 * torch.pi * torch.rand(size, channels, 1, generator=g)
    waves = torch.sin(2 * torch.pi * freq * t + phase) + 0.3 * torch.sin(4 * torch.pi * freq * t)
    waves = waves + 0.1 * torch.randn(size, channels, length, generator=g)
    return SineWaves(waves, labels, num_classes)


def wave_mae_tiny(patch: int = 16, channels: int = 1, mask_ratio: float = 0.75) -> MaskedAutoencoder:
    """A preset: the generic ``mae`` model around the ``wave`` tokenizer, sized for a CPU."""
    return maezoo.create_model(
        "mae", tokenizer="wave", tokenizer_args={"patch": patch, "channels": channels}, embed_dim=64, depth=2,
        num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2, masking="wave_span", mask_ratio=mask_ratio,
    )


__all__ = ["RECIPES", "SineWaves", "WaveTokenizer", "sine_waves", "wave_mae_tiny"]
