"""Stages on some modalities (``linprobe@image``) and recipe ablations, validated when a recipe loads."""

import pytest

from maezoo.config import ConfigError
from maezoo.systems.pretrain import PretrainSystem
from maezoo.systems.stages import check_stages, result_protocol, split_stage


def test_split_and_result_names():
    assert split_stage("linprobe@image+text") == ("linprobe", ("image", "text"))
    assert split_stage("knn") == ("knn", None)
    assert result_protocol("scratch@image") == "finetune@image" and result_protocol("linprobe") == "linprobe"


def test_bad_stages_are_named():
    with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['linprob@image'\]"):
        check_stages(["linprob@image"])
    with pytest.raises(ConfigError, match="name modalities after @"):
        check_stages(["linprobe@"])
    with pytest.raises(ConfigError, match="unknown stage"):
        check_stages(["pretrain@image"])


def test_ablations_are_typed_and_their_model_args_checked():
    raw = {"model": {"name": "m3ae_cifar", "args": {}}, "data": {"name": "cifar10_captions"},
           "stages": ["pretrain", "linprobe@image"],
           "ablations": {"image_only": {"model": {"modalities": ["image"]}, "stages": ["linprobe@image"]}}}
    cfg = PretrainSystem.load_config(raw)
    assert cfg.ablations["image_only"].model == {"modalities": ["image"]}
    bad = {**raw, "ablations": {"x": {"model": {"modalities": ["video"]}}}}
    with pytest.raises(ConfigError, match="ablations.x.model"):
        PretrainSystem.load_config(bad)
    with pytest.raises(ConfigError, match="unknown key"):
        PretrainSystem.load_config({**raw, "ablations": {"x": {"modle": {}}}})


def test_a_text_model_is_not_evaluated_on_other_word_pieces(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import maezoo
    from maezoo.systems.pretrain import DataSpec, check_vocabulary, dataset_model_kwargs

    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    corpus = tmp_path / "a.txt"
    corpus.write_text("\n".join(f"the cat sat on mat number {i} today" for i in range(50)))
    data = DataSpec(name="text_lines", args={"path": str(corpus), "vocab_size": 80})
    vocab_file = dataset_model_kwargs(data.name, data.args)["vocab_file"]
    same = SimpleNamespace(tokenizer=SimpleNamespace(vocab_json=open(vocab_file).read()))
    check_vocabulary(same, data, tmp_path)  # the data's own vocabulary: fine
    other = maezoo.get("vocab", "wordpiece").train(["dogs run far away quickly"] * 20, vocab_size=60)
    with pytest.raises(ConfigError, match=r"Fix: give the dataset the model's vocabulary \(data.args.tokenizer="):
        check_vocabulary(SimpleNamespace(tokenizer=SimpleNamespace(vocab_json=other.to_json())), data, tmp_path)
    other_model = SimpleNamespace(tokenizer=SimpleNamespace(vocab_json=other.to_json()))
    check_vocabulary(other_model, data, tmp_path, ["linprobe@image", "finetune@image"])  # no stage reads text
    for stages in (["linprobe@image", "linprobe@text"], ["linprobe@image", "retrieval"]):
        with pytest.raises(ConfigError, match="trained with others"):
            check_vocabulary(other_model, data, tmp_path, stages)
