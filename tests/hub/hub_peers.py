"""Peer models built from their own configs with random weights (no network), for the hub parity tests."""

from __future__ import annotations

import re

import torch
from torch import Tensor

from maezoo.core.pos_embed import sincos_pos_embed

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, image_size=32,
             patch_size=4, decoder_hidden_size=32, decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
             decoder_intermediate_size=128, layer_norm_eps=1e-6)
N_TOKENS = (32 // 4) ** 2


def hf_mae(**overrides):
    """``ViTMAEForPreTraining`` (random weights, fixed sin-cos tables) on 32x32 images, patch 4."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(0)
    model = ViTMAEForPreTraining(ViTMAEConfig(**{**SMALL, **overrides})).eval()
    # transformers 5.25 leaves the fixed sin-cos tables at zero when built from a config (its init flag is set on
    # the patch projection first); fill them with HF's own initialisation, as a released checkpoint carries them
    model.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False
    model.vit.embeddings.initialize_weights()
    model.decoder.initialize_weights(N_TOKENS)
    with torch.no_grad():  # the decoder's prediction layer starts near zero; random values exercise the mapping
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def hf_to_official(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a transformers ``ViTMAEForPreTraining`` state dict to facebookresearch/mae's names (the inverse of
    the renames in transformers' ``convert_vit_mae_to_pytorch.py``), written independently of maezoo.hub."""
    out = {}
    rules = [
        (r"^vit\.embeddings\.cls_token$", "cls_token"), (r"^vit\.embeddings\.position_embeddings$", "pos_embed"),
        (r"^vit\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."), (r"^vit\.layernorm\.", "norm."),
        (r"^decoder\.decoder_pos_embed$", "decoder_pos_embed"), (r"^decoder\.mask_token$", "mask_token"),
        (r"^decoder\.decoder_(embed|norm|pred)\.", r"decoder_\1."),
        (r"^vit\.(?:encoder\.layer|layers)\.(\d+)\.", r"blocks.\1."),
        (r"^decoder\.decoder_layers\.(\d+)\.", r"decoder_blocks.\1."),
        (r"\.layernorm_before\.", ".norm1."), (r"\.layernorm_after\.", ".norm2."),
        (r"\.attention\.(?:output\.dense|o_proj)\.", ".attn.proj."),
        (r"\.(?:intermediate\.dense|mlp\.fc1)\.", ".mlp.fc1."), (r"\.(?:output\.dense|mlp\.fc2)\.", ".mlp.fc2."),
    ]
    qkv: dict[str, dict[str, Tensor]] = {}
    for k, v in sd.items():
        m = re.search(r"\.attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$", k)
        if m:
            base = k[: m.start()]
            for pat, rep in rules:
                base = re.sub(pat, rep, base + ".")[:-1] if pat.startswith("^") else base
            qkv.setdefault(f"{base}.attn.qkv.{m.group(2)}", {})[m.group(1)[0]] = v
            continue
        for pat, rep in rules:
            k = re.sub(pat, rep, k)
        out[k] = v
    for k, parts in qkv.items():
        out[k] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def timm_mae_vit(img_size: int = 32, **kw):
    """A timm ViT shaped like the ``.mae`` releases (class token, no head), its position table MAE's sin-cos."""
    import timm

    torch.manual_seed(0)
    args = dict(img_size=img_size, patch_size=4, embed_dim=64, depth=2, num_heads=4, num_classes=0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, **{**args, **kw}).eval()
    g = img_size // args["patch_size"]
    with torch.no_grad():
        model.pos_embed[0, 1:] = sincos_pos_embed(model.embed_dim, (g, g))
        model.pos_embed[0, :1] = 0
    return model


def encoder_features(model, x: Tensor) -> Tensor:
    """maezoo's unmasked encoder output with the class token, ``[B, 1 + N, D]``."""
    return model.encoder(model.tokenizer(x).tokens)


def hf_features(hf, x: Tensor) -> Tensor:
    """HF's unmasked encoder output in grid order (mask ratio 0, identity noise), ``[B, 1 + N, D]``."""
    hf.config.mask_ratio = 0.0
    try:
        vit = getattr(hf, "vit", hf)
        noise = torch.arange(N_TOKENS, dtype=torch.float32).expand(x.shape[0], -1)
        return vit(pixel_values=x, noise=noise).last_hidden_state
    finally:
        hf.config.mask_ratio = 0.75


VIDEO = dict(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=64, num_hidden_layers=2,
             num_attention_heads=4, intermediate_size=256, decoder_hidden_size=32, decoder_num_hidden_layers=2,
             decoder_num_attention_heads=4, decoder_intermediate_size=128, use_mean_pooling=False)
VIDEO_TOKENS = (4 // 2) * (32 // 8) ** 2


def hf_videomae(**overrides):
    """``VideoMAEForPreTraining`` (random weights, released-style config: layer_norm_eps 1e-12) on 4 x 32 x 32 clips."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    torch.manual_seed(0)
    model = VideoMAEForPreTraining(VideoMAEConfig(**{**VIDEO, **overrides})).eval()
    with torch.no_grad():  # q/v biases and the prediction layer start at zero; random values exercise the mapping
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def hf_videomae_to_official(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a transformers ``VideoMAEForPreTraining`` state dict to MCG-NJU/VideoMAE's ``PretrainVisionTransformer``
    names (the inverse of transformers' ``convert_videomae_to_pytorch.py``), written independently of maezoo.hub."""
    out, qkv = {}, {}
    for k, v in sd.items():
        k = re.sub(r"^videomae\.embeddings\.patch_embeddings\.projection\.", "encoder.patch_embed.proj.", k)
        k = re.sub(r"^videomae\.layernorm\.", "encoder.norm.", k)
        k = re.sub(r"^videomae\.encoder\.layer\.(\d+)\.", r"encoder.blocks.\1.", k)
        k = re.sub(r"^decoder\.decoder_layers\.(\d+)\.", r"decoder.blocks.\1.", k)
        for a, b in (("layernorm_before", "norm1"), ("layernorm_after", "norm2"), ("attention.output.dense", "attn.proj"),
                     ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2")):
            k = k.replace(f".{a}.", f".{b}.")
        m = re.search(r"\.attention\.attention\.(query|key|value)\.(weight|bias)$", k)
        if m and m.group(2) == "weight":
            qkv.setdefault(k[: m.start()] + ".attn.qkv.weight", {})[m.group(1)] = v
            continue
        if m:  # transformers 5 in memory: query.bias / value.bias
            k = k[: m.start()] + f".attn.{m.group(1)[0]}_bias"
        k = re.sub(r"\.attention\.attention\.(q|v)_bias$", r".attn.\1_bias", k)
        out[k] = v
    for k, parts in qkv.items():
        out[k] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def hf_video_features(hf, x: Tensor) -> Tensor:
    """HF's unmasked encoder output for a maezoo clip ``[B, C, T, H, W]``, ``[B, N, D]``."""
    return getattr(hf, "videomae", hf)(pixel_values=x.transpose(1, 2)).last_hidden_state


def audiomae_sincos(dim: int, grid: tuple[int, int]) -> Tensor:
    """Audio-MAE's ``get_2d_sincos_pos_embed_flexible`` for a (time, frequency) grid, from its formula (numpy,
    float32 grid as the official code): the first half encodes the frequency column, the second the time row."""
    import numpy as np

    gh, gw = grid
    w, h = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))

    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return torch.from_numpy(np.concatenate([one(dim // 2, w), one(dim // 2, h)], axis=1)).float()


def timm_audiomae(frames: int = 64, mel_bins: int = 32, patch: int = 8):
    """A timm ViT shaped like ``vit_base_patch16_1024_128.audiomae_as2m`` (1 channel, [T, F] input, class token, no
    head), small, its position table Audio-MAE's sin-cos."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=(frames, mel_bins), patch_size=patch,
                              in_chans=1, embed_dim=64, depth=2, num_heads=4, num_classes=0).eval()
    with torch.no_grad():
        model.pos_embed[0, 1:] = audiomae_sincos(64, (frames // patch, mel_bins // patch))
        model.pos_embed[0, :1] = 0
    return model


PATCHTST = dict(num_input_channels=3, context_length=68, patch_length=8, patch_stride=8, d_model=32, num_hidden_layers=2,
                num_attention_heads=4, ffn_dim=128, norm_type="layernorm", pre_norm=True, positional_encoding_type="random",
                do_mask_input=True, random_mask_ratio=0.4)


def hf_patchtst(**overrides):
    """``PatchTSTForPretraining`` in the configuration maezoo's blocks correspond to (random weights): 3 channels,
    68 steps (the 4 oldest cropped), patch 8."""
    from transformers import PatchTSTConfig, PatchTSTForPretraining

    torch.manual_seed(0)
    model = PatchTSTForPretraining(PatchTSTConfig(**{**PATCHTST, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def hf_patchtst_run(hf, x: Tensor, seed: int = 2):
    """The HF pre-training output for a maezoo batch ``[B, C, L]`` and the patch mask it drew, ``[B, C, N]``."""
    drawn = []
    handle = hf.model.masking.register_forward_hook(lambda m, i, o: drawn.append(o[1]))
    torch.manual_seed(seed)
    try:
        out = hf(past_values=x.transpose(1, 2))
    finally:
        handle.remove()
    return out, drawn[0].bool()


def hf_patchtst_features(hf, x: Tensor) -> Tensor:
    """HF's unmasked encoder output ``[B * C, N, D]`` (mask ratio 0)."""
    ratio = hf.model.masking.random_mask_ratio
    hf.model.masking.random_mask_ratio = 0.0
    try:
        h = hf.model(past_values=x.transpose(1, 2)).last_hidden_state
    finally:
        hf.model.masking.random_mask_ratio = ratio
    return h.flatten(0, 1)


BERT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
#: a word-piece vocabulary of 64 pieces in maezoo's trained layout (special tokens 0-4), for the BERT peer
BERT_PIECES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz",
               *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"), "the", "and", "of", "to", "in", "is", "it"]


def hf_bert(**overrides):
    """``BertForMaskedLM`` (random weights, biases and LayerNorms perturbed) with 64 pieces, 2 x 32, 40 positions."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**{**BERT, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def write_bert_vocab(folder) -> None:
    """``vocab.txt`` of :data:`BERT_PIECES` beside a saved peer."""
    (folder / "vocab.txt").write_text("".join(f"{p}\n" for p in BERT_PIECES))


def bert_ids(lengths: list[int], n: int, vocab: int = 64, seed: int = 1) -> Tensor:
    """``[CLS] pieces [SEP] [PAD]...`` rows in the trained layout (special ids 0-4), ``[B, n]``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, vocab, (len(lengths), n), generator=g)
    for i, length in enumerate(lengths):
        x[i, 0], x[i, length - 1] = 2, 3
        x[i, length:] = 0
    return x


def hf_bert_run(hf, x: Tensor, hidden: Tensor, mask_id: int, pad_id: int = 0):
    """``BertForMaskedLM`` on ``x`` with the pieces after ``[CLS]`` where ``hidden`` ``[B, L - 1]`` is set replaced by
    ``[MASK]`` and labelled: ``(last hidden state [B, L, D] of the unmasked ids, output with logits and loss)``."""
    attn = (x != pad_id).long()
    feats = hf.bert(input_ids=x, attention_mask=attn).last_hidden_state
    inp, labels = x.clone(), torch.full_like(x, -100)
    inp[:, 1:][hidden] = mask_id
    labels[:, 1:][hidden] = x[:, 1:][hidden]
    return feats, hf(input_ids=inp, attention_mask=attn, labels=labels)
