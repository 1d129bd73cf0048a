"""An out-of-tree plugin, pip-installed offline, registers a tokenizer through entry points only, and
trains one MAE step through the public API in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "maezoo-toyplugin"
version = "0.0.1"
requires-python = ">=3.9"

[project.entry-points."maezoo.tokenizers"]
toyseq = "maezoo_toyplugin:ToySeqTokenizer"
broken = "maezoo_toyplugin:DoesNotExist"

[project.entry-points."maezoo.maskings"]
toymasks = "maezoo_toyplugin"

[tool.setuptools]
py-modules = ["maezoo_toyplugin"]
"""

MODULE = '''
"""A sequence tokenizer living outside maezoo: [B, L, F] -> tokens of ``patch`` steps each, grid (L / patch,)."""
import torch
from torch import nn

from maezoo.core import RandomMasking, Tokenizer, Tokens, sincos_pos_embed
from maezoo.registry import register


class ToySeqTokenizer(Tokenizer):
    def __init__(self, embed_dim: int = 16, patch: int = 2, features: int = 3):
        super().__init__()
        self.embed_dim, self.patch, self.features = embed_dim, patch, features
        self.target_dim = patch * features
        self.proj = nn.Linear(self.target_dim, embed_dim)

    def validate(self, x):
        if x.dim() != 3 or x.shape[1] % self.patch or x.shape[2] != self.features:
            raise ValueError(f"toyseq expects [B, L, {self.features}] with L divisible by {self.patch}")

    def grid(self, x):
        return (x.shape[1] // self.patch,)

    def patchify(self, x):
        return x.reshape(x.shape[0], -1, self.target_dim)

    def unpatchify(self, patches, grid):
        return patches.reshape(patches.shape[0], grid[0] * self.patch, self.features)

    def forward(self, x):
        grid = self.grid(x)
        pos = sincos_pos_embed(self.embed_dim, grid)
        return Tokens(self.proj(self.patchify(x)) + pos, grid, {"pos_embed": pos})

    def example_input(self, batch_size=2):
        return torch.randn(batch_size, 4 * self.patch, self.features)


@register("masking", "toy_every_other")
class EveryOther(RandomMasking):
    grid_ndims = (1,)
'''

SCRIPT = r'''
import warnings

import torch

import maezoo
from maezoo.core import MaskedAutoencoder, TransformerDecoder, ViTEncoder

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    toks = maezoo.list_tokenizers()
assert "toyseq" in toks and "image" in toks, toks
assert "broken" not in toks, toks
assert any("broken" in str(w.message) and "failed to load" in str(w.message) for w in caught), [str(w.message) for w in caught]
assert maezoo.get("tokenizer", "toyseq").__module__ == "maezoo_toyplugin"
assert "toy_every_other" in maezoo.list_maskings()  # module entry point ran its @register

tok = maezoo.create("tokenizer", "toyseq", embed_dim=16, patch=2, features=3)
enc = ViTEncoder(16, 1, 2)
dec = TransformerDecoder(16, tok.target_dim, 8, 1, 2, num_prefix_tokens=enc.num_prefix_tokens)
masking = maezoo.create("masking", "toy_every_other", ratio=0.5)
for mode in ("drop", "replace"):
    model = MaskedAutoencoder(tok, enc, dec, masking, target="norm", mask_mode=mode)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 16, 3)
    out = model(x, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (4, 8, 6) and int(out.mask.mask.sum()) == 16
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    torch.testing.assert_close(out.loss, model.loss_fn(out.pred, out.target, out.mask.mask))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the step changed nothing"
    assert model.encode(x, pool="cls").shape == (4, 16)
print("PLUGIN_OK", out.loss.item())
'''


def _pip_install_offline(src: Path, root: Path) -> Path:
    """``pip install`` the package at ``src`` into ``root/site`` with no network and no build isolation."""
    site = root / "site"
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--no-cache-dir", "--target", str(site), str(src),
    ]
    env = {**os.environ, "PIP_NO_INPUT": "1", "PIP_CONFIG_FILE": os.devnull}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=root)
    assert res.returncode == 0, f"offline pip install of {src} failed:\n{res.stdout}\n{res.stderr}"
    return site


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "maezoo_toyplugin.py").write_text(textwrap.dedent(MODULE))
    site = _pip_install_offline(src, root)
    assert list(site.glob("maezoo_toyplugin-*.dist-info/entry_points.txt")), list(site.iterdir())
    return site


def test_plugin_tokenizer_through_public_api(plugin_site, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_site), os.environ.get("PYTHONPATH")]))}
    script = tmp_path / "use_plugin.py"
    script.write_text(SCRIPT)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, f"plugin use failed:\n{res.stdout}\n{res.stderr}"
    assert "PLUGIN_OK" in res.stdout


def test_plugin_absent_without_its_path():
    """Control: in this interpreter the plugin is not on the path, so the name is unknown, and the error
    says where plugins register."""
    import maezoo

    assert "toyseq" not in maezoo.list_tokenizers()
    with pytest.raises(maezoo.RegistryError, match="maezoo.tokenizers"):
        maezoo.create("tokenizer", "toyseq")


# -- the example plugin shipped in examples/maezoo-wave (docs/plugins.md) -------------------------------------

WAVE_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "maezoo-wave"

WAVE_SCRIPT = r'''
import torch
import yaml

import maezoo
import maezoo_wave
from maezoo.core import Mask, MAEOutput, MaskedAutoencoder
from maezoo.core.targets import norm_target

# every kind of entry point value: a class, factory functions, a module running @register
assert maezoo.get("tokenizer", "wave") is maezoo_wave.WaveTokenizer
assert maezoo.get("dataset", "wave_sines") is maezoo_wave.sine_waves
assert maezoo.get("model", "wave_mae_tiny") is maezoo_wave.wave_mae_tiny
assert "wave_span" in maezoo.list_maskings()

B, C, L, PATCH, D = 3, 2, 64, 8, 16
N, P, HIDE = L // PATCH, PATCH * C, 5
x = torch.randn(B, C, L)
# a fixed mask hiding HIDE tokens at different positions in each row
hidden = torch.zeros(B, N, dtype=torch.bool)
for b in range(B):
    hidden[b, torch.randperm(N, generator=torch.Generator().manual_seed(b))[:HIDE]] = True

for mode in ("drop", "replace"):
    torch.manual_seed(0)
    model = maezoo.create_model(
        "mae", tokenizer="wave", tokenizer_args={"patch": PATCH, "channels": C}, embed_dim=D, depth=1,
        num_heads=2, decoder_dim=8, decoder_depth=1, decoder_heads=2, mask_ratio=0.5, mask_mode=mode,
    )
    assert isinstance(model, MaskedAutoencoder) and isinstance(model.tokenizer, maezoo_wave.WaveTokenizer)
    assert model.tokenizer.embed_dim == D and model.tokenizer.target_dim == P  # embed_dim was passed through
    assert torch.equal(model.tokenizer.unpatchify(model.tokenizer.patchify(x), (N,)), x)
    mask = Mask.from_bool(hidden)
    out = model(x, mask=mask)
    assert isinstance(out, MAEOutput) and out.mask is mask and out.grid == (N,)
    assert out.pred.shape == (B, N, P) and out.target.shape == (B, N, P), (out.pred.shape, out.target.shape)
    assert out.mask.mask.shape == (B, N) and int(out.mask.mask.sum()) == B * HIDE and out.mask.num_visible == N - HIDE
    # the loss is MAE's: per-token MSE against the norm-pix target, averaged over the hidden tokens only
    target = norm_target(model.tokenizer.patchify(x))
    torch.testing.assert_close(out.target, target)
    manual = (out.pred - target).pow(2).mean(-1)[hidden].mean()
    torch.testing.assert_close(out.loss, manual)
    assert set(out.losses) == {"recon"}
    out.pred.retain_grad()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    out.loss.backward()
    assert bool((out.pred.grad[~hidden] == 0).all()) and bool((out.pred.grad[hidden] != 0).any())
    assert model.tokenizer.proj.weight.grad is not None and model.tokenizer.proj.weight.grad.abs().sum() > 0
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the step changed nothing"
    assert model.encode(x, pool="cls").shape == (B, D) and model.encode(x, pool="none").shape == (B, N, D)

# the plugin's module-registered masking and factory-registered model preset
model = maezoo.create_model("wave_mae_tiny", patch=8, mask_ratio=0.5)
out = model(model.tokenizer.example_input(2), generator=torch.Generator().manual_seed(0))
assert type(model.masking).__name__ == "SpanMasking" and out.pred.shape == (2, 4, 8)
rows = out.mask.mask.int()
assert rows.sum(1).tolist() == [2, 2]  # one contiguous (cyclic) span per row
assert all(int((r != r.roll(1)).sum()) == 2 for r in rows)

# mae_vit takes the plugin tokenizer by name too (img_size/patch_size/in_chans left at their defaults)
m = maezoo.create_model("mae_vit", tokenizer="wave", tokenizer_args={"patch": PATCH, "channels": C}, embed_dim=D,
                        depth=1, num_heads=2, decoder_dim=8, decoder_depth=1, decoder_heads=2)
assert m(x).pred.shape == (B, N, P)

# clear errors
try:
    maezoo.create_model("mae", tokenizer="wave", tokenizer_args={"patchh": 4})
except TypeError as e:
    assert "patchh" in str(e) and "patch" in str(e).split("valid options:")[1], e
else:
    raise AssertionError("unknown tokenizer option accepted")

# the packaged recipe's model and data sections build and run through the Python API (`maezoo run` of it is
# the recipe machinery's business)
raw = yaml.safe_load((maezoo_wave.RECIPES / "wave_mae.yaml").read_text())
assert raw["system"] == "mae" and raw["model"]["name"] == "mae" and raw["model"]["args"]["tokenizer"] == "wave"
model = maezoo.create_model(raw["model"]["name"], **raw["model"]["args"])
ds = maezoo.create("dataset", raw["data"]["name"], **raw["data"]["args"], split="train", transform="pretrain")
assert ds.num_classes == 4 and len(ds) == 512
xb = torch.stack([ds[i][0] for i in range(4)])
out = model(xb, generator=torch.Generator().manual_seed(0))
assert out.pred.shape == (4, 16, 16) and out.loss.item() > 0
torch.testing.assert_close(out.loss, model.loss_fn(out.pred, out.target, out.mask.mask))

# and the packaged recipe runs as it is through `maezoo run` (the one recipe dialect, plugin components by name)
import json
import tempfile

from maezoo.cli import main

with tempfile.TemporaryDirectory() as d:
    rc = main(["run", str(maezoo_wave.RECIPES / "wave_mae.yaml"), "trainer.max_steps=3", "linprobe.epochs=2",
               "trainer.threads=1", "--run-dir", d + "/run"])
    assert rc == 0, rc
    rows = json.loads(open(d + "/run/results.json").read())["results"]
    assert {(r["protocol"], r["init"]) for r in rows} == {(p, i) for p in ("knn", "linprobe") for i in ("pretrained", "random")}
    assert {r["modality"] for r in rows} == {"wave"} and {r["dataset"] for r in rows} == {"wave-sines"}
print("WAVE_OK", out.loss.item())
'''


@pytest.fixture(scope="module")
def wave_site(tmp_path_factory) -> Path:
    """examples/maezoo-wave installed offline into a temporary target (from a copy: no build files in the repo)."""
    import shutil

    root = tmp_path_factory.mktemp("wave")
    src = root / "src"
    shutil.copytree(WAVE_EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = _pip_install_offline(src, root)
    assert list(site.glob("maezoo_wave-*.dist-info/entry_points.txt")), list(site.iterdir())
    assert (site / "maezoo_wave" / "recipes" / "wave_mae.yaml").is_file(), "the recipe is not packaged"
    return site


def test_example_wave_plugin_with_generic_mae(wave_site, tmp_path):
    """The documented example plugin: its tokenizer, by name, in the generic ``mae`` model (and ``mae_vit``);
    loss equal to a manual masked MSE for a fixed mask; a training step; its recipe's model/data sections build."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(wave_site), os.environ.get("PYTHONPATH")]))}
    script = tmp_path / "use_wave.py"
    script.write_text(WAVE_SCRIPT)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, f"example plugin use failed:\n{res.stdout}\n{res.stderr}"
    assert "WAVE_OK" in res.stdout


def test_generic_mae_rejects_a_tokenizer_without_dims():
    """A registered tokenizer that does not set ``embed_dim``/``target_dim`` fails at build time, saying so."""
    import maezoo
    from maezoo import registry
    from maezoo.core import Tokenizer

    class NoDims(Tokenizer):
        def __init__(self, width: int = 8) -> None:
            super().__init__()
            self.width = width

    class OtherWidth(Tokenizer):
        def __init__(self) -> None:
            super().__init__()
            self.embed_dim, self.target_dim = 8, 4

    registry.register("tokenizer", "_test_nodims", NoDims)
    registry.register("tokenizer", "_test_width8", OtherWidth)
    try:
        with pytest.raises(ValueError, match="'embed_dim'.*got None"):
            maezoo.create_model("mae", tokenizer="_test_nodims", embed_dim=16, num_heads=2)
        with pytest.raises(ValueError, match="makes 8-dim tokens.*embed_dim=16.*embed_dim=8"):
            maezoo.create_model("mae", tokenizer="_test_width8", embed_dim=16, num_heads=2)
        with pytest.raises(TypeError, match="unknown option.*tokenizr"):
            maezoo.create_model("mae", tokenizr="image")
        with pytest.raises(maezoo.RegistryError, match="maezoo.tokenizers"):
            maezoo.create_model("mae", tokenizer="wave_not_installed")
    finally:
        registry._REGISTRY["tokenizer"].pop("_test_nodims", None)
        registry._REGISTRY["tokenizer"].pop("_test_width8", None)
