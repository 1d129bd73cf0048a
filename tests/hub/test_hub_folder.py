"""Your own data: the image_folder dataset, recipe image/mae_folder, and fine-tuning a published-layout file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import maezoo

REPO = Path(__file__).resolve().parents[2]


def _write_folder(root: Path, per_class: int = 12, corrupt: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cats", "dogs"]):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            size = (40 + 7 * i, 30 + 5 * i)  # any size
            base = np.full((size[1], size[0], 3), 60 + 120 * c, np.uint8)
            img = np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.jpg")
    if corrupt:
        (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_image_folder_dataset_any_size_channels_and_splits(tmp_path):
    root = _write_folder(tmp_path / "imgs", corrupt=False)
    train = maezoo.create("dataset", "image_folder", root=str(root), split="train", transform="pretrain", image_size=32)
    test = maezoo.create("dataset", "image_folder", root=str(root), split="test", transform="eval", image_size=32)
    assert len(train) + len(test) == 24 and len(test) > 0 and train.num_classes == 2
    x, y = train[0]
    assert x.shape == (3, 32, 32) and y in (0, 1)
    grey = maezoo.create("dataset", "image_folder", root=str(root), split="train", transform="eval", image_size=16,
                         in_chans=1)
    assert grey[0][0].shape == (1, 16, 16)
    lines = [f"{p.relative_to(root)} {p.parent.name}" for p in sorted(root.rglob("*.jpg"))]
    (root / "train.txt").write_text("\n".join(lines[::2]))
    (root / "test.txt").write_text("\n".join(lines[1::2]))
    listed = maezoo.create("dataset", "image_folder", train_list=str(root / "train.txt"),
                           test_list=str(root / "test.txt"), split="test", transform="eval", image_size=32)
    assert len(listed) == 12 and listed.num_classes == 2


def test_image_folder_bad_input(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no images for split 'train' in .*empty; expected root/<class>/\*\.jpg"):
        maezoo.create("dataset", "image_folder", root=str(tmp_path / "empty"))
    root = _write_folder(tmp_path / "imgs")
    train = maezoo.create("dataset", "image_folder", root=str(root), split="train", transform="pretrain", image_size=32)
    bad = next(i for i, (p, _) in enumerate(train.samples) if p.name == "broken.jpg")
    with pytest.raises(ValueError, match=r"broken\.jpg: unreadable image"):
        train[bad]  # the Trainer's RobustDataset skips and counts it
    ev = maezoo.create("dataset", "image_folder", root=str(root), split="train", transform="eval", image_size=32)
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert ev[bad][0].shape == (3, 32, 32)
    assert ev.skipped == 1


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "maezoo", "run", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_recipe_pretrains_and_finetunes_on_a_folder_then_from_a_published_file(tmp_path):
    from hub_peers import hf_mae, hf_to_official

    root = _write_folder(tmp_path / "imgs")
    # 1 broken file in 25 is above the default 1% limit of bad samples; a tiny folder raises the limit
    r = _run("image/mae_folder", f"data.args.root={root}", "trainer.max_bad_fraction=0.2", "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "broken.jpg: unreadable image" in r.stderr
    assert (tmp_path / "run" / "results.json").is_file() and "finetune" in r.stdout
    # an official-MAE-layout file (small ViT, patch 4) fine-tuned through checkpoint=
    torch.save({"model": hf_to_official(hf_mae().state_dict())}, tmp_path / "mae_pretrain_vit_small4.pth")
    r = _run("image/mae_folder", f"data.args.root={root}", "stage=finetune",
             f"checkpoint={tmp_path / 'mae_pretrain_vit_small4.pth'}", "--run-dir", str(tmp_path / "ft"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "ft" / "pretrained" / "model.json").is_file()
    assert (tmp_path / "ft" / "results_finetune.json").is_file()
