"""model.args are typed and range-checked when the recipe loads, for every registered model; a dataset's model
arguments are read without building it; published figures belong to their data source."""

from __future__ import annotations

import inspect
import types
import typing

import pytest

import maezoo
from maezoo.config import ConfigError, Range, _metadata
from maezoo.systems.pretrain import PretrainSystem, RecipeConfig, dataset_model_kwargs

#: numeric builder arguments with no natural range
UNBOUNDED = {"norm_mean"}


def _recipe(model: str, args: dict) -> dict:
    return {"model": {"name": model, "args": args}, "data": {"name": "digits"}, "stages": ["pretrain"]}


def _numeric(tp) -> type | None:
    """``int``/``float`` when the annotation is one (possibly ``Annotated``, possibly ``| None``)."""
    if typing.get_origin(tp) is typing.Annotated:
        return _numeric(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [k for k in (_numeric(a) for a in typing.get_args(tp)) if k is not None]
        return found[0] if found else None
    return tp if tp in (int, float) else None


def _ranged_args():
    for name in maezoo.list_models():
        sig = inspect.signature(maezoo.get("model", name), eval_str=True)
        for p in sig.parameters.values():
            ranges = [m for m in _metadata(p.annotation) if isinstance(m, Range)]
            if ranges:
                yield pytest.param(name, p.name, ranges[0], _numeric(p.annotation), id=f"{name}.{p.name}")


def _outside(r: Range, kind: type) -> list:
    step = 1 if kind is int else 0.5
    low = [r.ge - step] if r.ge is not None else [r.gt - (step if kind is int else 0)] if r.gt is not None else []
    high = [r.le + step] if r.le is not None else [r.lt + (step if kind is int else 0.2)] if r.lt is not None else []
    return [kind(v) for v in low + high]


@pytest.mark.parametrize(("model", "arg", "rng", "kind"), list(_ranged_args()))
def test_every_ranged_model_argument_is_refused_out_of_range_naming_it(model, arg, rng, kind):
    values = _outside(rng, kind)
    assert values, f"{model}.{arg}: a range with no bound"
    for value in values:
        with pytest.raises(ConfigError) as info:
            PretrainSystem.load_config(_recipe(model, {arg: value}))
        msg = str(info.value)
        assert f"model.args.{arg}={value!r} is out of range {rng.interval()}" in msg, msg


def test_every_numeric_argument_of_a_built_in_model_declares_its_range():
    missing = []
    for name in maezoo.list_models():
        builder = maezoo.get("model", name)
        if not builder.__module__.startswith("maezoo."):
            continue
        for p in inspect.signature(builder, eval_str=True).parameters.values():
            if _numeric(p.annotation) and not any(isinstance(m, Range) for m in _metadata(p.annotation)) \
                    and p.name not in UNBOUNDED:
                missing.append(f"{name}.{p.name}")
    assert not missing, f"numeric model arguments without a declared range: {missing}"


def test_in_range_values_and_the_recipes_own_args_pass():
    cfg = PretrainSystem.load_config(_recipe("videomae_vit_small", {"mask_ratio": 0.9, "num_heads": 6}))
    assert isinstance(cfg, RecipeConfig)
    with pytest.raises(ConfigError, match=r"model.args.mask_ratio must be a number, got 'most'"):
        PretrainSystem.load_config(_recipe("mae_vit", {"mask_ratio": "most"}))
    with pytest.raises(ConfigError, match=r"model.args.decoder_heads=5 must divide model.args.decoder_dim=384"):
        PretrainSystem.load_config(_recipe("videomae_vit_base", {"decoder_heads": 5}))  # the preset's width
    with pytest.raises(ConfigError, match=r"unknown key\(s\) model.args.mask_ratoi; valid keys: .*mask_ratio"):
        PretrainSystem.load_config(_recipe("tsformer", {"mask_ratoi": 0.5}))


def test_presets_show_their_values_as_defaults():
    sig = inspect.signature(maezoo.get("model", "videomae_vit_base"))
    assert sig.parameters["embed_dim"].default == 768 and sig.parameters["decoder_dim"].default == 384
    assert inspect.signature(maezoo.get("model", "tsformer")).parameters["mask_mode"].default == "drop"
    sources = maezoo.registry.sources("model")
    assert sources["videomae_vit_base"] == "maezoo.video.models:videomae_vit_base"
    assert sources["mae_vit_base_patch16"] == "maezoo.image.models:mae_vit_base_patch16"
    assert set(sources) == set(maezoo.list_models())


def test_dataset_model_kwargs_come_from_the_arguments_without_building(tmp_path, monkeypatch):
    import numpy as np

    path = tmp_path / "s.csv"
    rows = "\n".join(f"{i},{np.sin(i)},{np.cos(i)},{i % 7}" for i in range(400))
    path.write_text("date,a,b,c\n" + rows + "\n")
    args = {"path": str(path), "context": 32, "horizon": 8, "timestamp": "date"}
    built = maezoo.build("dataset", "series", split="train", transform="pretrain", **args).model_kwargs
    calls = []
    monkeypatch.setattr("maezoo.systems.pretrain.build", lambda *a, **k: calls.append(a))
    assert dataset_model_kwargs("series", args) == built == {"n_vars": 3}
    assert dataset_model_kwargs("moving_digits", {"img_size": 24}) == {
        "in_chans": 1, "num_frames": 16, "img_size": 24, "pixel_mean": [0.081], "pixel_std": [0.207]}
    assert dataset_model_kwargs("digits", {}) == {}
    assert not calls, "a built-in dataset was built to read its model arguments"


def test_published_figures_belong_to_their_data_source():
    from maezoo.systems.runner import load_recipe

    def published(overrides):
        (v,) = load_recipe("timeseries/patchtst_etth1", overrides).variants
        return PretrainSystem._published(v.cfg, "timeseries")

    assert {r.metric for r in published([])} >= {"mse@96", "mae@720"}
    assert published(["data.args.path=my/other.csv"]) == []
