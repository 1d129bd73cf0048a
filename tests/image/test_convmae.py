"""ConvMAE: no leak from hidden patches, one mask across scales, the transformer stage on visible tokens only,
unmasked downstream use, layer-wise decay across the three stages, clear errors, and the recipe end to end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import maezoo
from maezoo.core.layers import layer_ids
from maezoo.core.masking import Mask, RandomMasking
from maezoo.image.convmae import GRID_KEY, ConvMAEEncoder, MaskedConvBlock, convmae

TINY = {"embed_dims": (8, 16, 32), "depths": (2, 2, 2), "num_heads": 2, "decoder_dim": 16, "decoder_depth": 1,
        "decoder_heads": 2, "img_size": None}


def tiny(patch_sizes=(4, 2, 2), **kw) -> nn.Module:
    torch.manual_seed(0)
    model = convmae(patch_sizes=patch_sizes, **{**TINY, **kw})
    with torch.no_grad():  # make zero-initialised biases and norms non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def cell_mask(mask: Mask, grid3: tuple[int, int], cell: int) -> torch.Tensor:
    """``[B, H, W]`` pixel mask: True on pixels whose ``cell x cell`` stage-3 patch is hidden (hand-written loops)."""
    b = mask.mask.shape[0]
    out = torch.zeros(b, grid3[0] * cell, grid3[1] * cell, dtype=torch.bool)
    for i in range(b):
        for k in mask.ids_masked[i].tolist():
            r, c = divmod(k, grid3[1])
            out[i, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = True
    return out


@pytest.mark.parametrize("patch_sizes", [(4, 2, 2), (1, 2, 2), (2, 2, 2)])
def test_hidden_pixels_never_reach_visible_outputs(patch_sizes):
    model = tiny(patch_sizes)
    s = patch_sizes[0] * patch_sizes[1] * patch_sizes[2]
    x = torch.randn(3, 3, 4 * s, 6 * s)  # rectangular: stage-3 grid 4 x 6
    mask = model.sample_mask(x, generator=torch.Generator().manual_seed(1))
    assert mask.mask.shape == (3, 24) and int(mask.mask[0].sum()) == 18
    hidden_px = cell_mask(mask, (4, 6), s).unsqueeze(1).expand_as(x)
    x2 = x.clone()
    x2[hidden_px] = 50.0 * torch.randn(int(hidden_px.sum()))
    with torch.no_grad():
        ref, perturbed = model(x, mask=mask), model(x2, mask=mask)
    assert ref.latent.shape == (3, 6, 32)  # the visible stage-3 tokens only
    assert torch.equal(ref.latent, perturbed.latent), "hidden pixels changed the visible outputs"
    assert torch.equal(ref.pred, perturbed.pred)  # the decoder sees the encoder output only
    # not vacuous: one visible patch's pixels change the outputs
    x3 = x.clone()
    r, c = divmod(int(mask.ids_keep[0, 0]), 6)
    x3[0, :, r * s:(r + 1) * s, c * s:(c + 1) * s] += 1.0
    with torch.no_grad():
        assert not torch.equal(model(x3, mask=mask).latent[0], ref.latent[0])


def test_one_mask_across_scales_and_a_quarter_of_the_tokens_in_the_transformer():
    model = tiny()
    enc: ConvMAEEncoder = model.encoder
    x = torch.randn(2, 3, 64, 64)  # stage grids 16x16, 8x8, 4x4
    seen: dict[str, torch.Tensor] = {}
    hooks = [enc.stages[s].blocks[0].attn.register_forward_hook(
        lambda m, inp, out, s=s: seen.__setitem__(f"dw{s}", inp[0].detach())) for s in (0, 1)]
    hooks.append(enc.stages[2].blocks[0].register_forward_hook(lambda m, inp, out: seen.__setitem__("attn", inp[0])))
    out = model(x, generator=torch.Generator().manual_seed(0))
    for h in hooks:
        h.remove()
    mask = out.mask
    assert out.grid == (4, 4) and out.token_grid == (16, 16) and mask.mask.shape == (2, 16)
    keep1, keep2 = enc.stage_keep(mask, (16, 16))
    for stage, (keep, cell) in enumerate(((keep1, 4), (keep2, 2))):
        hand = ~cell_mask(mask, (4, 4), cell)  # loops over the hidden stage-3 cells
        assert torch.equal(keep[:, 0], hand), f"stage {stage + 1} mask disagrees with the stage-3 mask"
        dw_in = seen[f"dw{stage}"]  # the depth-wise convolution's input: exactly zero at hidden positions
        assert torch.all(dw_in.permute(0, 2, 3, 1)[~keep[:, 0]] == 0)
        assert dw_in.permute(0, 2, 3, 1)[keep[:, 0]].abs().sum() > 0
    assert seen["attn"].shape == (2, 4, 32), "the transformer stage must see the visible quarter of the tokens"
    # the same mask from the generator, and the loss is MAE's masked MSE on the stage-3 grid
    again = model.sample_mask(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.mask, mask.mask)
    per_token = ((out.pred - out.target) ** 2).mean(-1)
    torch.testing.assert_close(out.loss, per_token[mask.mask].mean())
    patches = x.view(2, 3, 4, 16, 4, 16).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, -1)  # 16x16 cells, (p, q, c)
    torch.testing.assert_close(model.tokenizer.patchify(x), patches)
    torch.testing.assert_close(model.tokenizer.unpatchify(patches, out.grid), x)


def test_transformer_stage_uses_the_cores_attention_kernel_choice():
    """Stage 3 picks its kernel as the ViT encoder does (SDPA's CPU bf16 flash kernel is several times slower on
    short sequences; before this, ConvMAE's stage 3 always ran it while the ViT it is compared with did not)."""
    from maezoo.core.attention import attention_kernel

    model = tiny().train()
    x = torch.randn(2, 3, 64, 64)  # 16 stage-3 tokens, 4 visible
    blocks = model.encoder.stages[2].blocks
    seen: list[torch.Tensor] = []
    hook = blocks[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.autocast("cpu", torch.bfloat16):
        model(x)
        assert attention_kernel(seen[0]) == "explicit"
        assert not any(b.attn.fused_attn for b in blocks)
    model(x)  # fp32 on a CPU: SDPA
    hook.remove()
    assert all(b.attn.fused_attn for b in blocks)


def test_encoder_runs_unmasked_for_downstream_use():
    model = tiny()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        feats = model.encode(x, pool="none")
        pooled = model.encode(x, pool="mean")
        tok = model.tokenizer(x)
        manual = model.encoder(tok.tokens, {GRID_KEY: tok.grid})
    assert feats.shape == (2, 6, 32) and pooled.shape == (2, 32)
    torch.testing.assert_close(feats, manual)
    torch.testing.assert_close(pooled, manual.mean(1))
    with pytest.raises(ValueError, match="class token"):
        model.encode(x, pool="cls")


def test_layer_decay_ranks_the_three_stages_and_stochastic_depth_reaches_conv_blocks():
    from maezoo.eval.finetune import Classifier, FinetuneConfig, build_finetune_optimizer

    model = tiny()
    table, num_layers = layer_ids(model)
    assert num_layers == 6
    assert table["tokenizer.proj.weight"] == 0
    assert table["encoder.stages.0.blocks.1.conv1.weight"] == 2
    assert table["encoder.stages.1.downsample.proj.weight"] == 2 and table["encoder.stages.1.blocks.0.attn.weight"] == 3
    assert table["encoder.stages.2.proj.weight"] == 4 and table["encoder.stages.2.blocks.1.attn.qkv.weight"] == 6
    assert table["encoder.norm.weight"] == 7 and table["decoder.pred.weight"] == 7
    clf = Classifier(model, num_classes=5, pool="mean", drop_path=0.2)
    blocks = clf.encoder.blocks
    assert [type(b).__name__ for b in blocks] == ["MaskedConvBlock"] * 4 + ["Block"] * 2
    assert isinstance(blocks[0].drop_path1, nn.Identity) and blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert blocks[1].drop_path2.drop_prob == pytest.approx(0.04)  # linear over all six blocks
    opt = build_finetune_optimizer(clf, FinetuneConfig(layer_decay=0.5), lr=1.0)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    named = dict(clf.named_parameters())
    s = {k: scale[id(named[k])] for k in ("tokenizer.proj.weight", "encoder.stages.0.blocks.0.conv1.weight",
                                          "encoder.stages.1.blocks.0.conv1.weight",
                                          "encoder.stages.2.blocks.0.attn.qkv.weight", "head.weight")}
    assert s["tokenizer.proj.weight"] == 0.5 ** 7 and s["encoder.stages.0.blocks.0.conv1.weight"] == 0.5 ** 6
    assert s["encoder.stages.1.blocks.0.conv1.weight"] == 0.5 ** 4 and s["head.weight"] == 1.0
    assert s["encoder.stages.2.blocks.0.attn.qkv.weight"] == 0.5 ** 2
    logits = clf.train()(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5)


def test_masked_block_is_the_published_formula():
    torch.manual_seed(0)
    blk = MaskedConvBlock(8).eval()
    x, keep = torch.randn(2, 8, 6, 6), (torch.rand(2, 1, 6, 6) > 0.5).float()
    ln = lambda t, n: n(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # noqa: E731
    ref = x + blk.conv2(blk.attn(keep * blk.conv1(ln(x, lambda t: nn.functional.layer_norm(
        t, (8,), blk.norm1.weight, blk.norm1.bias, 1e-5)))))
    ref = ref + blk.mlp.fc2(blk.mlp.act(blk.mlp.fc1(ln(ref, lambda t: nn.functional.layer_norm(
        t, (8,), blk.norm2.weight, blk.norm2.bias, 1e-5)))))
    torch.testing.assert_close(blk(x, keep), ref)


def test_published_sizes_and_presets():
    with torch.device("meta"):
        base = maezoo.create_model("convmae_base")
        small = maezoo.create_model("convmae_small")
    enc = base.encoder
    assert enc.stage_depths == [2, 2, 11] and enc.dim == 768 and base.tokenizer.patch_sizes == (4, 2, 2)
    assert [enc.stages[1].blocks[0].conv1.in_channels, enc.stages[2].blocks[0].attn.num_heads] == [384, 12]
    assert base.tokenizer.embed_dim == 256 and base.tokenizer.target_dim == 16 * 16 * 3
    assert len(base.decoder.blocks) == 8 and base.decoder.embed.out_features == 512 and base.masking.ratio == 0.75
    assert enc.fuse[0].stride == (4, 4) and enc.fuse[1].stride == (2, 2)
    assert small.encoder.dim == 384 and "not in the official" in maezoo.get("model", "convmae_small").__doc__.lower()


def test_bad_inputs_fail_with_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="divisible by the patch size 16x16"):
        model(torch.randn(1, 3, 40, 32))
    with pytest.raises(ValueError, match="in_chans=3"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="convmae_grid"):
        model.encoder(torch.randn(1, 64, 8))
    with pytest.raises(ValueError, match="3 values"):
        convmae(embed_dims=(8, 16))
    with pytest.raises(ValueError, match="num_heads"):
        convmae(embed_dims=(8, 16, 36), num_heads=8)
    wrong = RandomMasking(0.75)(1, (3, 3))
    with pytest.raises(ValueError, match="mask_grid"):
        model.encoder.stage_keep(wrong, (8, 8))
    with pytest.raises(TypeError, match="unknown option"):
        maezoo.create_model("convmae_small", embed_dim=3)


def test_recipe_runs_end_to_end_on_small_data(tmp_path):
    from maezoo.cli import main
    from maezoo.results import read_results

    overrides = [
        "data.name=digits", "data.args={image_size: 16}", "data.label=sklearn-digits", "model.args.in_chans=1",
        "model.args.img_size=16", "model.args.embed_dims=[8,16,32]", "model.args.depths=[1,1,1]",
        "model.args.num_heads=2", "model.args.decoder_dim=16", "model.args.decoder_depth=1",
        "model.args.decoder_heads=2", "trainer.max_steps=4", "trainer.batch_size=32", "trainer.warmup_steps=1",
        "trainer.threads=1", "trainer.num_workers=0", "eval.num_workers=0", "linprobe.epochs=2", "finetune.epochs=1",
        "finetune.labels_per_class=2", "knn.train_subset=200", "knn.test_subset=100", "linprobe.train_subset=200",
        "linprobe.test_subset=100", "finetune.test_subset=100", "visualize=2", "eval.compare_random_init=false",
    ]
    run = tmp_path / "run"
    assert main(["run", "image/convmae_cifar10", *overrides, "--run-dir", str(run)]) == 0
    _, results = read_results(run / "results.json")
    got = {(r.protocol, r.model) for r in results if r.init == "pretrained"}
    assert {("knn", "convmae"), ("linprobe", "convmae"), ("finetune", "convmae")} <= got
    assert (run / "reconstructions.png").is_file()
