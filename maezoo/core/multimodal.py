"""Several modalities in one encoder: M3AE (2205.14204) and MultiMAE (2204.01678) on the one core.

A batch is a dict of modalities (``{"image": [B, 3, H, W], "text": [B, L]}``). Each modality keeps its own
registered tokenizer (its positions: 2-D sin-cos for image patches, 1-D for text), a learned modality (type)
embedding, its own target, loss and loss weight; :class:`JointTokenizer` puts them side by side. A cross-modal
strategy (:mod:`maezoo.core.modal_masking`) hides tokens of every modality; one shared encoder runs on the shown
tokens of all modalities concatenated; the decoder reconstructs each modality's hidden tokens:
    :class:`SharedDecoder` (M3AE): one transformer over all modalities' tokens, a linear head per modality;
    :class:`ModalityDecoders` (MultiMAE): per modality, its tokens cross-attend to every encoder token, then
        self-attend among themselves, then its head.
Each modality's loss scores only its own hidden real tokens; ``losses`` holds them unweighted, ``loss`` is
``sum(weight[m] * losses[m])`` (M3AE: image 1.0, text 0.5).

Because :class:`JointTokenizer` is a :class:`~maezoo.core.tokenizer.Tokenizer` (dict in, the concatenated tokens
out, padding in ``context["padding_mask"]``), everything downstream of a tokenizer and an encoder works
unchanged: ``encode``, the k-NN/linear-probe features, the fine-tuning classifier. It accepts any non-empty subset
of its modalities, so an image-only probe of a pair-trained encoder feeds ``{"image": x}``. ``forward`` needs every
modality the model was built with and ignores other keys (an image-only model trains on image-caption pairs).

Shapes:
    x: ``{name: batch}``; tokens of modality ``m``: ``[B, N_m, D]``; ``N = sum(N_m)`` in the order of the model's
        modalities
    forward(x) -> MultiModalOutput: per modality pred ``[B, M_m, P_m]`` (``P_m`` values, or ``[B, M_m, V]``
        logits for ids) and target ``[B, M_m, ...]`` on ``mask[m].ids_masked``, weight ``mask[m].masked_valid``
    encode(x, pool="mean"|"cls") -> ``[B, D]``; ``pool="none"`` -> ``[B, N, D]``
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.models.vision_transformer import Block, Mlp
from torch import Tensor, nn

from maezoo.core.attention import padding_attn_mask, select_attention
from maezoo.core.encoder import _norm, init_mae_weights
from maezoo.core.mae import Pool, pool_features
from maezoo.core.masking import Mask, gather_tokens, tile_rows
from maezoo.core.modal_masking import CrossModalMasking, ModalGrid
from maezoo.core.pos_embed import sincos_pos_embed
from maezoo.core.targets import TargetSpec, resolve_target
from maezoo.core.tokenizer import Tokenizer, Tokens
from maezoo.registry import build


class JointTokenizer(Tokenizer):
    """The tokenizers of several modalities side by side, each token plus its modality's learned type embedding.

    Args:
        parts: ``{modality: tokenizer}``; all must share ``embed_dim``.

    Shapes:
        forward(x) -> Tokens ``[B, N, D]``, grid ``(N,)``, ``context["padding_mask"]`` ``[B, N]`` (when a modality
        pads), ``context["parts"]`` ``{modality: Tokens}`` and ``context["sizes"]`` ``{modality: N_m}``
    """

    batch_mixup = False

    def __init__(self, parts: Mapping[str, Tokenizer]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("a joint tokenizer needs at least one modality")
        dims = {name: int(t.embed_dim) for name, t in parts.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"every modality's tokenizer must embed to the encoder's width, got {dims}; give them "
                             "the same embed_dim")
        self.parts = nn.ModuleDict(dict(parts))
        self.embed_dim = next(iter(dims.values()))
        self.target_dim = max(int(t.target_dim) for t in parts.values())
        self.type_embed = nn.ParameterDict({name: nn.Parameter(torch.empty(self.embed_dim).normal_(std=0.02))
                                            for name in parts})
        self.modality = "+".join(parts)
        texts = [t.vocab_json for t in parts.values() if isinstance(getattr(t, "vocab_json", None), str)]
        if len(texts) == 1:  # a text part's vocabulary, written beside the run's weights (engine.checkpoint)
            self.vocab_json = texts[0]

    @property
    def names(self) -> list[str]:
        return list(self.parts)

    def present(self, x: Any, require_all: bool = False) -> list[str]:
        """The model's modalities found in the batch ``x`` (a dict), in the model's order; checks ``x``."""
        if not isinstance(x, Mapping):
            raise ValueError(f"a multimodal model takes a dict of modalities {self.names} (e.g. {{'image': "
                             f"[B, 3, H, W], 'text': [B, L]}}), got {type(x).__name__}; a paired dataset's "
                             "collate_fn builds it")
        have = [n for n in self.names if n in x]
        missing = [n for n in self.names if n not in x]
        if (require_all and missing) or not have:
            raise ValueError(f"the batch has modalities {sorted(map(str, x))} but the model was built with "
                             f"{self.names}: {missing} missing. Fix: give every modality the model was built with "
                             "(or build the model with the modalities the data has)")
        return have

    def validate(self, x: Any, require_all: bool = False) -> None:
        have = self.present(x, require_all)
        sizes = {}
        for name in have:
            self.parts[name].validate(x[name])
            sizes[name] = self.parts[name].token_batch_size(x[name])
        if len(set(sizes.values())) > 1:
            raise ValueError(f"every modality of a batch must have the same number of samples, got {sizes}")

    def grid(self, x: Any) -> tuple[int, ...]:
        return (sum(_num_tokens(self.parts[n], x[n]) for n in self.present(x)),)

    def token_batch_size(self, x: Any) -> int:
        name = self.present(x)[0]
        return self.parts[name].token_batch_size(x[name])

    def forward(self, x: Any) -> Tokens:
        parts = {name: self.embed_part(name, x[name]) for name in self.present(x)}
        tokens = torch.cat([t.tokens for t in parts.values()], dim=1)
        pads = [t.context.get("padding_mask") for t in parts.values()]
        ctx: dict[str, Any] = {"parts": parts, "sizes": {n: t.tokens.shape[1] for n, t in parts.items()}}
        if any(p is not None for p in pads):
            ctx["padding_mask"] = torch.cat([
                p.to(tokens.device) if p is not None else torch.zeros(t.tokens.shape[:2], dtype=torch.bool,
                                                                      device=tokens.device)
                for p, t in zip(pads, parts.values(), strict=True)], dim=1)
        return Tokens(tokens, (tokens.shape[1],), ctx)

    def embed_part(self, name: str, x: Any) -> Tokens:
        """One modality's tokens plus its type embedding (its grid, positions and context as its tokenizer gives)."""
        tok = self.parts[name](x)
        if tuple(tok.mask_grid) != tuple(tok.grid):
            raise ValueError(f"modality {name!r}: its tokenizer draws masks on a grid coarser than its tokens "
                             "(ConvMAE), which a joint encoder cannot take; use a plain patch tokenizer")
        return Tokens(tok.tokens + self.type_embed[name].to(tok.tokens.dtype), tok.grid, tok.context)

    def patchify(self, x: Any) -> Tensor:
        raise NotImplementedError("a joint tokenizer has one target per modality: use parts[name].patchify")

    def example_input(self, batch_size: int = 2) -> dict[str, Any]:
        return {name: t.example_input(batch_size) for name, t in self.parts.items()}


def _num_tokens(tokenizer: Tokenizer, x: Any) -> int:
    return math.prod(tokenizer.grid(x))


@dataclass
class MultiModalOutput:
    """A multimodal forward pass (module docstring): ``loss`` to back-propagate, per-modality terms in ``losses``.

    Shapes (per modality ``m``):
        pred[m]: ``[B, M_m, P_m]`` (``[B, M_m, V]`` logits for ids) on ``mask[m].ids_masked``
        target[m]: ``[B, M_m, P_m]`` (``[B, M_m]`` ids); weight[m]: ``[B, M_m]`` (0 on fillers of a ragged mask)
        mask[m].mask: ``[B, N_m]``; grid[m]: the modality's token grid
    """

    loss: Tensor
    losses: dict[str, Tensor]
    pred: dict[str, Tensor]
    target: dict[str, Tensor]
    weight: dict[str, Tensor]
    mask: dict[str, Mask]
    grid: dict[str, tuple[int, ...]]
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Shown:
    """The tokens a batch shows the encoder, gathered from all modalities.

    Shapes: ``ids`` ``[B, K]`` positions in the concatenated ``N`` tokens (shown first, ascending), ``valid``
    ``[B, K]`` (``False``: a filler slot of a sample that shows fewer than ``K``), ``sizes`` ``{m: N_m}``
    """

    ids: Tensor
    valid: Tensor
    sizes: dict[str, int]
    grids: dict[str, tuple[int, ...]]
    padding: Tensor | None = None  # [B, N] padding over the concatenated tokens


def gather_shown(tokens: Tensor, shown: Tensor, bound: int) -> tuple[Tensor, Tensor, Tensor]:
    """The shown tokens first, in ascending order, ``K`` per sample.

    ``K`` is the largest count in the batch on a CPU (read there at no cost) and ``bound`` on an accelerator (a
    count fixed in advance, so no host synchronisation and one shape for compiled graphs).

    Shapes: tokens ``[B, N, D]``, shown ``[B, N]`` bool -> tokens ``[B, K, D]``, ids ``[B, K]``, valid ``[B, K]``
    """
    count = shown.sum(1, keepdim=True)
    k = int(count.max()) if tokens.device.type == "cpu" and shown.numel() else min(int(bound), shown.shape[1])
    ids = torch.sort((~shown).to(torch.uint8), dim=1, stable=True).indices[:, :k]
    valid = torch.arange(k, device=shown.device).unsqueeze(0) < count
    return gather_tokens(tokens, ids), ids, valid


class MultiModalAutoencoder(nn.Module):
    """Joint tokenizer -> cross-modal masking -> one encoder -> decoder -> per-modality targets and losses.

    Args:
        tokenizer: the modalities' tokenizers side by side.
        encoder: any registered encoder taking ``(tokens, context)`` with ``context["padding_mask"]``
            (the ViT encoder; MAE's ``vit``).
        decoder: :class:`SharedDecoder` or :class:`ModalityDecoders`.
        masking: a cross-modal strategy (``per_modality``, ``dirichlet_budget``).
        targets / losses / weights: ``{modality: ...}``; defaults ``"norm"``, ``"mse"``, ``1.0``.
    """

    def __init__(self, tokenizer: JointTokenizer, encoder: nn.Module, decoder: nn.Module, masking: CrossModalMasking,
                 targets: Mapping[str, TargetSpec] | None = None, losses: Mapping[str, Any] | None = None,
                 weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if not getattr(masking, "cross_modal", False):
            raise ValueError(f"masking must be a cross-modal strategy ('per_modality' or 'dirichlet_budget'), got "
                             f"{type(masking).__name__}")
        names = tokenizer.names
        for label, given in (("targets", targets), ("losses", losses), ("weights", weights)):
            extra = sorted(set(given or {}) - set(names))
            if extra:
                raise ValueError(f"{label} name {extra}, which the model does not have (modalities {names})")
        self.tokenizer, self.encoder, self.decoder, self.masking = tokenizer, encoder, decoder, masking
        self.targets = {n: resolve_target((targets or {}).get(n, "norm")) for n in names}
        spec = dict(losses or {})
        self.loss_fns = {n: build("loss", spec.get(n, "mse")) if isinstance(spec.get(n, "mse"), str) else spec[n]
                         for n in names}
        self.weights = {n: float((weights or {}).get(n, 1.0)) for n in names}

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.encoder, "num_prefix_tokens", 0))

    # -- masks ------------------------------------------------------------------------------------------------
    def mask_grids(self, x: Any, world: int = 1) -> dict[str, ModalGrid]:
        """Each modality of the batch ``x`` as the cross-modal strategy sees it (grid, padding, unmaskable tokens,
        word ids), read from the tokenizers' ``mask_context`` without embedding; ``world`` copies of the batch
        stacked (``[world * B, N]``) for the masks of a global batch."""
        device = _device_of(x)
        grids = {}
        for n in self.tokenizer.names:
            part = self.tokenizer.parts[n]
            ctx = {k: tile_rows(v.to(device), world) for k, v in part.mask_context(x[n]).items()}
            grids[n] = ModalGrid(tuple(part.grid(x[n])), ctx.get("padding_mask"), ctx.get("unmaskable"),
                                 ctx.get("word_ids"))
        return grids

    @torch.no_grad()
    def sample_mask(self, x: Any, generator: torch.Generator | None = None, rank: int = 0,
                    world: int = 1) -> dict[str, Mask]:
        """The masks ``forward(x, generator=generator)`` would draw; with ``world > 1``, the masks of rows
        ``[rank * B, (rank + 1) * B)`` of a global batch of ``world * B`` samples drawn from ``generator``.

        Every draw of the cross-modal strategies is one value (or one row) per sample, in sample order, so a
        sample's mask depends on its place in the global batch and its own tokens (padding, word ids) only: the
        other ranks' rows are stood in for by copies of this rank's (maezoo/engine/sample_seeding.py). Nothing is
        embedded (:meth:`mask_grids`), so it runs on an FSDP-sharded model too.
        """
        self.tokenizer.validate(x, require_all=True)
        b = self.tokenizer.token_batch_size(x)
        full = self.masking(world * b, self.mask_grids(x, world), generator=generator, device=_device_of(x))
        return full if world <= 1 else {n: m.rows(rank * b, (rank + 1) * b) for n, m in full.items()}

    def _tokens(self, x: Any) -> Tokens:
        return self.tokenizer({n: x[n] for n in self.tokenizer.names})

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: Any, *, mask: Mapping[str, Mask] | None = None,
                generator: torch.Generator | None = None) -> MultiModalOutput:
        self.tokenizer.validate(x, require_all=True)
        tok = self._tokens(x)
        parts: dict[str, Tokens] = tok.context["parts"]
        grids = self.mask_grids(x)
        masks = dict(mask) if mask is not None else self.masking(tok.batch_size, grids, generator=generator,
                                                                 device=tok.tokens.device)
        self._check_masks(masks, parts)
        shown = torch.cat([~masks[n].mask & ~_padding(t) for n, t in parts.items()], dim=1)
        vis, ids, valid = gather_shown(tok.tokens, shown, self.masking.max_shown(grids))
        latent = self.encoder(vis, {"padding_mask": ~valid})
        layout = Shown(ids, valid, tok.context["sizes"], {n: t.grid for n, t in parts.items()},
                       tok.context.get("padding_mask"))
        hidden = {n: masks[n].ids_masked for n in parts}
        preds = self.decoder(latent, layout, hidden)
        return self._score(x, parts, masks, preds)

    def _check_masks(self, masks: Mapping[str, Mask], parts: Mapping[str, Tokens]) -> None:
        for n, t in parts.items():
            if n not in masks or tuple(masks[n].mask.shape) != (t.batch_size, t.tokens.shape[1]):
                got = tuple(masks[n].mask.shape) if n in masks else "none"
                raise ValueError(f"mask of modality {n!r} is {got}, expected {(t.batch_size, t.tokens.shape[1])}; "
                                 "draw masks for this batch with model.sample_mask(x)")

    def _score(self, x: Any, parts: Mapping[str, Tokens], masks: Mapping[str, Mask], preds: Mapping[str, Tensor]
               ) -> MultiModalOutput:
        losses, targets, weights = {}, {}, {}
        for n in parts:
            m = masks[n]
            _, target_fn = self.targets[n]
            target = target_fn(self.tokenizer.parts[n].patchify(x[n]))
            targets[n] = gather_tokens(target, m.ids_masked)
            weights[n] = (m.masked_valid.float() if m.masked_valid is not None
                          else torch.ones(m.ids_masked.shape, device=target.device))
            losses[n] = self.loss_fns[n](preds[n], targets[n], weights[n])
        loss = sum(self.weights[n] * v for n, v in losses.items())
        return MultiModalOutput(loss, losses, dict(preds), targets, weights, dict(masks),
                                {n: t.grid for n, t in parts.items()}, {n: t.context for n, t in parts.items()})

    # -- features ---------------------------------------------------------------------------------------------
    def encode(self, x: Any, pool: Pool = "mean") -> Tensor:
        """Features of the unmasked input: every token of the modalities ``x`` holds (any non-empty subset).

        Shapes: ``pool="cls"|"mean"`` -> ``[B, D]`` (mean over real tokens); ``"none"`` -> ``[B, N, D]``
        """
        self.tokenizer.validate(x)
        tok = self.tokenizer(x)
        pad = tok.context.get("padding_mask")
        feats = self.encoder(tok.tokens, {"padding_mask": pad} if pad is not None else {})
        return pool_features(feats, self.num_prefix_tokens, pool, padding_mask=pad)


def _device_of(x: Mapping[str, Any]) -> torch.device:
    """The device of a dict batch (its first tensor's)."""
    return next(v.device for v in x.values() if isinstance(v, Tensor))


def _padding(tok: Tokens) -> Tensor:
    pad = tok.context.get("padding_mask")
    return pad.to(tok.tokens.device) if pad is not None else torch.zeros(tok.tokens.shape[:2], dtype=torch.bool,
                                                                          device=tok.tokens.device)


# -- decoders -----------------------------------------------------------------------------------------------------
class _Scatter(nn.Module):
    """Shared by both decoders: project the latent, put it back on every modality's grid with mask tokens, add the
    decoder's positions (sin-cos of each modality's grid) and modality embeddings."""

    def __init__(self, in_dim: int, dim: int, names: list[str]) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.type_embed = nn.ParameterDict({n: nn.Parameter(torch.zeros(dim)) for n in names})

    def positions(self, layout: Shown, like: Tensor) -> Tensor:
        """``[N, dim]``: each modality's sin-cos table on its grid plus its type embedding, concatenated."""
        return torch.cat([sincos_pos_embed(like.shape[-1], layout.grids[n], like.device, like.dtype)
                          + self.type_embed[n].to(like.dtype) for n in layout.sizes], dim=0)

    def forward(self, latent: Tensor, layout: Shown, num_prefix: int) -> tuple[Tensor, Tensor, Tensor]:
        """Prefix ``[B, P, dim]``, all tokens ``[B, N, dim]`` (mask tokens where hidden, positions added) and the
        projected shown tokens ``[B, K, dim]`` (without positions)."""
        x = self.embed(latent)
        prefix, vis = x[:, :num_prefix], x[:, num_prefix:]
        b, n, d = vis.shape[0], sum(layout.sizes.values()), vis.shape[-1]
        slot = torch.where(layout.valid, layout.ids, n)  # filler slots land in a dropped extra column
        full = self.mask_token.to(vis.dtype).expand(b, n + 1, d).scatter(1, slot.unsqueeze(-1).expand(-1, -1, d), vis)
        return prefix, full[:, :n] + self.positions(layout, vis), vis


def _split(x: Tensor, sizes: Mapping[str, int]) -> dict[str, Tensor]:
    return dict(zip(sizes, torch.split(x, list(sizes.values()), dim=1), strict=True))


class SharedDecoder(nn.Module):
    """M3AE's decoder: one transformer over every modality's tokens, then a linear head per modality.

    Args:
        in_dim: encoder width; out_dims: ``{modality: values per token}`` (``patch**2 * C`` for images, the
            vocabulary size for ids); dim/depth/num_heads: the transformer (M3AE: 512 x 8, 16 heads).

    Shapes: forward(latent ``[B, P + K, in_dim]``, layout, hidden ``{m: [B, M_m]}``) -> ``{m: [B, M_m, out_m]}``
    """

    def __init__(self, in_dim: int, out_dims: Mapping[str, int], dim: int = 512, depth: int = 8, num_heads: int = 16,
                 mlp_ratio: float = 4.0, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.scatter = _Scatter(in_dim, dim, list(out_dims))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=_norm)
                                    for _ in range(depth))
        self.norm = _norm(dim)
        self.heads = nn.ModuleDict({n: nn.Linear(dim, int(v)) for n, v in out_dims.items()})
        init_mae_weights(self)
        nn.init.normal_(self.scatter.mask_token, std=0.02)

    def forward(self, latent: Tensor, layout: Shown, hidden: Mapping[str, Tensor]) -> dict[str, Tensor]:
        prefix, x, _ = self.scatter(latent, layout, self.num_prefix_tokens)
        x = torch.cat([prefix, x], dim=1)
        select_attention(self.blocks, x)
        attn_mask = padding_attn_mask(layout.padding, self.num_prefix_tokens)
        for blk in self.blocks:
            x = blk(x) if attn_mask is None else blk(x, attn_mask=attn_mask)
        x = self.norm(x[:, self.num_prefix_tokens:])
        return {n: self.heads[n](gather_tokens(t, hidden[n])) for n, t in _split(x, layout.sizes).items()}


class _CrossBlock(nn.Module):
    """Queries attend to a context (MultiMAE's output adapter), then an MLP; pre-norm, residual."""

    fsdp_unit = True  # one FSDP unit of its own under trainer.distributed=fsdp (maezoo/engine/fsdp.py)

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_mlp = _norm(dim), _norm(dim), _norm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, q: Tensor, kv: Tensor, kv_padding: Tensor | None) -> Tensor:
        k = self.norm_kv(kv)
        q = q + self.attn(self.norm_q(q), k, k, key_padding_mask=kv_padding, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


class _ModalityDecoder(nn.Module):
    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.cross = _CrossBlock(dim, num_heads, mlp_ratio)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=_norm)
                                    for _ in range(depth))
        self.norm = _norm(dim)
        self.head = nn.Linear(dim, out_dim)

    def forward(self, q: Tensor, context: Tensor, context_padding: Tensor, padding: Tensor | None,
                hidden: Tensor) -> Tensor:
        x = self.cross(q, context, context_padding)
        select_attention(self.blocks, x)
        attn_mask = padding_attn_mask(padding)
        for blk in self.blocks:
            x = blk(x) if attn_mask is None else blk(x, attn_mask=attn_mask)
        return self.head(gather_tokens(self.norm(x), hidden))


class ModalityDecoders(nn.Module):
    """MultiMAE's decoders: per modality, its tokens (shown ones from the encoder, mask tokens elsewhere, with its
    positions) cross-attend to all shown encoder tokens, then ``depth`` self-attention blocks, then its head.

    Shapes: as :class:`SharedDecoder`.
    """

    def __init__(self, in_dim: int, out_dims: Mapping[str, int], dim: int = 256, depth: int = 2,
                 num_heads: int = 8, mlp_ratio: float = 4.0, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.scatter = _Scatter(in_dim, dim, list(out_dims))
        self.decoders = nn.ModuleDict({n: _ModalityDecoder(dim, int(v), depth, num_heads, mlp_ratio)
                                       for n, v in out_dims.items()})
        init_mae_weights(self)
        nn.init.normal_(self.scatter.mask_token, std=0.02)

    def forward(self, latent: Tensor, layout: Shown, hidden: Mapping[str, Tensor]) -> dict[str, Tensor]:
        prefix, x, vis = self.scatter(latent, layout, self.num_prefix_tokens)
        shown_pos = gather_tokens(self.scatter.positions(layout, x).expand(x.shape[0], -1, -1), layout.ids)
        context = torch.cat([prefix, vis + shown_pos], dim=1)
        context_padding = torch.cat([layout.valid.new_zeros(layout.valid.shape[0], prefix.shape[1]), ~layout.valid], 1)
        pads = _split(layout.padding, layout.sizes) if layout.padding is not None else {}
        return {n: self.decoders[n](q, context, context_padding, pads.get(n), hidden[n])
                for n, q in _split(x, layout.sizes).items()}


__all__ = ["JointTokenizer", "ModalityDecoders", "MultiModalAutoencoder", "MultiModalOutput", "SharedDecoder",
           "Shown", "gather_shown"]
