"""The masked autoencoder, composed of parts: tokenizer, masking, encoder, decoder, target, loss.

Two ways to handle hidden tokens (``mask_mode``):
    ``"drop"``: hidden tokens are removed before the encoder (MAE, VideoMAE, Audio-MAE, TSFormer);
        the encoder sees ``N_vis`` tokens, the decoder puts mask tokens back.
    ``"replace"``: hidden tokens are replaced by a learned mask token and the encoder sees all ``N``
        (SimMIM, GraphMAE, BERT, PatchTST). ``replace_rate`` of the hidden tokens get a random other
        token instead (GraphMAE's random substitution, BERT's 10%). Encoders that need every position
        but handle the mask themselves (ConvMAE's masked convolutions) set ``consumes_mask = True`` and
        receive the mask in ``context["mask"]``.

Shapes:
    forward(x) -> MAEOutput with pred/target ``[B, N, P]``, ``mask.mask`` ``[B, N]``
    encode(x, pool="cls"|"mean") -> ``[B, D]``; ``pool="none"`` -> ``[B, N, D]`` (prefix tokens removed)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from maezoo.core.masking import Mask, MaskingStrategy, apply_drop, apply_replace
from maezoo.core.tokenizer import Tokenizer, Tokens
from maezoo.registry import build, get

MaskMode = Literal["drop", "replace"]
Pool = Literal["cls", "mean", "none"]


@dataclass
class MAEOutput:
    """What a masked-autoencoder forward pass returns.

    ``losses`` holds every named term (``recon`` plus, for CMAE-like systems, e.g. ``contrastive``);
    ``loss`` is their weighted sum and the value to back-propagate.
    """

    loss: Tensor
    pred: Tensor
    target: Tensor
    mask: Mask
    grid: tuple[int, ...]
    losses: dict[str, Tensor] = field(default_factory=dict)
    latent: Tensor | None = None

    @property
    def ids_restore(self) -> Tensor:
        return self.mask.ids_restore


class MaskedAutoencoder(nn.Module):
    def __init__(
        self,
        tokenizer: Tokenizer,
        encoder: nn.Module,
        decoder: nn.Module,
        masking: MaskingStrategy,
        target: str = "norm",
        loss: str | Any = "mse",
        mask_mode: MaskMode = "drop",
        replace_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if mask_mode not in ("drop", "replace"):
            raise ValueError(f"mask_mode must be 'drop' or 'replace', got {mask_mode!r}")
        if not 0.0 <= replace_rate < 1.0:
            raise ValueError(f"replace_rate must be in [0, 1), got {replace_rate}")
        self.tokenizer, self.encoder, self.decoder, self.masking = tokenizer, encoder, decoder, masking
        self.target_name = target
        self.target_fn = get("target", target)
        self.loss_fn = build("loss", loss) if isinstance(loss, str) else loss
        self.mask_mode: MaskMode = mask_mode
        self.replace_rate = replace_rate
        # In replace mode the encoder's mask token lives in token space, before the encoder.
        self.mask_token = nn.Parameter(torch.zeros(tokenizer.embed_dim)) if mask_mode == "replace" else None
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.encoder, "num_prefix_tokens", 0))

    # -- encoder side -------------------------------------------------------------------------------
    def _encode_tokens(self, tok: Tokens, mask: Mask | None, generator: torch.Generator | None = None) -> Tensor:
        x, ctx = tok.tokens, dict(tok.context)
        if mask is not None and getattr(self.encoder, "consumes_mask", False):
            ctx["mask"] = mask
        elif mask is not None and self.mask_mode == "drop":
            x = apply_drop(x, mask)
        elif mask is not None:
            x = self._replace(x, mask, generator, ctx.get("pos_embed"))
        return self.encoder(x, ctx)

    def _replace(
        self, x: Tensor, mask: Mask, generator: torch.Generator | None, pos: Tensor | None = None
    ) -> Tensor:
        # ``x`` already carries the position embedding ``pos`` (when the tokenizer reports it in
        # ``context["pos_embed"]``): a hidden token becomes mask token + its position (SimMIM, BERT), so
        # the encoder still knows where the hidden tokens are.
        b, n, d = x.shape
        pos_full = pos.to(x.device, x.dtype).expand(b, n, d) if pos is not None else None
        token = self.mask_token if pos_full is None else self.mask_token.to(x.dtype) + pos_full
        out = apply_replace(x, mask, token)
        if self.replace_rate > 0 and self.training:
            # Of the hidden tokens, a replace_rate share takes another random token's content (drawn from
            # the whole batch, keeping its own position) instead of the mask token.
            hidden = mask.ids_masked  # [B, M]
            gen_dev = generator.device if generator is not None else x.device
            pick = torch.rand(hidden.shape, generator=generator, device=gen_dev).to(x.device) < self.replace_rate
            src = torch.randint(0, b * n, hidden.shape, generator=generator, device=gen_dev).to(x.device)
            content = x if pos_full is None else x - pos_full
            noise = content.reshape(b * n, d)[src]  # [B, M, D]
            idx = hidden.unsqueeze(-1).expand(-1, -1, d)
            if pos_full is not None:
                noise = noise + torch.gather(pos_full, 1, idx)
            cur = torch.gather(out, 1, idx)
            out = out.scatter(1, idx, torch.where(pick.unsqueeze(-1), noise, cur))
        return out

    @torch.no_grad()
    def sample_mask(self, x: Any, generator: torch.Generator | None = None) -> Mask:
        grid = self.tokenizer.grid(x)
        return self.masking(_batch_size(x), grid, generator=generator, device=_device(self))

    def forward(self, x: Any, *, mask: Mask | None = None, generator: torch.Generator | None = None) -> MAEOutput:
        """Mask, encode, decode and score ``x``; pass ``mask`` to reuse a fixed mask."""
        self.tokenizer.validate(x)
        tok = self.tokenizer(x)
        b, n = tok.tokens.shape[:2]
        if mask is None:
            mask = self.masking(b, tok.grid, generator=generator, device=tok.tokens.device)
        elif tuple(mask.mask.shape) != (b, n):
            raise ValueError(
                f"mask is {tuple(mask.mask.shape)} but the batch has {b} sample(s) of {n} tokens (grid {tok.grid}); "
                "build it for this batch, e.g. with model.sample_mask(x)"
            )
        latent = self._encode_tokens(tok, mask, generator)
        pred = self.decoder(latent, mask, tok.grid, tok.context)
        with torch.no_grad():
            target = self.target_fn(self.tokenizer.patchify(x))
        recon = self.loss_fn(pred, target, mask.mask)
        return MAEOutput(loss=recon, pred=pred, target=target, mask=mask, grid=tok.grid, losses={"recon": recon}, latent=latent)

    def encode(self, x: Any, pool: Pool = "cls") -> Tensor:
        """Features of the unmasked input for downstream use (no mask is applied)."""
        self.tokenizer.validate(x)
        tok = self.tokenizer(x)
        feats = self._encode_tokens(tok, None)
        return pool_features(feats, self.num_prefix_tokens, pool)


def pool_features(feats: Tensor, num_prefix_tokens: int, pool: Pool) -> Tensor:
    """``[B, P + N, D]`` -> ``[B, D]`` (``cls``/``mean``) or ``[B, N, D]`` (``none``)."""
    if pool == "cls":
        if num_prefix_tokens == 0:
            raise ValueError("pool='cls' needs an encoder with a class token; use pool='mean'")
        return feats[:, 0]
    if pool == "mean":
        return feats[:, num_prefix_tokens:].mean(dim=1)
    if pool == "none":
        return feats[:, num_prefix_tokens:]
    raise ValueError(f"pool must be 'cls', 'mean' or 'none', got {pool!r}")


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batch_size(x: Any) -> int:
    """Samples in a batch: a tensor's first dimension; other inputs (a PyG graph batch) form one token set."""
    return x.shape[0] if isinstance(x, Tensor) else 1
