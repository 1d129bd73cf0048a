"""A test-only peer of Alpha-VL/ConvMAE's ``models_convmae.MaskedAutoencoderConvViT`` (and the encoder of its
fine-tuning ``models_convvit.ConvViT``): the official module structure and parameter names, re-implemented here
(the official code is not a package), random weights, no network.

Names: ``patch_embed{1,2,3}.{proj,norm}``, ``patch_embed4`` (linear), ``blocks{1,2}.<i>`` (``CBlock``: norm1, conv1,
attn (5x5 depth-wise), conv2, norm2, mlp.fc1/fc2 as 1x1 convolutions), ``blocks3.<i>`` (ViT ``Block``),
``stage1_output_decode``/``stage2_output_decode``, ``norm``, ``pos_embed`` (fixed sin-cos, no class row) and
``decoder_{embed,blocks,norm,pred}``, ``mask_token``, ``decoder_pos_embed``. The official forward hard-codes the
224 x 224 grids (14, 56, 28) in its mask upsampling; this peer takes them from the input, the same operation.
"""

from __future__ import annotations

import torch
from hub_peers import audiomae_sincos as sincos_table  # MAE's get_2d_sincos_pos_embed, from its formula
from torch import Tensor, nn


def _ln_channels(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)  # torch's eps 1e-5, as the official PatchEmbed
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(_ln_channels(self.norm, self.proj(x)))


class CMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = CMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        y = self.conv1(_ln_channels(self.norm1, x))
        x = x + self.conv2(self.attn(y if mask is None else mask * y))
        return x + self.mlp(_ln_channels(self.norm2, x))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class OfficialConvMAE(nn.Module):
    """``MaskedAutoencoderConvViT`` with the official names; ``grid``: the stage-3 grid of the training size."""

    def __init__(self, img_size: int = 32, patch_size=(2, 2, 2), in_chans: int = 3, embed_dim=(16, 24, 32),
                 depth=(1, 1, 2), num_heads: int = 4, decoder_embed_dim: int = 16, decoder_depth: int = 1,
                 decoder_num_heads: int = 4, mlp_ratio: float = 4.0, norm_pix_loss: bool = True) -> None:
        super().__init__()
        p1, p2, p3 = patch_size
        d1, d2, d3 = embed_dim
        self.patch_size, self.norm_pix_loss = patch_size, norm_pix_loss
        self.grid = img_size // (p1 * p2 * p3)
        self.patch_embed1 = PatchEmbed(p1, in_chans, d1)
        self.patch_embed2 = PatchEmbed(p2, d1, d2)
        self.patch_embed3 = PatchEmbed(p3, d2, d3)
        self.patch_embed4 = nn.Linear(d3, d3)
        self.stage1_output_decode = nn.Conv2d(d1, d3, p2 * p3, stride=p2 * p3)
        self.stage2_output_decode = nn.Conv2d(d2, d3, p3, stride=p3)
        n = self.grid ** 2
        self.pos_embed = nn.Parameter(sincos_table(d3, (self.grid, self.grid))[None], requires_grad=False)
        self.blocks1 = nn.ModuleList(CBlock(d1, mlp_ratio) for _ in range(depth[0]))
        self.blocks2 = nn.ModuleList(CBlock(d2, mlp_ratio) for _ in range(depth[1]))
        self.blocks3 = nn.ModuleList(Block(d3, num_heads, mlp_ratio) for _ in range(depth[2]))
        self.norm = nn.LayerNorm(d3, eps=1e-6)
        self.decoder_embed = nn.Linear(d3, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_table(decoder_embed_dim, (self.grid, self.grid))[None],
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList(Block(decoder_embed_dim, decoder_num_heads, mlp_ratio)
                                            for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, (p1 * p2 * p3) ** 2 * in_chans)
        assert n == self.pos_embed.shape[1]

    def _upsample(self, mask: Tensor, f: int) -> Tensor:
        """The official ``mask_for_patch{1,2}``: each stage-3 cell repeated over ``f x f`` finer cells."""
        b, g = mask.shape[0], self.grid
        return (mask.reshape(-1, g, g).unsqueeze(-1).repeat(1, 1, 1, f * f).reshape(-1, g, g, f, f)
                .permute(0, 1, 3, 2, 4).reshape(b, g * f, g * f).unsqueeze(1))

    def random_masking(self, noise: Tensor, mask_ratio: float = 0.75):
        n, length = noise.shape
        keep = int(length * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        mask = torch.ones(n, length)
        mask[:, :keep] = 0
        return ids_shuffle[:, :keep], torch.gather(mask, 1, ids_restore), ids_restore

    def forward_encoder(self, x: Tensor, noise: Tensor, mask_ratio: float = 0.75):
        ids_keep, mask, ids_restore = self.random_masking(noise, mask_ratio)
        _, p2, p3 = self.patch_size
        m1, m2 = self._upsample(mask, p2 * p3), self._upsample(mask, p3)
        x = self.patch_embed1(x)
        for blk in self.blocks1:
            x = blk(x, 1 - m1)
        s1 = self.stage1_output_decode(x).flatten(2).permute(0, 2, 1)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x, 1 - m2)
        s2 = self.stage2_output_decode(x).flatten(2).permute(0, 2, 1)
        x = self.patch_embed4(self.patch_embed3(x).flatten(2).permute(0, 2, 1)) + self.pos_embed

        def gather(t: Tensor) -> Tensor:
            return torch.gather(t, 1, ids_keep.unsqueeze(-1).repeat(1, 1, t.shape[-1]))

        x, s1, s2 = gather(x), gather(s1), gather(s2)
        for blk in self.blocks3:
            x = blk(x)
        return self.norm(x + s1 + s2), mask, ids_restore

    def forward_decoder(self, x: Tensor, ids_restore: Tensor) -> Tensor:
        x = self.decoder_embed(x)
        tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] - x.shape[1], 1)
        x = torch.gather(torch.cat([x, tokens], 1), 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))

    def patchify(self, imgs: Tensor) -> Tensor:
        p = self.patch_size[0] * self.patch_size[1] * self.patch_size[2]
        c, h = imgs.shape[1], imgs.shape[2] // p
        x = imgs.reshape(imgs.shape[0], c, h, p, h, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(imgs.shape[0], h * h, p * p * c)

    def forward(self, imgs: Tensor, noise: Tensor, mask_ratio: float = 0.75):
        latent, mask, ids_restore = self.forward_encoder(imgs, noise, mask_ratio)
        pred = self.forward_decoder(latent, ids_restore)
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum(), pred, mask, latent

    def forward_features(self, x: Tensor) -> Tensor:
        """``models_convvit.ConvViT.forward_features`` before pooling: no mask, no fusion, then ``norm``."""
        x = self.patch_embed1(x)
        for blk in self.blocks1:
            x = blk(x)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x)
        x = self.patch_embed4(self.patch_embed3(x).flatten(2).permute(0, 2, 1)) + self.pos_embed
        for blk in self.blocks3:
            x = blk(x)
        return self.norm(x)


def official_convmae(**kw) -> OfficialConvMAE:
    """The peer with random weights (every parameter perturbed, the sin-cos tables kept)."""
    torch.manual_seed(0)
    model = OfficialConvMAE(**kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model
