"""Hugging Face ``BertForMaskedLM`` (and the MLM part of ``BertForPreTraining``) in and out of maezoo's ``bert``.

The names are :data:`maezoo.text.models.HF_BERT_NAMES` (its loader ``bert.from_hf`` / ``bert.to_hf``, reached
through the registry: the hub imports no modality). maezoo's BERT is the same network: word + position +
token-type embeddings, the embedding LayerNorm, post-norm layers (exact GELU), the transform + LayerNorm head and
the output layer tied to the word embeddings. One thing is laid out differently: ``BertForMaskedLM`` embeds a hidden
piece as the ``[MASK]`` row of the word embeddings, the same row that scores ``[MASK]`` in the output layer; maezoo
keeps the hidden token apart (``mask_token``). The import sets it to that row; the export writes it into that row,
so a maezoo-trained model gives the same features and the same logits except the ``[MASK]`` column (docs/zoo.md).

The vocabulary beside ``config.json`` (``tokenizer.json``, else ``vocab.txt``) gives the special ids and the
``##`` continuation flags; without one, a 30,522-piece model uses BERT's ids (``[MASK]`` 103) and another size
maezoo's trained layout (``[PAD] [UNK] [CLS] [SEP] [MASK]`` = 0-4), as :func:`maezoo.text.models.bert` does.

Shapes:
    bert.embeddings.word_embeddings.weight ``[V, D]``; cls.predictions.bias ``[V]``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from maezoo.hub.io import Checkpoint, HubError, refuse_unknown
from maezoo.hub.vit import Pivot, block_count
from maezoo.registry import get

NAME = "hf_bert"
EXPECTED = ("{bert.embeddings.{word,position,token_type}_embeddings.weight, bert.embeddings.LayerNorm.*, "
            "bert.encoder.layer.<i>.{attention.self.{query,key,value}, attention.output.{dense,LayerNorm}, "
            "intermediate.dense, output.{dense,LayerNorm}}, cls.predictions.{bias,transform.*}} + config.json "
            "(model_type bert)")
WORDS = "bert.embeddings.word_embeddings.weight"
#: the Hugging Face settings maezoo's BERT corresponds to: setting -> required value
REQUIRED = {"hidden_act": "gelu", "position_embedding_type": "absolute", "is_decoder": False,
            "add_cross_attention": False, "tie_word_embeddings": True}
VOCAB_FILES = ("tokenizer.json", "vocab.txt")
BERT_VOCAB = 30522
BERT_IDS = {"pad_id": 0, "unk_id": 100, "cls_id": 101, "sep_id": 102, "mask_id": 103}
MAEZOO_IDS = {"pad_id": 0, "unk_id": 1, "cls_id": 2, "sep_id": 3, "mask_id": 4}


@dataclass
class BertPivot(Pivot):
    """The Hugging Face state dict, its ``config.json`` and the vocabulary file beside it (if any)."""

    config: dict[str, Any] | None = None
    vocab_file: Path | None = None


def matches(ckpt: Checkpoint) -> bool:
    return WORDS in ckpt.state or (ckpt.config or {}).get("model_type") == "bert"


def to_pivot(ckpt: Checkpoint) -> BertPivot:
    cfg = ckpt.config or {}
    wrong = {k: cfg[k] for k, v in REQUIRED.items() if k in cfg and cfg[k] != v}
    if wrong:
        raise HubError(f"{ckpt.path}: a BERT with {', '.join(f'{k}={v!r}' for k, v in wrong.items())}; maezoo's bert "
                       f"corresponds to {', '.join(f'{k}={v!r}' for k, v in REQUIRED.items())} (absolute positions, "
                       "exact GELU, an encoder with the output layer tied to the word embeddings). Fix: use a "
                       "BertForMaskedLM checkpoint of that configuration")
    s = ckpt.state
    dec = s.get("cls.predictions.decoder.weight")
    if dec is not None and WORDS in s and not dec.equal(s[WORDS]):
        raise HubError(f"{ckpt.path}: cls.predictions.decoder.weight differs from the word embeddings (an untied output "
                       "layer); maezoo's BERT ties them. Fix: use a checkpoint with tie_word_embeddings=True")
    folder = ckpt.path.parent
    vocab = next((folder / f for f in VOCAB_FILES if (folder / f).is_file()), None)
    notes = [] if vocab else ["no vocabulary file beside config.json: special ids from the vocabulary size "
                              "(30522: BERT's [MASK]=103; otherwise maezoo's 0-4)"]
    eps = cfg.get("layer_norm_eps", 1e-12)
    return BertPivot(state=dict(s), path=ckpt.path, num_heads=cfg.get("num_attention_heads"),
                     layer_norm_eps=None if eps == 1e-12 else eps, config=cfg, vocab_file=vocab, notes=notes)


def _special_ids(pv: BertPivot, vocab_size: int) -> dict[str, int]:
    if pv.vocab_file is None:
        ids = BERT_IDS if vocab_size == BERT_VOCAB else MAEZOO_IDS
    else:
        try:
            ids = get("vocab", "wordpiece").from_file(pv.vocab_file).special_ids
        except ValueError as exc:
            raise HubError(f"{pv.path}: the vocabulary beside it cannot be used ({exc})") from None
    pad = (pv.config or {}).get("pad_token_id")
    if pad is not None and pad != ids["pad_id"]:
        raise HubError(f"{pv.path}: config.json says pad_token_id={pad} but the vocabulary's [PAD] is "
                       f"{ids['pad_id']}; put the model's tokenizer.json or vocab.txt beside config.json")
    return ids


def infer_spec(pv: BertPivot) -> dict[str, Any]:
    s, cfg = pv.state, pv.config or {}
    need = [WORDS, "bert.embeddings.position_embeddings.weight", "bert.encoder.layer.0.intermediate.dense.weight"]
    missing = [k for k in need if k not in s]
    if missing:
        raise HubError(f"{pv.path}: missing {', '.join(missing)}; a BertForMaskedLM checkpoint holds {EXPECTED}")
    vocab, dim = (int(v) for v in s[WORDS].shape)
    kwargs: dict[str, Any] = {
        "max_positions": int(s["bert.embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(s["bert.embeddings.token_type_embeddings.weight"].shape[0]), "embed_dim": dim,
        "depth": block_count(s, "bert.encoder.layer."), "num_heads": pv.num_heads or max(1, dim // 64),
        "mlp_dim": int(s["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "dropout": float(cfg.get("hidden_dropout_prob", 0.1)),
    }
    if pv.vocab_file is not None:
        kwargs["vocab_file"] = str(pv.vocab_file)
    elif vocab != BERT_VOCAB:
        kwargs["vocab_size"] = vocab
    return {"name": "bert", "kwargs": kwargs}


def preset_name(kwargs: dict[str, Any]) -> str:
    return "bert"


def pivot_to_maezoo(pv: BertPivot) -> tuple[dict[str, Tensor], list[str]]:
    import torch

    words = pv.state.get(WORDS)
    if words is None:
        raise HubError(f"{pv.path}: missing {WORDS}; a BertForMaskedLM checkpoint holds {EXPECTED}")
    ids = _special_ids(pv, int(words.shape[0]))
    out, ignored, unknown = get("model", "bert").from_hf(pv.state, ids["mask_id"])
    refuse_unknown(pv.path, "the BertForMaskedLM layout maezoo maps", unknown, EXPECTED)
    if pv.vocab_file is not None:
        vocab = get("vocab", "wordpiece").from_file(pv.vocab_file)
        if vocab.vocab_size != words.shape[0]:
            raise HubError(f"{pv.vocab_file}: {vocab.vocab_size} pieces but the word embeddings have "
                           f"{words.shape[0]} rows; put the model's own vocabulary beside config.json")
        out["tokenizer.continuation"] = vocab.continuation_mask()
    else:
        out["tokenizer.continuation"] = torch.zeros(words.shape[0], dtype=torch.bool)
    if "cls.predictions.bias" not in pv.state and "cls.predictions.decoder.bias" in pv.state:
        out["decoder.bias"] = pv.state["cls.predictions.decoder.bias"]
        ignored = [k for k in ignored if k != "cls.predictions.decoder.bias"]
    return out, [k for k in ignored if not k.startswith("cls.predictions.decoder.")]


def bert_config(model: Any) -> dict[str, Any]:
    """The ``config.json`` of a ``BertForMaskedLM`` matching a built maezoo BERT."""
    tok, enc = model.tokenizer, model.encoder
    blk = enc.blocks[0]
    drop = float(getattr(enc.embed_drop, "p", 0.0))
    return {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": tok.vocab_size,
            "hidden_size": tok.embed_dim, "num_hidden_layers": len(enc.blocks), "num_attention_heads": blk.attn.num_heads,
            "intermediate_size": blk.mlp.fc1.out_features, "hidden_act": "gelu", "hidden_dropout_prob": drop,
            "attention_probs_dropout_prob": drop, "max_position_embeddings": tok.max_positions,
            "type_vocab_size": tok.token_type_embeddings.num_embeddings, "initializer_range": 0.02,
            "layer_norm_eps": float(enc.embed_norm.eps), "pad_token_id": tok.pad_id,
            "position_embedding_type": "absolute", "tie_word_embeddings": True, "is_decoder": False}


def write_folder(model: Any, state: dict[str, Tensor], dst: Path) -> Path:
    """A ``BertForMaskedLM.from_pretrained`` folder: ``config.json``, ``model.safetensors`` and, when the model
    carries its vocabulary, ``tokenizer.json`` + ``vocab.txt`` + ``tokenizer_config.json``."""
    from safetensors.torch import save_file

    tok = model.tokenizer
    hf = get("model", "bert").to_hf(state, tok.mask_id)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(hf, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(bert_config(model), indent=2))
    text = getattr(tok, "vocab_json", None)
    if isinstance(text, str):
        _write_vocab(text, dst, tok.max_positions)
    return dst


def _write_vocab(text: str, dst: Path, max_len: int) -> None:
    spec = json.loads(text)
    pieces = spec.get("model", {}).get("vocab", {})
    (dst / "tokenizer.json").write_text(text)
    if isinstance(pieces, dict) and pieces:
        ordered = sorted(pieces.items(), key=lambda kv: kv[1])
        (dst / "vocab.txt").write_text("".join(f"{p}\n" for p, _ in ordered))
    norm = spec.get("normalizer") or {}
    lower = bool(norm.get("lowercase", True)) if norm.get("type") == "BertNormalizer" else True
    (dst / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": lower,
                                                           "model_max_length": max_len}, indent=2))


__all__ = ["bert_config", "infer_spec", "matches", "pivot_to_maezoo", "to_pivot", "write_folder"]
