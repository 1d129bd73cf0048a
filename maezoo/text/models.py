"""BERT (Devlin et al., 1810.04805) masked language modelling on the one core.

``bert`` builds a :class:`~maezoo.core.mae.MaskedAutoencoder` in replace mode from three parts:
    :class:`~maezoo.text.tokenizer.TextTokenizer` (word + position + token-type embeddings),
    :class:`BertEncoder` (embedding LayerNorm, then post-norm transformer layers from timm's ``Attention`` and
        ``Mlp``; padded keys are masked in attention),
    :class:`BertLMHead` (dense + GELU + LayerNorm, then the output layer tied to the word embeddings, plus a
        bias; it scores the hidden tokens only).
Masking: 15% of the real, non-special tokens of each sequence (``random``, or ``whole_word``), of which 80%
become the mask token, 10% a random vocabulary token and 10% stay (``ReplaceRule(0.8, 0.1, 0.1)``); the loss is
the cross-entropy over the vocabulary on those tokens (``ce``).

Presets (Turc et al. 1908.08962 for the small ones): ``bert_tiny`` 2 x 128 (2 heads), ``bert_mini`` 4 x 256 (4),
``bert_small`` 4 x 512 (8), ``bert_base`` 12 x 768 (12 heads, MLP 3072, 512 positions).

Parameter names stay close to Hugging Face's ``BertForMaskedLM``; :data:`HF_BERT_NAMES` is the one mapping
(``query``/``key``/``value`` are concatenated into ``qkv``).

Shapes:
    x ``[B, L]`` ids -> pred ``[B, M, V]`` logits on ``mask.ids_masked``, target ``[B, M]`` ids;
    encode(x, pool="cls"|"mean") -> ``[B, D]`` (mean over real tokens, padding excluded)
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Attention
from torch import Tensor, nn

from maezoo.core.attention import padding_attn_mask, select_attention
from maezoo.core.mae import MaskedAutoencoder
from maezoo.core.masking import Mask, ReplaceRule, build_masking, gather_tokens
from maezoo.core.presets import preset
from maezoo.core.types import Divides, Rate, Ratio, Size
from maezoo.registry import register
from maezoo.text.tokenizer import TextTokenizer
from maezoo.text.vocab import SPECIAL_TOKENS, TextVocab

#: Hugging Face ``BertForMaskedLM`` name -> maezoo name (``{i}``: layer index); q/k/v are stacked into ``qkv``
HF_BERT_NAMES: dict[str, str] = {
    "bert.embeddings.word_embeddings.weight": "tokenizer.word_embeddings.weight",
    "bert.embeddings.position_embeddings.weight": "tokenizer.position_embeddings.weight",
    "bert.embeddings.token_type_embeddings.weight": "tokenizer.token_type_embeddings.weight",
    "bert.embeddings.LayerNorm.{w}": "encoder.embed_norm.{w}",
    "bert.encoder.layer.{i}.attention.self.{query,key,value}.{w}": "encoder.blocks.{i}.attn.qkv.{w}",
    "bert.encoder.layer.{i}.attention.output.dense.{w}": "encoder.blocks.{i}.attn.proj.{w}",
    "bert.encoder.layer.{i}.attention.output.LayerNorm.{w}": "encoder.blocks.{i}.norm1.{w}",
    "bert.encoder.layer.{i}.intermediate.dense.{w}": "encoder.blocks.{i}.mlp.fc1.{w}",
    "bert.encoder.layer.{i}.output.dense.{w}": "encoder.blocks.{i}.mlp.fc2.{w}",
    "bert.encoder.layer.{i}.output.LayerNorm.{w}": "encoder.blocks.{i}.norm2.{w}",
    "cls.predictions.transform.dense.{w}": "decoder.transform.dense.{w}",
    "cls.predictions.transform.LayerNorm.{w}": "decoder.transform.LayerNorm.{w}",
    "cls.predictions.bias": "decoder.bias",
    # the [MASK] row of the word embeddings is replace mode's mask token
    "bert.embeddings.word_embeddings.weight[mask_id]": "mask_token",
}

LN_EPS = 1e-12  # BERT's layer_norm_eps
#: Hugging Face keys a ``BertForMaskedLM`` / ``BertForPreTraining`` file may hold outside the table: the pooler and
#: next-sentence head (not part of masked language modelling), the position-id buffer, the tied output layer
HF_BERT_IGNORED = re.compile(r"^(bert\.pooler\.|cls\.seq_relationship\.|bert\.embeddings\.position_ids$|"
                             r"cls\.predictions\.decoder\.)")


def _hf_rules() -> list[tuple[re.Pattern[str], str]]:
    """:data:`HF_BERT_NAMES` as (regex over Hugging Face names, maezoo template) pairs, q/k/v and [MASK] aside."""
    rules = []
    for hf, mz in HF_BERT_NAMES.items():
        if "{query,key,value}" in hf or "[mask_id]" in hf:
            continue
        pat = re.escape(hf).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{w\}", r"(?P<w>weight|bias)")
        rules.append((re.compile(f"^{pat}$"), mz))
    return rules


def bert_state_from_hf(state: dict[str, Tensor], mask_id: int) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """A Hugging Face BERT state dict in maezoo's names through :data:`HF_BERT_NAMES`: ``(state, ignored, unknown)``.

    Old ``LayerNorm.gamma``/``beta`` names are read as ``weight``/``bias``; separate query/key/value projections
    are stacked into ``qkv``; the mask token is the ``[MASK]`` row of the word embeddings; ``ignored``: keys of
    :data:`HF_BERT_IGNORED`; ``unknown``: keys of neither (the caller refuses them).

    Shapes: ``...query.weight`` ``[D, D]`` x 3 -> ``encoder.blocks.{i}.attn.qkv.weight`` ``[3D, D]``
    """
    rules, out, ignored, unknown = _hf_rules(), {}, [], []
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        k = re.sub(r"\.LayerNorm\.gamma$", ".LayerNorm.weight", re.sub(r"\.LayerNorm\.beta$", ".LayerNorm.bias", key))
        m = re.match(r"^bert\.encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$", k)
        if m:
            qkv.setdefault(f"encoder.blocks.{m.group(1)}.attn.qkv.{m.group(3)}", {})[m.group(2)] = value
            continue
        if HF_BERT_IGNORED.match(k):
            ignored.append(key)
            continue
        name = _rename(rules, k)
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    for k, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            unknown.append(f"{k} (only {', '.join(sorted(parts))})")
            continue
        out[k] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    words = out.get("tokenizer.word_embeddings.weight")
    if words is not None:
        out["mask_token"] = words[mask_id].clone()
    return out, ignored, unknown


def _rename(rules: list[tuple[re.Pattern[str], str]], key: str) -> str | None:
    for pat, template in rules:
        m = pat.match(key)
        if m:
            return template.format(**m.groupdict())
    return None


def bert_state_to_hf(state: dict[str, Tensor], mask_id: int) -> dict[str, Tensor]:
    """A maezoo BERT state dict in Hugging Face's ``BertForMaskedLM`` names (the inverse of
    :func:`bert_state_from_hf`); the mask token is written into the ``[MASK]`` row of the word embeddings, since
    ``BertForMaskedLM`` embeds a hidden piece as that row.

    Shapes: ``encoder.blocks.{i}.attn.qkv.weight`` ``[3D, D]`` -> query/key/value ``[D, D]`` each
    """
    inverse = []
    for hf, mz in HF_BERT_NAMES.items():
        if "[mask_id]" in hf:
            continue
        pat = re.escape(mz).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{w\}", r"(?P<w>weight|bias)")
        inverse.append((re.compile(f"^{pat}$"), hf))
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in ("mask_token", "tokenizer.continuation"):
            continue
        for pat, hf in inverse:
            m = pat.match(key)
            if m is None:
                continue
            if "{query,key,value}" in hf:
                for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                    out[hf.replace("{query,key,value}", name).format(**m.groupdict())] = part.clone()
            else:
                out[hf.format(**m.groupdict())] = value
            break
        else:
            raise ValueError(f"{key} is not a BERT parameter in HF_BERT_NAMES; only a model built by "
                             "maezoo.text.models.bert exports to BertForMaskedLM")
    words = out["bert.embeddings.word_embeddings.weight"].clone()
    words[mask_id] = state["mask_token"]
    out["bert.embeddings.word_embeddings.weight"] = words
    return out


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation: normal(0, 0.02) linears with zero bias, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BertLayer(nn.Module):
    """A post-norm transformer layer: ``x = LN(x + attn(x)); x = LN(x + mlp(x))`` (timm's Attention and Mlp).

    ``drop_path1``/``drop_path2`` follow timm's ``Block`` so fine-tuning's stochastic depth applies.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads, qkv_bias=True, attn_drop=dropout, proj_drop=dropout)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_dim, act_layer=nn.GELU, drop=(0.0, dropout))
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.drop_path1: nn.Module = nn.Identity()
        self.drop_path2: nn.Module = nn.Identity()

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = self.norm1(x + self.drop_path1(self.attn(x, attn_mask=attn_mask)))
        return self.norm2(x + self.drop_path2(self.mlp(x)))


@register("encoder", "bert")
class BertEncoder(nn.Module):
    """Embedding LayerNorm + dropout, then post-norm layers; the tokenizer's ``[CLS]`` is the prefix token.

    Shapes: tokens ``[B, N, D]`` + ``context["prefix_tokens"]`` ``[B, 1, D]`` -> ``[B, 1 + N, D]``
    """

    num_prefix_tokens = 1

    def __init__(self, dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"encoder dim {dim} must divide by num_heads {num_heads}")
        self.dim, self.depth = dim, depth
        self.embed_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(BertLayer(dim, num_heads, mlp_dim, dropout) for _ in range(depth))
        self.norm: nn.Module = nn.Identity()  # post-norm layers end normalised
        init_bert_weights(self)

    def forward(self, tokens: Tensor, context: dict[str, Any] | None = None) -> Tensor:
        ctx = context or {}
        prefix = ctx.get("prefix_tokens")
        if prefix is None:
            raise ValueError("the bert encoder needs context['prefix_tokens'] (the [CLS] embedding) from its "
                             "tokenizer; use the 'text' tokenizer")
        x = self.embed_drop(self.embed_norm(torch.cat([prefix.to(tokens.dtype), tokens], dim=1)))
        select_attention(self.blocks, x)
        attn_mask = padding_attn_mask(ctx.get("padding_mask"), self.num_prefix_tokens)
        for blk in self.blocks:
            x = blk(x, attn_mask)
        return self.norm(x)


class _Transform(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.LayerNorm = nn.LayerNorm(dim, eps=LN_EPS)  # noqa: N815  (Hugging Face's name)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


@register("decoder", "bert_lm")
class BertLMHead(nn.Module):
    """BERT's prediction head on the hidden tokens only: transform, then logits through the tied word embeddings.

    Shapes: latent ``[B, 1 + N, D]`` -> ``[B, M, V]`` on ``mask.ids_masked`` (:meth:`logits`: every token)
    """

    predicts: Literal["masked"] = "masked"

    def __init__(self, embedding: nn.Embedding, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        dim, vocab = embedding.embedding_dim, embedding.num_embeddings
        self.num_prefix_tokens = num_prefix_tokens
        self.transform = _Transform(dim)
        self.bias = nn.Parameter(torch.zeros(vocab))
        self._tied = (embedding,)  # a tuple: the tokenizer owns the weights, this head only reads them
        init_bert_weights(self.transform)

    def logits(self, hidden: Tensor) -> Tensor:
        """``[..., D]`` -> ``[..., V]``."""
        return F.linear(self.transform(hidden), self._tied[0].weight.to(hidden.dtype), self.bias.to(hidden.dtype))

    def forward(self, latent: Tensor, mask: Mask, grid: tuple[int, ...], context: dict[str, Any] | None = None) -> Tensor:
        x = latent[:, self.num_prefix_tokens:]
        if x.shape[1] != mask.mask.shape[1]:
            raise ValueError(f"the bert_lm head needs every token ({mask.mask.shape[1]}), got {x.shape[1]}: "
                             "use mask_mode='replace'")
        return self.logits(gather_tokens(x, mask.ids_masked))


def vocab_kwargs(vocab_file: str | None, vocab_size: int | None) -> dict[str, Any]:
    """Vocabulary size and special ids from ``vocab_file`` (checked against ``vocab_size``); without a file,
    BERT's 30522 pieces and ids, or for another ``vocab_size`` the layout of a vocabulary maezoo trains
    (``[PAD] [UNK] [CLS] [SEP] [MASK]`` = 0-4)."""
    if vocab_file is None:
        if vocab_size is None:
            return {"vocab_size": 30522}
        return {"vocab_size": vocab_size, **{f"{t.strip('[]').lower()}_id": i for i, t in enumerate(SPECIAL_TOKENS)}}
    vocab = TextVocab.from_file(vocab_file)
    if vocab_size is not None and vocab_size != vocab.vocab_size:
        raise ValueError(f"{vocab_file} holds {vocab.vocab_size} pieces but model vocab_size={vocab_size}. Fix: drop "
                         "model.args.vocab_size (it is read from the file) or give the matching tokenizer.json")
    return {"vocab_size": vocab.vocab_size, **vocab.special_ids, "_vocab": vocab}


def bert(
    vocab_file: str | None = None,
    vocab_size: Size | None = None,
    max_positions: Size = 512,
    type_vocab_size: Size = 2,
    embed_dim: Size = 768,
    depth: Size = 12,
    num_heads: Annotated[Size, Divides("embed_dim")] = 12,
    mlp_dim: Size = 3072,
    dropout: Rate = 0.1,
    masking: Literal["random", "whole_word"] = "random",
    mask_ratio: Ratio = 0.15,
    replace: dict[str, float] | None = None,
    label_smoothing: Rate = 0.0,
) -> MaskedAutoencoder:
    """A BERT masked language model (module docstring).

    Args:
        vocab_file: ``tokenizer.json`` or BERT ``vocab.txt`` giving the vocabulary size, special ids and word
            pieces (a text dataset passes its own); without it BERT's 30522 pieces and ids, or ``vocab_size``
            pieces laid out as maezoo trains them (special tokens 0-4).
        masking: ``random`` pieces or ``whole_word`` (all pieces of a word together).
        replace: shares of mask token / random token / unchanged (default BERT's ``{mask: 0.8, random: 0.1,
            keep: 0.1}``).
    """
    vk = vocab_kwargs(vocab_file, vocab_size)
    vocab = vk.pop("_vocab", None)
    tok = TextTokenizer(embed_dim, max_positions=max_positions, type_vocab_size=type_vocab_size, **vk)
    if vocab is not None:
        tok.continuation.copy_(vocab.continuation_mask())
        tok.vocab_json = vocab.to_json()  # written beside the run's weights (run_files)
    enc = BertEncoder(embed_dim, depth, num_heads, mlp_dim, dropout)
    head = BertLMHead(tok.word_embeddings)
    rule = ReplaceRule.coerce(replace or {"mask": 0.8, "random": 0.1, "keep": 0.1})
    loss = build_loss_ce(label_smoothing)
    model = MaskedAutoencoder(tok, enc, head, build_masking(masking, ratio=mask_ratio), target="raw", loss=loss,
                              mask_mode="replace", replace=rule)
    with torch.no_grad():  # the mask token starts as the [MASK] embedding (BERT embeds [MASK] like any piece)
        model.mask_token.copy_(tok.word_embeddings.weight[tok.mask_id])
    return model


def build_loss_ce(label_smoothing: float) -> Any:
    from maezoo.registry import build

    return build("loss", "ce", label_smoothing=label_smoothing)


#: files written beside a run's weights and read back for these builder arguments (maezoo.engine.checkpoint)
bert.run_files = {"vocab_file": "tokenizer.json"}  # type: ignore[attr-defined]
bert.smoke_kwargs = {"vocab_size": 64, "max_positions": 16, "embed_dim": 16, "depth": 1, "num_heads": 2,  # type: ignore[attr-defined]
                     "mlp_dim": 32}

register("model", "bert")(bert)


@register("model", "bert_tiny")
@preset(bert, embed_dim=128, depth=2, num_heads=2, mlp_dim=512)
def bert_tiny(**kwargs: Any) -> MaskedAutoencoder:
    """BERT-Tiny: 2 layers x 128 (2 heads, MLP 512)."""
    return bert(**kwargs)


@register("model", "bert_mini")
@preset(bert, embed_dim=256, depth=4, num_heads=4, mlp_dim=1024)
def bert_mini(**kwargs: Any) -> MaskedAutoencoder:
    """BERT-Mini: 4 layers x 256 (4 heads, MLP 1024)."""
    return bert(**kwargs)


@register("model", "bert_small")
@preset(bert, embed_dim=512, depth=4, num_heads=8, mlp_dim=2048)
def bert_small(**kwargs: Any) -> MaskedAutoencoder:
    """BERT-Small: 4 layers x 512 (8 heads, MLP 2048)."""
    return bert(**kwargs)


@register("model", "bert_base")
@preset(bert, embed_dim=768, depth=12, num_heads=12, mlp_dim=3072, max_positions=512)
def bert_base(**kwargs: Any) -> MaskedAutoencoder:
    """BERT-Base: 12 layers x 768 (12 heads, MLP 3072, 512 learned positions, 2 token types)."""
    return bert(**kwargs)


#: the Hugging Face ``BertForMaskedLM`` loader, reached through the registry by maezoo.hub (which imports no modality)
bert.from_hf = bert_state_from_hf  # type: ignore[attr-defined]
bert.to_hf = bert_state_to_hf  # type: ignore[attr-defined]
for _b in (bert_tiny, bert_mini, bert_small, bert_base):
    _b.run_files = bert.run_files  # type: ignore[attr-defined]
    _b.from_hf, _b.to_hf = bert.from_hf, bert.to_hf  # type: ignore[attr-defined]

__all__ = ["HF_BERT_IGNORED", "HF_BERT_NAMES", "BertEncoder", "BertLMHead", "BertLayer", "bert", "bert_base", "bert_mini", "bert_small",
           "bert_state_from_hf", "bert_state_to_hf", "bert_tiny"]
