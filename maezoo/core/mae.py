"""The masked autoencoder, composed of parts: tokenizer, masking, encoder, decoder, target, loss.

Two ways to handle hidden tokens (``mask_mode``):
    ``"drop"``: hidden tokens are removed before the encoder (MAE, VideoMAE, Audio-MAE, TSFormer);
        the encoder sees ``N_vis`` tokens, the decoder puts mask tokens back.
    ``"replace"``: hidden tokens are replaced and the encoder sees all ``N`` (SimMIM, GraphMAE, BERT,
        PatchTST). A :class:`~maezoo.core.masking.ReplaceRule` sets the shares of mask token / random
        other token / unchanged (BERT: 80/10/10); ``replace_rate=r`` is GraphMAE's ``ReplaceRule(1 - r, r, 0)``.

Each encoder declares what it consumes (``encoder.consumes``, default ``"tokens"``), which with ``mask_mode``
gives the model's one :data:`InputMode` (:func:`input_mode`), the only thing the encoder side dispatches on:
    ``"drop"``: the visible tokens (``consumes = "tokens"``, ``mask_mode="drop"``).
    ``"replace"``: every token, hidden ones replaced by the rule (``consumes = "tokens"``, ``mask_mode="replace"``).
    ``"consumes_mask"``: every token and the mask in ``context["mask"]`` (``consumes = "mask"``, either
        ``mask_mode``): ConvMAE's masked convolutions apply it per stage.
    ``"consumes_replace"``: the unmasked tokens and ``context["replace"] = {"mask", "kind", "source", "token"}``,
        the rule's draws from :func:`~maezoo.core.masking.draw_replace_rule` (the same draws
        ``apply_replace_rule`` makes), in replace mode (``consumes = "replace"``): GraphMAE's sparse first layer
        builds the replaced input itself. A batch whose tokenizer reports ``context["pos_embed"]`` gets the
        replaced tokens instead (the hidden tokens keep their positions, which the draws do not carry).

Hooks (all off by default, so the default forward is the plain MAE):
    ``decoder_masking``: among the hidden tokens, the subset the decoder reconstructs and the loss scores
        (VideoMAE V2); ``MAEOutput.pred``/``target`` are then ``[B', K, P]`` on ``mask.ids_target``.
    ``target``: a name, ``{"name": ..., "args": {...}}`` or a callable (:func:`~maezoo.core.targets.resolve_target`).
    Token batch ``B'`` may differ from the input batch (channel independence); masks, losses and
        ``encode`` features are per token-batch row, and ``MAEOutput.context`` carries the tokenizer
        context for :meth:`~maezoo.core.tokenizer.Tokenizer.inverse`.
    ``Tokens.mask_grid`` coarser than ``Tokens.grid`` (ConvMAE): masks, targets and the decoder live on
        the mask grid; the encoder must consume the mask.
    Packed token sets (``context["segment_ids"]``): ``encode(pool="mean"|"max"|"sum")`` pools per segment.
    Variable-length batches (text): a tokenizer reporting ``context["padding_mask"]`` (``[B', N]`` bool, ``True`` on
        padding; optionally ``context["unmaskable"]``, e.g. ``[SEP]``, and ``context["word_ids"]`` for whole-word
        masking) gets a ragged mask with per-sample counts that never hides those tokens
        (:meth:`~maezoo.core.masking.Mask.from_bool_ragged`, replace mode only); the encoder is handed the padding
        in its context (attention ignores padded keys), the loss scores exactly the hidden real tokens and
        ``encode(pool="mean")`` averages real tokens only. ``context["replace_table"]`` (``[S, D]``) makes a
        random substitute a uniformly drawn row of it (BERT: a random vocabulary token).
    A decoder declaring ``predicts = "masked"`` returns ``[B', M, P]`` on ``mask.ids_masked`` only (BERT's
        vocabulary head: no logits for the tokens it is not scored on).

Shapes:
    forward(x) -> MAEOutput with pred/target ``[B', N, P]`` (``[B', K, P]`` with decoder masking),
        ``mask.mask`` ``[B', N]``, ``N = prod(mask_grid)``
    encode(x, pool="cls"|"mean") -> ``[B', D]``; ``pool="none"`` -> ``[B', N, D]`` (prefix tokens removed);
        with segments, ``pool="mean"|"max"|"sum"`` -> ``[num_segments, D]``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from maezoo.core.masking import (
    Mask,
    MaskingStrategy,
    ReplaceRule,
    apply_drop,
    apply_replace_rule,
    build_masking,
    draw_replace_rule,
    gather_tokens,
    select_decoder_targets,
    tile_rows,
)
from maezoo.core.targets import TargetSpec, resolve_target
from maezoo.core.tokenizer import Tokenizer, Tokens
from maezoo.registry import build

MaskMode = Literal["drop", "replace"]
#: what an encoder declares it consumes (its ``consumes`` attribute; absent: ``"tokens"``)
Consumes = Literal["tokens", "mask", "replace"]
#: how the model hands the masked batch to its encoder (module docstring)
InputMode = Literal["drop", "replace", "consumes_mask", "consumes_replace"]
MaskToken = Literal["learned", "zeros"]
Pool = Literal["cls", "mean", "max", "sum", "none"]
SEGMENT_POOLS = ("mean", "max", "sum")


@dataclass
class MAEOutput:
    """What a masked-autoencoder forward pass returns.

    ``losses`` holds every named term (``recon`` plus, for CMAE-like systems, e.g. ``contrastive``);
    ``loss`` is their weighted sum and the value to back-propagate.

    Shapes:
        pred, target: ``[B', N, P]``; with decoder masking ``[B', K, P]`` aligned with ``mask.ids_target``; from a
            decoder with ``predicts = "masked"`` ``[B', M, P]`` aligned with ``mask.ids_masked``
        mask.mask: ``[B', N]``; target_mask: ``[B', N]`` bool, the tokens the loss scored
        grid: the grid ``pred``/``target``/``mask`` live on (the mask grid); token_grid: the tokenizer's grid
        context: the tokenizer's context of this batch (e.g. RevIN statistics for ``Tokenizer.inverse``)
    """

    loss: Tensor
    pred: Tensor
    target: Tensor
    mask: Mask
    grid: tuple[int, ...]
    losses: dict[str, Tensor] = field(default_factory=dict)
    latent: Tensor | None = None
    target_mask: Tensor | None = None
    context: dict[str, Any] = field(default_factory=dict)
    token_grid: tuple[int, ...] | None = None

    @property
    def ids_restore(self) -> Tensor:
        return self.mask.ids_restore

    @property
    def ids_target(self) -> Tensor | None:
        """``[B', K]`` grid indices of ``pred``/``target`` rows under decoder masking, else ``None``."""
        return self.mask.ids_target


class MaskedAutoencoder(nn.Module):
    """Tokenizer -> masking -> encoder -> decoder -> target/loss (see the module docstring).

    Args:
        target: ``"norm"``/``"raw"``, ``{"name": "norm", "args": {"axes": "channel", ...}}`` or a callable.
        replace_rate: GraphMAE's share of random substitutes in replace mode (``ReplaceRule(1 - r, r, 0)``).
        replace: a :class:`ReplaceRule` or mapping of shares (``{"mask": 0.8, "random": 0.1, "keep": 0.1}``);
            give either ``replace`` or ``replace_rate``.
        decoder_masking: a strategy, registered name or ``{"name": ..., "args": {...}}`` choosing, among the
            hidden tokens, those the decoder reconstructs (:func:`~maezoo.core.masking.select_decoder_targets`).
        mask_token: replace mode's hidden token: ``"learned"`` or ``"zeros"`` (a fixed zero vector plus the
            position, PatchTST's zero-filled patches up to the patch embedding's bias).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        encoder: nn.Module,
        decoder: nn.Module,
        masking: MaskingStrategy,
        target: TargetSpec = "norm",
        loss: str | Any = "mse",
        mask_mode: MaskMode = "drop",
        replace_rate: float = 0.0,
        *,
        replace: ReplaceRule | Mapping[str, float] | None = None,
        decoder_masking: MaskingStrategy | str | Mapping[str, Any] | None = None,
        mask_token: MaskToken = "learned",
    ) -> None:
        super().__init__()
        if mask_mode not in ("drop", "replace"):
            raise ValueError(f"mask_mode must be 'drop' or 'replace', got {mask_mode!r}")
        if not 0.0 <= replace_rate < 1.0:
            raise ValueError(f"replace_rate must be in [0, 1), got {replace_rate}")
        if replace is not None and replace_rate:
            raise ValueError("give either replace=ReplaceRule(...) or replace_rate=, not both "
                             "(replace_rate=r is ReplaceRule(mask=1-r, random=r, keep=0))")
        self.tokenizer, self.encoder, self.decoder, self.masking = tokenizer, encoder, decoder, masking
        self.target_name, self.target_fn = resolve_target(target)
        self.loss_fn = build("loss", loss) if isinstance(loss, str) else loss
        self.mask_mode: MaskMode = mask_mode
        self.replace_rule = ReplaceRule.coerce(replace) if replace is not None else ReplaceRule.from_replace_rate(replace_rate)
        self.decoder_masking = build_masking(decoder_masking) if decoder_masking is not None else None
        input_mode(encoder, mask_mode)  # an encoder declaring an unknown `consumes` fails here, not in forward
        _add_mask_token(self, mask_mode, mask_token, tokenizer.embed_dim)

    @property
    def replace_rate(self) -> float:
        """Share of hidden tokens replaced by a random other token (GraphMAE's ``replace_rate``)."""
        return float(self.replace_rule.random)

    @property
    def input_mode(self) -> InputMode:
        """How the encoder gets the masked batch (read from the current encoder, so swapping it is safe)."""
        return input_mode(self.encoder, self.mask_mode)

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.encoder, "num_prefix_tokens", 0))

    # -- encoder side -------------------------------------------------------------------------------
    def _encode_tokens(self, tok: Tokens, mask: Mask | None, generator: torch.Generator | None = None) -> Tensor:
        """The encoder on the batch as its input mode asks (every token, unmasked, when ``mask`` is ``None``).

        Shapes: tok.tokens ``[B', N, D]`` -> ``[B', P + N_enc, D_enc]`` (``N_enc``: visible tokens in drop mode)
        """
        x, ctx = tok.tokens, dict(tok.context)
        if mask is None:
            return self.encoder(x, ctx)
        mode = self.input_mode
        if mode == "consumes_replace" and ctx.get("pos_embed") is not None:
            mode = "replace"
        if mode == "consumes_mask":
            ctx["mask"] = mask
        elif mode == "drop":
            x = apply_drop(x, mask)
        elif mode == "consumes_replace":
            rule = self.replace_rule if self.training else ReplaceRule()
            kind, source = draw_replace_rule(mask, rule, x.shape[0] * x.shape[1], generator, x.device)
            ctx["replace"] = {"mask": mask, "kind": kind, "source": source, "token": self.mask_token}
        else:
            x = self._replace(x, mask, generator, ctx.get("pos_embed"), ctx.get("replace_table"))
        return self.encoder(x, ctx)

    def _replace(
        self, x: Tensor, mask: Mask, generator: torch.Generator | None, pos: Tensor | None = None,
        table: Tensor | None = None,
    ) -> Tensor:
        """Hidden tokens per :attr:`replace_rule` (random/keep shares in training only).

        ``x`` already carries the position embedding ``pos`` (when the tokenizer reports it in
        ``context["pos_embed"]``): a hidden token becomes mask token + its position (SimMIM, BERT), so the
        encoder still knows where the hidden tokens are.
        """
        rule = self.replace_rule if self.training else ReplaceRule()
        return apply_replace_rule(x, mask, self.mask_token, rule, generator, pos, table)[0]

    # -- masks ----------------------------------------------------------------------------------------
    def _check_mask_grid(self, tok: Tokens) -> None:
        if tok.mask_grid != tok.grid and self.input_mode != "consumes_mask":
            raise ValueError(
                f"the tokenizer draws masks on grid {tok.mask_grid} but its tokens lie on grid {tok.grid}; only an "
                f"encoder with consumes = 'mask' (ConvMAE-style, applying the mask per stage) can use such a mask. "
                f"Use such an encoder, or a tokenizer whose mask_grid equals its grid"
            )

    def _with_decoder_targets(
        self, mask: Mask, grid: tuple[int, ...], generator: torch.Generator | None, device: torch.device
    ) -> Mask:
        if self.decoder_masking is None or mask.ids_target is not None:
            return mask
        return mask.with_targets(select_decoder_targets(mask, self.decoder_masking, grid, generator, device))

    @torch.no_grad()
    def sample_mask(self, x: Any, generator: torch.Generator | None = None, rank: int = 0, world: int = 1) -> Mask:
        """The mask (with decoder targets, if any) ``forward(x, generator=generator)`` would draw; with
        ``world > 1``, rows ``[rank * B', (rank + 1) * B')`` of the mask of a global batch of ``world`` such batches
        drawn from ``generator`` (maezoo/engine/sample_seeding.py). A strategy draws one value or row per sample in
        sample order, so a sample's mask depends on its place and its own padding only: the other ranks' rows are
        stood in for by copies of this rank's. Nothing is embedded (the tokenizer's ``mask_context``), so it runs
        on a sharded model too.

        Shapes: returns ``mask.mask`` ``[B', prod(mask_grid)]`` on the token batch ``B'``.
        """
        grid, device, b = _mask_grid(self.tokenizer, x), _device(self), _batch_size(x, self.tokenizer)
        ctx = {k: tile_rows(v.to(device), world) for k, v in self.tokenizer.mask_context(x).items()}
        mask = self._draw_mask(world * b, grid, ctx, generator, device)
        mask = self._with_decoder_targets(mask, grid, generator, device)
        return mask if world <= 1 else mask.rows(rank * b, (rank + 1) * b)

    def _draw_mask(self, b: int, grid: tuple[int, ...], ctx: Mapping[str, Any], generator: torch.Generator | None,
                   device: torch.device) -> Mask:
        """The strategy's mask for ``b`` samples; ragged (per-sample counts) when ``ctx`` reports padding."""
        exclude = excluded_tokens(ctx)
        if exclude is None:
            return self.masking(b, grid, generator=generator, device=device)
        return self.masking(b, grid, generator=generator, device=device, exclude=exclude, groups=ctx.get("word_ids"))

    # -- forward ----------------------------------------------------------------------------------------
    def forward(self, x: Any, *, mask: Mask | None = None, generator: torch.Generator | None = None) -> MAEOutput:
        """Mask, encode, decode and score ``x``; pass ``mask`` to reuse a fixed mask (its ``ids_target`` too)."""
        self.tokenizer.validate(x)
        tok = self.tokenizer(x)
        self._check_mask_grid(tok)
        b, n, grid, device = tok.batch_size, tok.num_mask_tokens, tok.mask_grid, tok.tokens.device
        if mask is None:
            mask = self._draw_mask(b, tok.mask_grid, tok.context, generator, device)
        elif tuple(mask.mask.shape) != (b, n):
            raise ValueError(
                f"mask is {tuple(mask.mask.shape)} but the batch has {b} sample(s) of {n} tokens (grid {grid}); "
                "build it for this batch, e.g. with model.sample_mask(x)"
            )
        if mask.ragged and self.input_mode == "drop":
            raise ValueError("a variable-length batch (the tokenizer reports context['padding_mask']) hides a "
                             "different count per sample, which drop mode cannot gather densely; use mask_mode='replace'")
        mask = self._with_decoder_targets(mask, grid, generator, device)
        latent = self._encode_tokens(tok, mask, generator)
        pred = self.decoder(latent, mask, grid, tok.context)
        with torch.no_grad():
            target = self.target_fn(self.tokenizer.patchify(x))
        if getattr(self.decoder, "predicts", "all") == "masked":
            target = _check_targets(target, b, n, grid)
            recon = self._masked_loss(pred, target, mask)
            return MAEOutput(
                loss=recon, pred=pred, target=gather_tokens(target, mask.ids_masked), mask=mask, grid=grid,
                losses={"recon": recon}, latent=latent, target_mask=mask.target_mask, context=tok.context,
                token_grid=tok.grid,
            )
        target = _check_targets(target, b, n, grid)
        if mask.ids_target is not None:
            pred, target, _ = _on_targets(pred, target, mask.ids_target, n)
            recon = self.loss_fn(pred, target, torch.ones(pred.shape[:2], device=pred.device))  # dense: no sync
        else:
            recon = self._masked_loss(pred, target, mask)
        return MAEOutput(
            loss=recon, pred=pred, target=target, mask=mask, grid=grid, losses={"recon": recon}, latent=latent,
            target_mask=mask.target_mask, context=tok.context, token_grid=tok.grid,
        )

    def _masked_loss(self, pred: Tensor, target: Tensor, mask: Mask) -> Tensor:
        """The loss over the hidden tokens, scored on their rows gathered by ``mask.ids_masked``.

        The same value and gradients as ``loss_fn(pred, target, mask.mask)`` (the loss scores exactly the
        hidden rows), without the host synchronisation of selecting rows by a boolean mask: the count of
        hidden rows is known from ``ids_masked``, so the weight is a dense all-ones float.

        A ragged mask's fillers weigh 0, so the loss is the mean over exactly the hidden real tokens. A decoder
        with ``predicts = "masked"`` gave ``pred`` on ``mask.ids_masked`` already.

        Shapes: pred ``[B', N, P]`` (``[B', M, P]`` from a ``predicts = "masked"`` decoder), target ``[B', N, P]``
        (or ``[B', N]``) -> scalar
        """
        ids = mask.ids_masked
        on_masked = getattr(self.decoder, "predicts", "all") == "masked"
        if on_masked and pred.shape[:2] != ids.shape:
            raise ValueError(f"{type(self.decoder).__name__} predicts the hidden tokens only, so it must return "
                             f"[B, M, ...] = {tuple(ids.shape)} rows on mask.ids_masked, got {tuple(pred.shape)}")
        if not on_masked and (pred.shape[:2] != target.shape[:2] or pred.shape[:2] != mask.mask.shape):
            return self.loss_fn(pred, target, mask.mask)  # the loss names the mismatch
        if mask.masked_valid is not None:
            weight = mask.masked_valid.to(device=pred.device, dtype=torch.float32)
        else:
            weight = torch.ones(ids.shape, device=pred.device)
        return self.loss_fn(pred if on_masked else gather_tokens(pred, ids), gather_tokens(target, ids), weight)

    def encode(self, x: Any, pool: Pool = "cls") -> Tensor:
        """Features of the unmasked input for downstream use (no mask is applied).

        Features are per token-batch row (``[B * C, D]`` for a channel-independent tokenizer). When the
        tokenizer context carries ``segment_ids``/``num_segments`` (packed graphs), ``pool="mean"|"max"|"sum"``
        pools each segment.

        Shapes:
            ``pool="cls"|"mean"`` -> ``[B', D]``; ``"none"`` -> ``[B', N, D]``;
            with segments ``"mean"|"max"|"sum"`` -> ``[num_segments, D]`` (``[B' * num_segments, D]`` if ``B' > 1``)
        """
        self.tokenizer.validate(x)
        tok = self.tokenizer(x)
        feats = self._encode_tokens(tok, None)
        ctx = tok.context
        return pool_features(feats, self.num_prefix_tokens, pool, ctx.get("segment_ids"), ctx.get("num_segments"),
                             ctx.get("padding_mask"))


def _check_targets(target: Tensor, b: int, n: int, grid: tuple[int, ...]) -> Tensor:
    if tuple(target.shape[:2]) != (b, n):
        raise ValueError(
            f"tokenizer.patchify gave targets {tuple(target.shape)}, expected [{b}, {n}, ...]: one row per "
            f"position of the mask grid {grid} for each of the {b} token-batch rows"
        )
    return target


def excluded_tokens(context: Mapping[str, Any]) -> Tensor | None:
    """``[B', N]`` bool: tokens a mask must never hide (``padding_mask`` or ``unmaskable``), ``None`` if neither."""
    pad, fixed = context.get("padding_mask"), context.get("unmaskable")
    if pad is None:
        return fixed
    return pad if fixed is None else pad | fixed


def input_mode(encoder: nn.Module, mask_mode: MaskMode) -> InputMode:
    """The model's input mode from what ``encoder`` consumes (``encoder.consumes``) and ``mask_mode``."""
    consumes = getattr(encoder, "consumes", "tokens")
    if consumes not in ("tokens", "mask", "replace"):
        raise ValueError(f"{type(encoder).__name__}.consumes must be 'tokens', 'mask' (ConvMAE: the mask in "
                         f"context['mask']) or 'replace' (GraphMAE: context['replace']), got {consumes!r}")
    if consumes == "mask":
        return "consumes_mask"
    if mask_mode == "drop":
        return "drop"
    return "consumes_replace" if consumes == "replace" else "replace"


def _add_mask_token(model: nn.Module, mask_mode: MaskMode, kind: MaskToken, dim: int) -> None:
    """Replace mode's hidden token in token space, before the encoder: a parameter drawn from N(0, 0.02)
    (``"learned"``) or a fixed zero buffer (``"zeros"``, PatchTST's zero fill); ``None`` in drop mode.

    Shapes: ``model.mask_token`` ``[dim]``
    """
    if kind not in ("learned", "zeros"):
        raise ValueError(f"mask_token must be 'learned' or 'zeros' (PatchTST's zero-fill), got {kind!r}")
    if mask_mode != "replace":
        model.mask_token = None
    elif kind == "zeros":
        model.register_buffer("mask_token", torch.zeros(dim))
    else:
        model.mask_token = nn.Parameter(torch.empty(dim).normal_(std=0.02))


def _on_targets(pred: Tensor, target: Tensor, ids_target: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Align pred/target on the decoder's targets: ``[B, K, P]`` each and an all-true ``[B, K]`` weight.

    A decoder that predicted the whole grid (``[B, N, P]``) is gathered; one that predicted only the
    targets (``[B, K, P]``, e.g. :class:`~maezoo.core.decoder.TransformerDecoder`) is used as is.
    """
    b, k = ids_target.shape
    if pred.shape[1] == n and k != n:
        pred = gather_tokens(pred, ids_target)
    elif pred.shape[1] != k:
        raise ValueError(f"decoder returned {pred.shape[1]} tokens; with decoder masking expected {k} (the targets, "
                         f"mask.ids_target) or {n} (the whole grid)")
    return pred, gather_tokens(target, ids_target), torch.ones(b, k, dtype=torch.bool, device=pred.device)


def pool_features(
    feats: Tensor,
    num_prefix_tokens: int,
    pool: Pool,
    segment_ids: Tensor | None = None,
    num_segments: int | None = None,
    padding_mask: Tensor | None = None,
) -> Tensor:
    """``[B, P + N, D]`` -> ``[B, D]`` (``cls``/``mean``), ``[B, N, D]`` (``none``), or per segment.

    With ``segment_ids`` (``[N]`` or ``[B, N]`` long) ``mean``/``max``/``sum`` pool each segment
    (:func:`segment_pool`); ``max``/``sum`` need segments. With ``padding_mask`` (``[B, N]`` bool, ``True`` on
    padding) ``mean`` averages the real tokens only.
    """
    if pool in SEGMENT_POOLS and segment_ids is not None:
        return segment_pool(feats[:, num_prefix_tokens:], segment_ids, num_segments, pool)
    if pool == "cls":
        if num_prefix_tokens == 0:
            raise ValueError("pool='cls' needs an encoder with a class token; use pool='mean'")
        return feats[:, 0]
    if pool == "mean":
        if padding_mask is not None:
            return masked_token_mean(feats[:, num_prefix_tokens:], padding_mask)
        return feats[:, num_prefix_tokens:].mean(dim=1)
    if pool == "none":
        return feats[:, num_prefix_tokens:]
    if pool in SEGMENT_POOLS:
        raise ValueError(f"pool={pool!r} pools per segment and needs context['segment_ids'] from the tokenizer "
                         "(packed graphs); for one sample per row use pool='cls', 'mean' or 'none'")
    raise ValueError(f"pool must be 'cls', 'mean', 'max', 'sum' or 'none', got {pool!r}")


def masked_token_mean(tokens: Tensor, padding_mask: Tensor) -> Tensor:
    """Mean over the real tokens of each row (a row of padding only gives zeros).

    Shapes: tokens ``[B, N, D]``, padding_mask ``[B, N]`` bool -> ``[B, D]``
    """
    if tuple(padding_mask.shape) != tuple(tokens.shape[:2]):
        raise ValueError(f"padding_mask must be [B, N] = {tuple(tokens.shape[:2])}, got {tuple(padding_mask.shape)}")
    real = (~padding_mask.to(tokens.device)).to(tokens.dtype).unsqueeze(-1)
    return (tokens * real).sum(1) / real.sum(1).clamp_min(1)


def segment_pool(feats: Tensor, segment_ids: Tensor, num_segments: int | None, reduce: str) -> Tensor:
    """Pool the tokens of each segment (several samples packed in one row, e.g. a PyG batch of graphs).

    Empty segments give zeros. Rows ``b > 0`` of a ``[B, N, D]`` batch get their own segments
    ``b * S .. b * S + S - 1``.

    Shapes:
        feats: ``[B, N, D]``; segment_ids: ``[N]`` or ``[B, N]`` long in ``[0, S)``
        returns: ``[S, D]`` for ``B == 1``, else ``[B * S, D]``
    """
    if reduce not in SEGMENT_POOLS:
        raise ValueError(f"segment pooling is 'mean', 'max' or 'sum', got {reduce!r}")
    b, n, d = feats.shape
    seg = segment_ids.to(feats.device).long()
    seg = seg.expand(b, n) if seg.dim() == 1 else seg
    if tuple(seg.shape) != (b, n):
        raise ValueError(f"segment_ids must be [N={n}] or [B={b}, N={n}], got {tuple(segment_ids.shape)}")
    s = int(num_segments) if num_segments is not None else (int(seg.max()) + 1 if seg.numel() else 0)
    idx = (seg + torch.arange(b, device=seg.device).view(b, 1) * s).reshape(-1)
    flat = feats.reshape(b * n, d)
    out = feats.new_zeros(b * s, d)
    if reduce == "max":
        return out.scatter_reduce(0, idx.view(-1, 1).expand(-1, d), flat, "amax", include_self=False)
    out = out.index_add(0, idx, flat)
    if reduce == "mean":
        counts = torch.bincount(idx, minlength=b * s).clamp_min(1).to(out.dtype)
        out = out / counts.view(-1, 1)
    return out


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batch_size(x: Any, tokenizer: Tokenizer | None = None) -> int:
    """Rows of the token batch of ``x``, asked of the tokenizer (inputs may be tensors, PyG batches, dicts).

    Without a tokenizer (or one without :meth:`~maezoo.core.tokenizer.Tokenizer.token_batch_size`): a
    tensor's first dimension, else 1 (one token set, as a PyG graph batch).
    """
    fn = getattr(tokenizer, "token_batch_size", None)
    if fn is not None:
        return int(fn(x))
    return x.shape[0] if isinstance(x, Tensor) else 1


def _mask_grid(tokenizer: Tokenizer, x: Any) -> tuple[int, ...]:
    fn = getattr(tokenizer, "mask_grid", None)
    return tuple(fn(x) if fn is not None else tokenizer.grid(x))


__all__ = ["InputMode", "MAEOutput", "MaskedAutoencoder", "excluded_tokens", "input_mode", "masked_token_mean",
           "pool_features", "segment_pool"]
