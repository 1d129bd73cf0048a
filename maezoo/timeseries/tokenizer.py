"""Series patches: segments of ``patch_len`` steps every ``stride`` steps, RevIN, 1-D positions.

Channel-independent by default (PatchTST, TSFormer): each of the ``C`` channels is its own sequence and the
channels share every weight, so a batch ``[B, C, L]`` becomes a token batch of ``B * C`` rows (row
``b * C + c`` is channel ``c`` of sample ``b``). ``channel_independent=False`` mixes the channels instead:
one token per segment holds every channel (``n_vars`` must then be fixed).

RevIN (instance normalisation, Kim et al. ICLR'22) standardises each row over the look-back window before
patching; the statistics travel in ``Tokens.context`` (``revin_mean``, ``revin_std``) and
:meth:`SeriesPatchTokenizer.inverse` puts predictions back on the input's scale. ``patchify`` returns the
RevIN-normalised segments, so reconstruction targets and tokens share one scale. A constant window has
standard deviation 0; ``sqrt(var + eps)`` keeps it finite (it becomes all zeros).

A length that is not ``patch_len + k * stride`` is cropped (the oldest steps dropped, as PatchTST's
self-supervised code does) or padded (the last value repeated, PatchTST's ``padding_patch="end"``).

Shapes:
    x: ``[B, C, L]`` float; grid ``(N,)`` with ``N = (L' - patch_len) // stride + 1`` (``L'`` after crop/pad)
    tokens: ``[B * C, N, D]`` (channel-independent) or ``[B, N, D]``
    patchify(x): ``[B * C, N, patch_len]`` or ``[B, N, patch_len * C]`` (time-major, channel fastest)
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.core.tokenizer import Tokenizer, Tokens
from maezoo.registry import register

Remainder = Literal["crop", "pad"]
PosEmbed = Literal["sincos", "learned"]


@register("tokenizer", "series_patch")
class SeriesPatchTokenizer(Tokenizer):
    """Patches of a multivariate series with RevIN (see the module docstring).

    Args:
        patch_len, stride: segment length and step (``stride < patch_len`` overlaps segments).
        channel_independent: fold channels into the token batch (default) or mix them in each token.
        n_vars: channels; required when mixing channels, checked when given.
        revin: standardise each row over its window (and de-normalise in :meth:`inverse`).
        pos_embed: ``"sincos"`` (fixed) or ``"learned"`` (up to ``max_patches`` positions).
        remainder: ``"crop"`` the oldest steps or ``"pad"`` the end when the length does not fit.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        patch_len: int = 12,
        stride: int | None = None,
        channel_independent: bool = True,
        n_vars: int | None = None,
        revin: bool = True,
        revin_eps: float = 1e-5,
        pos_embed: PosEmbed = "sincos",
        max_patches: int = 1024,
        remainder: Remainder = "crop",
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        stride = patch_len if stride is None else stride
        if int(patch_len) < 1 or int(stride) < 1:
            raise ValueError(f"series tokenizer needs patch_len >= 1 and stride >= 1, got {patch_len}, {stride}")
        if not channel_independent and not n_vars:
            raise ValueError("a channel-mixing series tokenizer (channel_independent=False) needs n_vars=<channels>")
        if pos_embed not in ("sincos", "learned"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        if remainder not in ("crop", "pad"):
            raise ValueError(f"remainder must be 'crop' (drop the oldest steps) or 'pad' (repeat the last value), "
                             f"got {remainder!r}")
        if embed_dim % 2:
            raise ValueError(f"series tokenizer needs an even embed_dim (1-D sin-cos positions), got {embed_dim}")
        self.embed_dim, self.patch_len, self.stride = int(embed_dim), int(patch_len), int(stride)
        self.channel_independent, self.n_vars = bool(channel_independent), (int(n_vars) if n_vars else None)
        self.revin, self.revin_eps, self.remainder = bool(revin), float(revin_eps), remainder
        self.check_finite = check_finite
        per_token = 1 if self.channel_independent else int(self.n_vars)  # type: ignore[arg-type]
        self.target_dim = self.patch_len * per_token
        self.proj = nn.Linear(self.target_dim, self.embed_dim)
        self.pos_kind: PosEmbed = pos_embed
        self.max_patches = int(max_patches)
        self.pos = nn.Parameter(torch.empty(self.max_patches, self.embed_dim)) if pos_embed == "learned" else None
        if self.pos is not None:
            nn.init.uniform_(self.pos, -0.02, 0.02)  # PatchTST's W_pos

    # -- lengths --------------------------------------------------------------------------------------
    def num_patches(self, length: int) -> int:
        """Segments of a series of ``length`` steps (after crop/pad)."""
        if length < self.patch_len:
            raise ValueError(f"series of {length} steps is shorter than one patch of {self.patch_len}; use a longer "
                             f"context (data.args.context >= {self.patch_len}) or a smaller patch_len")
        extra = (length - self.patch_len) % self.stride
        return (length - self.patch_len) // self.stride + 1 + (1 if extra and self.remainder == "pad" else 0)

    def _fit_length(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        extra = (length - self.patch_len) % self.stride
        if not extra:
            return x
        if self.remainder == "crop":
            return x[..., extra:]
        return F.pad(x, (0, self.stride - extra), mode="replicate")

    # -- interface ------------------------------------------------------------------------------------
    def validate(self, x: Any) -> None:
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"series tokenizer expects a [B, C, L] float tensor (batch, channels, steps), got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"series batch must be floating point, got {x.dtype}; convert the columns to numbers")
        if self.n_vars is not None and x.shape[1] != self.n_vars:
            raise ValueError(f"series has {x.shape[1]} channel(s) but the tokenizer was built for n_vars={self.n_vars}; "
                             "select the matching columns or rebuild the model with n_vars set to the data's channels")
        n = self.num_patches(int(x.shape[-1]))
        if self.pos is not None and n > self.max_patches:
            raise ValueError(f"{n} patches exceed the learned position table of {self.max_patches}; raise max_patches")
        if self.check_finite and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
            raise ValueError("series batch contains NaN or infinite values; fill or drop missing steps in the data "
                             "(the dataset's `missing` option) before training")

    def grid(self, x: Tensor) -> tuple[int]:
        return (self.num_patches(int(x.shape[-1])),)

    def token_batch_size(self, x: Tensor) -> int:
        return int(x.shape[0] * x.shape[1]) if self.channel_independent else int(x.shape[0])

    def _normalise(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """RevIN over the time axis of each (sample, channel). ``[B, C, L]`` -> same, stats ``[B, C, 1]``."""
        if not self.revin:
            return x, {}
        mean = x.mean(-1, keepdim=True).detach()
        std = (x.var(-1, keepdim=True, unbiased=False) + self.revin_eps).sqrt().detach()
        return (x - mean) / std, {"revin_mean": mean, "revin_std": std}

    def _segments(self, x: Tensor) -> Tensor:
        """``[B, C, L]`` (normalised) -> ``[B', N, target_dim]``."""
        seg = self._fit_length(x).unfold(-1, self.patch_len, self.stride)  # [B, C, N, P]
        if self.channel_independent:
            return seg.flatten(0, 1)
        return rearrange(seg, "b c n p -> b n (p c)")

    def forward(self, x: Tensor) -> Tokens:
        xn, stats = self._normalise(x)
        seg = self._segments(xn)
        n = seg.shape[1]
        t = self.proj(seg)
        pos = self.pos[:n] if self.pos is not None else sincos_pos_embed(self.embed_dim, (n,), t.device, t.dtype)
        ctx: dict[str, Any] = {"pos_embed": pos}
        if stats:  # per token-batch row: [B*C, 1, 1] (channel-independent) or [B, 1, C]
            ctx.update({k: self._row_stats(v) for k, v in stats.items()})
        return Tokens(t + pos, (n,), ctx)

    def _row_stats(self, s: Tensor) -> Tensor:
        return s.reshape(-1, 1, 1) if self.channel_independent else s.transpose(1, 2)

    def patchify(self, x: Tensor) -> Tensor:
        return self._segments(self._normalise(x)[0])

    def unpatchify(self, patches: Tensor, grid: tuple[int, ...]) -> Tensor:
        """Segments back to a series (overlaps averaged). ``[B', N, P]`` -> ``[B, C, L']``."""
        n = int(grid[0])
        if self.channel_independent:
            p = patches.reshape(-1, 1, n, self.patch_len)  # [B*C, 1, N, P] rows as channels of one sample
        else:
            p = rearrange(patches, "b n (p c) -> b c n p", p=self.patch_len)
        b, c = p.shape[:2]
        length = self.patch_len + (n - 1) * self.stride
        flat = rearrange(p, "b c n p -> (b c) p n")
        out = F.fold(flat, (1, length), (1, self.patch_len), stride=(1, self.stride))
        cnt = F.fold(torch.ones_like(flat), (1, length), (1, self.patch_len), stride=(1, self.stride))
        series = (out / cnt).reshape(b, c, length)
        return series.reshape(-1, 1, length) if self.channel_independent else series

    def inverse(self, values: Tensor, context: dict[str, Any]) -> Tensor:
        """Undo RevIN on values of the same batch: ``[B', K, V]`` with time-major, channel-fastest values
        (a patchify row, or a forecast of ``H`` steps as ``[B', 1, H * C/r]``)."""
        if "revin_mean" not in context:
            return values
        mean, std = context["revin_mean"], context["revin_std"]
        if self.channel_independent:
            return values * std.to(values.dtype) + mean.to(values.dtype)
        c = mean.shape[-1]
        v = values.reshape(*values.shape[:-1], values.shape[-1] // c, c)
        return (v * std.unsqueeze(1).to(v.dtype) + mean.unsqueeze(1).to(v.dtype)).reshape(values.shape)

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Random series of 4 patches (3 channels, or ``n_vars``)."""
        c = self.n_vars or 3
        return torch.randn(batch_size, c, self.patch_len + 3 * self.stride)

