"""Registry: clear errors, no silent double registration, and every registered model builds and trains a step."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch

import maezoo
from maezoo import registry
from maezoo.registry import RegistryError


@pytest.fixture
def scratch_names():
    """Names registered by a test, removed afterwards so the global registry stays clean."""
    added: list[tuple[str, str]] = []
    yield added
    for kind, name in added:
        registry._REGISTRY[kind].pop(name, None)


def test_unknown_name_lists_known_names():
    with pytest.raises(RegistryError) as info:
        maezoo.get("masking", "randomm")
    msg = str(info.value)
    for known in ("random", "block", "tube", "time_frequency"):
        assert known in msg
    assert "Did you mean 'random'" in msg
    assert "maezoo.maskings" in msg  # where plugins register
    assert isinstance(info.value, KeyError)  # catchable as KeyError too
    with pytest.raises(RegistryError, match="image"):
        maezoo.create("tokenizer", "no_such_tokenizer")
    with pytest.raises(RegistryError, match="mae_vit_base_patch16"):
        maezoo.create_model("mae_vit_gigantic")


def test_unknown_kind():
    with pytest.raises(RegistryError, match="known kinds: tokenizer"):
        maezoo.get("tokeniser", "image")
    with pytest.raises(RegistryError):
        maezoo.register("nonsense", "x", object())


def test_double_registration_needs_override(scratch_names):
    class A:
        pass

    class B:
        pass

    scratch_names.append(("loss", "_test_dup"))
    maezoo.register("loss", "_test_dup", A)
    maezoo.register("loss", "_test_dup", A)  # same object again (a re-import) is fine
    with pytest.raises(RegistryError, match="already registered.*override=True"):
        maezoo.register("loss", "_test_dup", B)
    assert maezoo.get("loss", "_test_dup") is A
    maezoo.register("loss", "_test_dup", B, override=True)
    assert maezoo.get("loss", "_test_dup") is B

    # decorator form
    with pytest.raises(RegistryError):

        @maezoo.register("loss", "mse")
        class NotMSE:
            pass

    assert maezoo.get("loss", "mse").__name__ == "MaskedMSE"


def test_build_rejects_unknown_options():
    with pytest.raises(TypeError, match=r"unknown option\(s\) ratoi; valid options: ratio"):
        maezoo.create("masking", "random", ratoi=0.5)
    with pytest.raises(TypeError, match="mask_ratoi"):
        maezoo.create_model("mae_vit_tiny_patch16", mask_ratoi=0.5)
    assert maezoo.create("masking", "random", ratio=0.5).ratio == 0.5


def test_names_sorted_and_components():
    comps = maezoo.list_components()
    assert set(comps) == set(registry.KINDS)
    for kind, names in comps.items():
        assert names == sorted(names), kind
    assert {"mse", "l1", "sce", "ce"} <= set(comps["loss"])
    assert {"raw", "norm"} <= set(comps["target"])
    assert "vit" in comps["encoder"] and "transformer" in comps["decoder"]


def test_list_tokenizers_in_fresh_interpreter():
    out = subprocess.run(
        [sys.executable, "-c", "import maezoo; print(maezoo.list_tokenizers())"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    listed = eval(out.stdout.strip().splitlines()[-1])
    assert isinstance(listed, list) and "image" in listed


# -- every registered model, automatically -------------------------------------------------------------------

_SLOW_WORDS = ("large", "huge", "giant", "gigantic")


def _model_params():
    for name in maezoo.list_models():
        marks = [pytest.mark.slow] if any(w in name for w in _SLOW_WORDS) else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_model_params()))
def test_every_registered_model_builds_and_trains_one_step(name):
    """Each builder builds with its defaults (plus an optional ``smoke_kwargs`` dict attribute for required
    arguments) and runs forward/backward on its tokenizer's ``example_input``."""
    builder = maezoo.get("model", name)
    kwargs = dict(getattr(builder, "smoke_kwargs", {}))
    required = [
        p.name for p in inspect.signature(builder).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs
    ]
    if required:
        pytest.fail(f"model {name!r} needs {required}; give defaults or set `{name}.smoke_kwargs = {{...}}`")
    model = maezoo.create_model(name, **kwargs)
    assert isinstance(model, torch.nn.Module)
    try:
        x = model.tokenizer.example_input(2)
    except NotImplementedError:
        pytest.fail(f"{type(model.tokenizer).__name__} has no example_input(); implement it so {name!r} is tested")
    model.train()
    torch.manual_seed(0)
    out = model(x, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    again = model(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.loss, again.loss), f"{name}: the same generator must give the same mask and loss"
    assert out.loss.item() > 0, f"{name}: a freshly built model reconstructs hidden tokens perfectly?"
    if isinstance(out.pred, dict):  # several modalities (maezoo/core/multimodal.py): one target per modality
        for mod, pred in out.pred.items():
            _check_pred(pred, out.target[mod], model.tokenizer.parts[mod].target_dim)
        assert sum(int(m.mask.sum()) for m in out.mask.values()) > 0, f"{name}: the example input hides no token"
    else:
        _check_pred(out.pred, out.target, model.tokenizer.target_dim)
        assert int(out.mask.mask.sum()) > 0, f"{name}: the example input hides no token"
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no gradient reached the parameters"
    for p in model.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


def _check_pred(pred, target, target_dim):
    if target.is_floating_point():
        assert pred.shape == target.shape and pred.shape[-1] == target_dim
    else:  # discrete targets (token ids): logits over the target_dim classes for each target row
        assert pred.shape == (*target.shape, target_dim)


def test_image_builders_have_the_paper_sizes():
    expected = {"tiny_patch16": (192, 12), "small_patch16": (384, 12), "base_patch16": (768, 12)}
    for suffix, (dim, depth) in expected.items():
        with torch.device("meta"):
            m = maezoo.create_model(f"mae_vit_{suffix}")
        assert m.encoder.dim == dim and m.encoder.depth == depth
        assert m.decoder.embed.out_features == 512 and len(m.decoder.blocks) == 8
        assert m.masking.ratio == 0.75 and m.target_name == "norm" and m.mask_mode == "drop"
