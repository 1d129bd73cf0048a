"""Parity of the Hugging Face ``BertForMaskedLM`` mapping against the peer built from its own config with random
weights: encoder hidden states, MLM logits and loss on the same ids and the same hidden positions (1e-5, fp32);
export back to a ``from_pretrained`` folder (with its vocabulary) and bit-identical round trips."""

from __future__ import annotations

import pytest
import torch
from hub_peers import BERT_PIECES, bert_ids, hf_bert, hf_bert_run, write_bert_vocab

import maezoo
from maezoo.hub import HubError, export, import_checkpoint, load_pretrained

transformers = pytest.importorskip("transformers")
TOL = 1e-5
LENGTHS = [20, 13, 7]


def compare(model, hf, x, seed: int = 3) -> tuple[float, float, float]:
    """(hidden states on real ids, MLM logits on the hidden pieces, loss) differences under one maezoo mask."""
    model.eval()
    with torch.no_grad():
        tok = model.tokenizer(x)
        ours = model.encoder(tok.tokens, tok.context)
        mask = model.sample_mask(x, torch.Generator().manual_seed(seed))
        out = model(x, mask=mask)
        feats, ref = hf_bert_run(hf, x, mask.mask, model.tokenizer.mask_id, model.tokenizer.pad_id)
    real = x != model.tokenizer.pad_id
    feat = float((ours - feats)[real].abs().max())
    valid = mask.masked_valid if mask.masked_valid is not None else torch.ones_like(mask.ids_masked, dtype=torch.bool)
    logits = torch.gather(ref.logits[:, 1:], 1, mask.ids_masked[..., None].expand(-1, -1, ref.logits.shape[-1]))
    return feat, float((out.pred - logits)[valid].abs().max()), abs(float(out.loss) - float(ref.loss))


@pytest.fixture
def hf_folder(tmp_path):
    hf = hf_bert()
    hf.save_pretrained(tmp_path / "hf")
    write_bert_vocab(tmp_path / "hf")
    return hf, tmp_path / "hf"


def test_bert_for_masked_lm_parity_and_round_trips(tmp_path, hf_folder):
    hf, folder = hf_folder
    imp = import_checkpoint(folder)
    assert imp.family == "hf_bert" and imp.layer_norm_eps is None  # BERT's 1e-12 is maezoo's own
    model, spec = load_pretrained(folder)
    assert spec["name"] == "bert" and spec["kwargs"]["vocab_file"].endswith("vocab.txt")
    assert model.tokenizer.mask_id == 4 and bool(model.tokenizer.continuation[BERT_PIECES.index("##a")])
    x = bert_ids(LENGTHS, 20)
    assert max(compare(model, hf, x)) < TOL
    export(model, tmp_path / "out", to="hf")  # a from_pretrained folder with the vocabulary
    back = transformers.BertForMaskedLM.from_pretrained(tmp_path / "out").eval()
    assert max(compare(model, back, x)) < TOL
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert fast.convert_tokens_to_ids(["[MASK]", "##a", "the"]) == [4, BERT_PIECES.index("##a"), BERT_PIECES.index("the")]
    ref = model.state_dict()
    for to in ("hf", "maezoo"):
        export(model, tmp_path / f"rt_{to}", to=to, spec=spec)
        again, _ = load_pretrained(tmp_path / f"rt_{to}") if to == "hf" else \
            (maezoo.engine.checkpoint.load_model(tmp_path / f"rt_{to}")[0], None)
        assert again.state_dict().keys() == ref.keys()
        assert all(torch.equal(v, ref[k]) for k, v in again.state_dict().items()), to


def test_maezoo_bert_exports_with_its_mask_token(tmp_path):
    """maezoo keeps the hidden token apart from the [MASK] row; the export writes it there, so features and every
    logit but the [MASK] column are the same in transformers."""
    torch.manual_seed(0)
    model = maezoo.create_model("bert", vocab_size=64, max_positions=40, embed_dim=32, depth=2, num_heads=4, mlp_dim=64,
                                dropout=0.0).eval()
    with torch.no_grad():
        model.mask_token.normal_()  # trained apart from word_embeddings[mask_id]
    export(model, tmp_path / "hf", to="hf")
    hf = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    x = bert_ids(LENGTHS, 20)
    feat, _, _ = compare(model, hf, x)
    assert feat < TOL
    with torch.no_grad():
        mask = model.sample_mask(x, torch.Generator().manual_seed(3))
        out = model(x, mask=mask)
        _, ref = hf_bert_run(hf, x, mask.mask, 4)
    logits = torch.gather(ref.logits[:, 1:], 1, mask.ids_masked[..., None].expand(-1, -1, 64))
    diff = (out.pred - logits)[mask.masked_valid].abs()
    assert float(diff[:, [c for c in range(64) if c != 4]].max()) < TOL and float(diff[:, 4].max()) > TOL


def test_bare_weights_without_vocabulary(tmp_path):
    hf = hf_bert()
    hf.save_pretrained(tmp_path / "hf")  # no vocab.txt: 64 pieces -> maezoo's trained layout, [MASK] = 4
    imp = import_checkpoint(tmp_path / "hf")
    assert any("no vocabulary file" in n for n in imp.notes)
    model, spec = load_pretrained(tmp_path / "hf")
    assert spec["kwargs"]["vocab_size"] == 64 and max(compare(model, hf, bert_ids(LENGTHS, 20))) < TOL


@pytest.mark.parametrize(("setting", "message"), [({"hidden_act": "gelu_new"}, "hidden_act='gelu_new'"),
                                                  ({"position_embedding_type": "relative_key"},
                                                   "position_embedding_type='relative_key'")])
def test_configurations_without_a_maezoo_counterpart_are_refused(tmp_path, setting, message):
    hf_bert(**setting).save_pretrained(tmp_path / "hf")
    with pytest.raises(HubError, match=rf"hf/model\.safetensors: a BERT with {message}.*corresponds to hidden_act='gelu'"):
        import_checkpoint(tmp_path / "hf")


def test_wrong_vocabulary_is_named(tmp_path):
    hf_bert().save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("".join(f"{p}\n" for p in BERT_PIECES[:40]))
    with pytest.raises(HubError, match=r"vocab\.txt: 40 pieces but the word embeddings have 64 rows"):
        load_pretrained(tmp_path / "hf")


def test_cli_convert_bert_in_and_out(tmp_path, hf_folder):
    from maezoo.cli import main

    _, folder = hf_folder
    assert main(["convert", str(folder), str(tmp_path / "mz"), "--to", "maezoo"]) == 0
    assert (tmp_path / "mz" / "tokenizer.json").is_file()  # the vocabulary travels with the weights
    assert main(["convert", str(tmp_path / "mz"), str(tmp_path / "back"), "--to", "hf"]) == 0
    first, back = load_pretrained(folder)[0].state_dict(), load_pretrained(tmp_path / "back")[0].state_dict()
    assert all(torch.equal(v, first[k]) for k, v in back.items())
