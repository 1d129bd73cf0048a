"""The M3AE figure: caption strings (hidden pieces bracketed, ``##`` joined), the panels agree with one seeded mask
and the text logits' argmax, the image panels paste the input at visible patches and the inverted prediction at
hidden ones, and the figure is written for an image+text and an image-only model."""

from __future__ import annotations

import pytest
import torch

import maezoo
from maezoo.multimodal.visualize import caption_strings, join_pieces, predict_pairs

SENTENCES = ["a photo of a dog.", "a photo of the cat.", "a blurry photo of a ship.", "dogs and cats and ships.",
             "a small image of a puppy, a kind of dog.", "the truck is on the road."] * 3
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


class Pairs:
    """A tiny paired dataset: random images, captions encoded with the trained vocabulary (no collate_fn)."""

    def __init__(self, vocab, vocab_file, n: int = 4) -> None:
        g = torch.Generator().manual_seed(1)
        self.images = torch.randn(n, 3, 8, 8, generator=g)
        self.ids = [torch.tensor(t) for t in vocab.encode(SENTENCES[:n], 16)[0]]
        self.mean, self.std, self.model_kwargs = MEAN, STD, {"vocab_file": str(vocab_file)}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"image": self.images[i], "text": self.ids[i]}, -1


@pytest.fixture(scope="module")
def vocab_and_file(tmp_path_factory):
    vocab = maezoo.registry.get("vocab", "wordpiece").train(SENTENCES, vocab_size=80, min_frequency=1)
    return vocab, vocab.save(tmp_path_factory.mktemp("vocab") / "tokenizer.json")


def tiny_m3ae(vocab_file=None, **kw):
    args = dict(maezoo.get("model", "m3ae").smoke_kwargs)
    if vocab_file is not None:
        args.pop("vocab_size")
        args["vocab_file"] = str(vocab_file)
    torch.manual_seed(0)
    return maezoo.create_model("m3ae", **{**args, **kw})


def test_join_pieces_and_caption_strings():
    pieces = ["a", "photo", "of", "dog", "##s", "."]
    assert join_pieces(pieces) == "a photo of dogs ."
    assert join_pieces(pieces, {1, 4}) == "a [photo] of dog[s] ."
    masked, filled = caption_strings(pieces, {1: "cat", 4: "##gy", 5: "##!"})
    assert masked == "a [photo] of dog[s] [.]"
    assert filled == "a [cat] of dog[gy] [##!]"  # words split as in the caption; a misplaced ## piece keeps ##
    assert join_pieces(["a", "dog", "cat"], {2}, joins=[False, False, True]) == "a dog[cat]"
    assert caption_strings(pieces, {}) == ("a photo of dogs .", "a photo of dogs .")
    with pytest.raises(ValueError, match="outside the caption"):
        caption_strings(pieces, {6: "x"})


def test_panels_follow_one_mask_and_the_argmax(vocab_and_file):
    vocab, vfile = vocab_and_file
    model = tiny_m3ae(vfile).train()
    ds = Pairs(vocab, vfile)
    from maezoo.multimodal.visualize import batch_of

    x = batch_of(model, ds, 4)
    fig = predict_pairs(model, x, vocab, MEAN, STD, torch.Generator().manual_seed(3))
    assert model.training  # restored

    model.eval()
    masks = model.sample_mask(x, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x, mask=masks)
    for name in ("image", "text"):
        assert torch.equal(fig.masks[name].mask, masks[name].mask)

    top = out.pred["text"].argmax(-1)
    valid = masks["text"].masked_valid
    pad, sep = model.tokenizer.parts["text"].pad_id, model.tokenizer.parts["text"].sep_id
    for b, row in enumerate(fig.captions):
        body = [v for v in x["text"][b, 1:].tolist() if v not in (pad, sep)]
        assert row.pieces == vocab.pieces(body)
        want = {int(p): vocab.pieces([int(t)])[0] for p, t, v in zip(masks["text"].ids_masked[b], top[b], valid[b])
                if v}
        assert row.predicted == want and want  # every caption hides at least one piece at 75%
        assert (row.masked, row.filled) == caption_strings(row.pieces, want)
        assert row.masked.count("[") == len(want)

    # image: visible patches are the input, hidden ones the prediction mapped back through norm_pix's inverse
    tok = model.tokenizer.parts["image"]
    patches = tok.patchify(x["image"])
    m = masks["image"]
    pred = out.pred["image"]
    ref = patches.clone()
    for b in range(patches.shape[0]):
        orig = patches[b, m.ids_masked[b]]
        mu, sd = orig.mean(-1, keepdim=True), (orig.var(-1, keepdim=True) + 1e-6).sqrt()
        ref[b, m.ids_masked[b]] = pred[b] * sd + mu
    to_px = lambda p: (tok.unpatchify(p, out.grid["image"]) * torch.tensor(STD).view(1, 3, 1, 1)  # noqa: E731
                       + torch.tensor(MEAN).view(1, 3, 1, 1)).clamp(0, 1)
    hidden_px = tok.unpatchify(m.mask.unsqueeze(-1).expand_as(patches).float(), out.grid["image"]).bool()
    assert torch.allclose(fig.images[:, 1], to_px(ref), atol=1e-5)
    assert torch.allclose(fig.images[:, 2], to_px(patches), atol=1e-6)
    assert bool((fig.images[:, 0][hidden_px] == 0.5).all())
    assert torch.equal(fig.images[:, 0][~hidden_px], fig.images[:, 2][~hidden_px])


def test_figure_written_for_image_text_and_image_only(vocab_and_file, tmp_path):
    vocab, vfile = vocab_and_file
    viz = maezoo.get("visualizer", "image+text")
    ds = Pairs(vocab, vfile, n=3)

    path = viz(tiny_m3ae(vfile), ds, tmp_path / "pairs" / viz.filename, num=3, seed=0)
    assert path.is_file() and path.stat().st_size > 1000
    text = (tmp_path / "pairs" / "caption_predictions.txt").read_text()
    assert text.count("\n-> ") == 3 and "[" in text

    # a model without its own vocabulary decodes with the dataset's vocab_file
    path = viz(tiny_m3ae(vocab_size=vocab.vocab_size), ds, tmp_path / "fallback.png", num=2)
    assert path.is_file()

    path = viz(tiny_m3ae(modalities=["image"]), ds, tmp_path / "image_only" / "fig.png", num=2, seed=0)
    assert path.is_file() and not (tmp_path / "image_only" / "caption_predictions.txt").exists()


def test_non_multimodal_model_is_refused():
    with pytest.raises(ValueError, match="several-modality model"):
        predict_pairs(torch.nn.Linear(2, 2), {"image": torch.zeros(1, 3, 8, 8)})
