"""Several modalities in one encoder (maezoo/core/multimodal.py, maezoo/core/modal_masking.py)."""

import pytest
import torch

import maezoo
from maezoo.core.losses import MaskedCrossEntropy
from maezoo.core.masking import gather_tokens
from maezoo.core.modal_masking import DirichletBudgetMasking, ModalGrid, PerModalityMasking
from maezoo.core.multimodal import gather_shown

SMOKE = maezoo.get("model", "multimae").smoke_kwargs


def _model(**over):
    torch.manual_seed(0)
    return maezoo.create_model("multimae", **{**SMOKE, **over})


def _text_batch(b=6, length=12, vocab=64, seed=0):
    """``[CLS] ids [SEP] [PAD]...`` rows of different lengths (ids 5.., special ids 0-4)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, vocab, (b, length), generator=g)
    for i in range(b):
        n = 3 + (i * 3) % (length - 3)  # real length incl. [CLS] and [SEP]
        x[i, n - 1], x[i, n:] = 3, 0
    x[:, 0] = 2
    return x


def _batch(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(b, 1, 8, 8, generator=g), "text": _text_batch(b, seed=seed)}


def test_per_modality_ratios_hide_each_modality_by_its_own_ratio():
    m = _model(masking_args={"ratios": {"image": 0.75, "text": 0.5}})
    x = _batch()
    out = m(x, generator=torch.Generator().manual_seed(1))
    assert out.mask["image"].mask.sum(1).tolist() == [3] * 6  # 4 patches, floor(0.75 * 4)
    text = x["text"][:, 1:]
    real = (text != 0) & (text != 3)  # maskable: not padding, not [SEP]
    hidden = out.mask["text"].mask
    assert not (hidden & ~real).any(), "padding and [SEP] are never hidden"
    expected = torch.clamp(torch.floor(real.sum(1) * 0.5 + 0.5), min=1).long()
    assert torch.equal(hidden.sum(1), expected)


def test_budget_total_per_sample_equals_the_budget():
    x = _batch(b=32)
    strat = DirichletBudgetMasking(num_visible=6, alpha=1.0)
    pad = x["text"][:, 1:] == 0
    fixed = x["text"][:, 1:] == 3
    grids = {"image": ModalGrid((2, 2)), "text": ModalGrid((11,), pad, fixed)}
    masks = strat(32, grids, generator=torch.Generator().manual_seed(0))
    shown_img = (~masks["image"].mask).sum(1)
    shown_txt = (~masks["text"].mask & ~pad & ~fixed).sum(1)  # [SEP] is shown outside the budget
    capacity = 4 + (~pad & ~fixed).sum(1)
    assert torch.equal(shown_img + shown_txt, torch.minimum(capacity, torch.full_like(capacity, 6)))
    assert not (masks["text"].mask & (pad | fixed)).any()
    assert (masks["image"].masked_valid.sum(1) == masks["image"].mask.sum(1)).all()


def test_budget_with_subsets_shows_at_least_one_modality_and_keeps_the_total():
    strat = DirichletBudgetMasking(num_visible=10, alpha=0.5, sample_subsets=True)
    grids = {"a": ModalGrid((16,)), "b": ModalGrid((16,)), "c": ModalGrid((16,))}
    masks = strat(500, grids, generator=torch.Generator().manual_seed(0))
    shown = torch.stack([(~masks[n].mask).sum(1) for n in grids], 1)
    assert (shown.sum(1) == 10).all()
    assert ((shown == 0).sum(1) >= 1).float().mean() > 0.3  # subsets leave modalities out


def test_dirichlet_split_mean_matches_alpha():
    strat = DirichletBudgetMasking(num_visible=1000, alpha={"image": 1.0, "text": 3.0})
    share = strat.split(20000, ["image", "text"], torch.Generator().manual_seed(0), "cpu")
    assert torch.allclose(share.sum(1), torch.ones(20000))
    assert share.mean(0).tolist() == pytest.approx([0.25, 0.75], abs=0.01)
    grids = {"image": ModalGrid((1000,)), "text": ModalGrid((1000,))}
    masks = strat(4000, grids, generator=torch.Generator().manual_seed(1))
    frac = (~masks["image"].mask).sum(1).float().mean() / 1000
    assert float(frac) == pytest.approx(0.25, abs=0.01)


def test_each_modality_loss_scores_only_its_own_hidden_tokens():
    m = _model()
    x = _batch()
    out = m(x, generator=torch.Generator().manual_seed(2))
    # text: cross-entropy over the hidden real tokens only, recomputed by hand
    w = out.weight["text"]
    ids = out.mask["text"].ids_masked
    assert torch.equal(out.target["text"], gather_tokens(x["text"][:, 1:], ids))
    assert (gather_tokens(x["text"][:, 1:], ids)[w > 0] > 4).all(), "scored ids are real pieces, never specials"
    by_hand = MaskedCrossEntropy()(out.pred["text"], out.target["text"], w)
    assert torch.allclose(out.losses["text"], by_hand)
    # the image loss reaches no parameter of the text head, and the text loss none of the image head
    grads = torch.autograd.grad(out.losses["image"], [m.decoder.heads["text"].weight, m.decoder.heads["image"].weight],
                                allow_unused=True)
    assert grads[0] is None or not grads[0].any()
    assert grads[1].abs().sum() > 0
    assert torch.allclose(out.loss, out.losses["image"] + 0.5 * out.losses["text"])


def test_hidden_tokens_do_not_reach_the_encoder():
    m = _model().eval()
    x = _batch()
    mask = m.sample_mask(x, generator=torch.Generator().manual_seed(3))
    out = m(x, mask=mask)
    y = {k: v.clone() for k, v in x.items()}
    hidden = mask["image"].mask.view(6, 2, 2).repeat_interleave(4, 1).repeat_interleave(4, 2)
    y["image"][hidden.unsqueeze(1)] = 100.0  # change only hidden patches
    again = m(y, mask=mask)
    assert torch.allclose(out.pred["image"], again.pred["image"], atol=1e-6)
    assert not torch.allclose(out.target["image"], again.target["image"])


@pytest.mark.parametrize("decoder", ["shared", "per_modality"])
def test_two_modalities_that_are_not_text(decoder):
    mods = {"image": {"tokenizer": "image", "args": {"img_size": 8, "patch_size": 4, "in_chans": 1}},
            "audio": {"tokenizer": "audio", "args": {"patch_size": 4, "mel_bins": 8, "target_frames": 8}}}
    torch.manual_seed(0)
    m = maezoo.create_model("multimae", modalities=mods, embed_dim=16, depth=1, num_heads=2, decoder=decoder,
                            decoder_dim=8, decoder_depth=1, decoder_heads=2, masking="dirichlet_budget",
                            masking_args={"num_visible": 3, "alpha": 1.0})
    x = m.tokenizer.example_input(4)
    out = m(x, generator=torch.Generator().manual_seed(0))
    assert set(out.losses) == {"image", "audio"}
    shown = sum((~out.mask[n].mask).sum(1) for n in mods)
    assert (shown == 3).all()
    out.loss.backward()
    assert m.tokenizer.type_embed["audio"].grad.abs().sum() > 0
    assert m.encode(x).shape == (4, 16) and m.encode({"audio": x["audio"]}).shape == (4, 16)


def test_encode_takes_any_subset_and_averages_real_tokens():
    m = _model().eval()
    x = _batch()
    both, img = m.encode(x), m.encode({"image": x["image"]})
    assert both.shape == img.shape == (6, 16) and not torch.allclose(both, img)
    short = {"text": x["text"][:1, :3]}  # row 0 has 3 real ids; the padded version must give the same features
    assert torch.allclose(m.encode(short), m.encode({"text": x["text"][:1]}), atol=1e-6)


def test_bad_batches_get_clear_errors():
    m = _model()
    x = _batch()
    with pytest.raises(ValueError, match=r"built with \['image', 'text'\]: \['text'\] missing"):
        m({"image": x["image"]})
    with pytest.raises(ValueError, match="takes a dict of modalities"):
        m(x["image"])
    with pytest.raises(ValueError, match="same number of samples"):
        m({"image": x["image"][:2], "text": x["text"]})
    with pytest.raises(ValueError, match="exceed the model's 16 positions"):
        m({"image": x["image"], "text": torch.cat([x["text"], x["text"]], 1)})
    with pytest.raises(ValueError, match="draws one grid.s mask"):
        maezoo.create_model("multimae", **{**SMOKE, "masking": "random", "masking_args": {"ratio": 0.5}})
    with pytest.raises(ValueError, match="unknown key"):
        maezoo.create_model("multimae", **{**SMOKE, "modalities": {"image": {"tokenizer": "image", "wieght": 1}}})
    assert m({**x, "depth": torch.zeros(6)}).loss > 0  # keys the model was not built with are ignored


def test_gather_shown_bound_covers_every_sample():
    shown = torch.tensor([[True, False, True, True], [False, False, True, False]])
    tokens = torch.arange(8.0).view(2, 4, 1)
    vis, ids, valid = gather_shown(tokens, shown, bound=4)
    assert vis.shape == (2, 3, 1) and ids.tolist() == [[0, 2, 3], [2, 0, 1]]
    assert valid.tolist() == [[True, True, True], [True, False, False]]
    strat = PerModalityMasking(ratios={"image": 0.75})
    grids = {"image": ModalGrid((4, 4)), "text": ModalGrid((10,), torch.zeros(2, 10, dtype=torch.bool))}
    assert strat.max_shown(grids) == 4 + 10
    assert DirichletBudgetMasking(num_visible=5).max_shown(grids) == 5


def test_budget_masking_validates_its_arguments():
    with pytest.raises(ValueError, match="num_visible"):
        DirichletBudgetMasking(num_visible=0)
    with pytest.raises(ValueError, match="alpha must be positive"):
        DirichletBudgetMasking(alpha={"image": -1.0})
    with pytest.raises(ValueError, match="also has"):
        DirichletBudgetMasking(alpha={"image": 1.0}).alphas(["image", "text"])


def test_hide_all_hides_a_whole_modality_in_a_share_of_the_samples():
    x = _batch(b=400)
    pad, fixed = x["text"][:, 1:] == 0, x["text"][:, 1:] == 3
    grids = {"image": ModalGrid((2, 2)), "text": ModalGrid((11,), pad, fixed)}
    strat = PerModalityMasking(ratios={"image": 0.75, "text": 0.5}, hide_all={"text": 0.3})
    masks = strat(400, grids, generator=torch.Generator().manual_seed(0))
    real = ~pad & ~fixed
    long = real.sum(1) >= 4  # captions the ratio alone (0.5) never hides whole
    whole = (masks["text"].mask == real).all(1)[long]
    assert 0.22 < whole.float().mean() < 0.38  # about 30% of the captions hidden whole
    assert not (masks["text"].mask & (pad | fixed)).any()
    assert (masks["image"].mask.sum(1) == 3).all()  # the image keeps its ratio
    assert torch.equal(masks["text"].masked_valid.sum(1), masks["text"].mask.sum(1))
    with pytest.raises(ValueError, match="hide_all names at most one modality"):
        PerModalityMasking(hide_all={"image": 0.5, "text": 0.5})
