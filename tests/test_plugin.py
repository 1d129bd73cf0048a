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
    assert torch.isfinite(out.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the step changed nothing"
    assert model.encode(x, pool="cls").shape == (4, 16)
print("PLUGIN_OK", out.loss.item())
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "maezoo_toyplugin.py").write_text(textwrap.dedent(MODULE))
    site = root / "site"
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--no-cache-dir", "--target", str(site), str(src),
    ]
    env = {**os.environ, "PIP_NO_INPUT": "1", "PIP_CONFIG_FILE": os.devnull}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=root)
    assert res.returncode == 0, f"offline pip install of the plugin failed:\n{res.stdout}\n{res.stderr}"
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
