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
