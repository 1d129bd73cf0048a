"""Audio modality (Audio-MAE): Kaldi front end, tokenizer, local decoder, datasets, bad files, recipes.

Never downloads: FSDD-like, folder and JSON data are written by the tests (tones and noise).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torchaudio.compliance import kaldi

import maezoo
from maezoo.audio.data import AudioClips, fsdd_splits
from maezoo.audio.frontend import (
    BATCHED_TOLERANCE,
    FbankConfig,
    batched_fbank,
    kaldi_fbank,
    load_audio,
    normalize,
    pad_or_crop,
)
from maezoo.audio.tokenizer import AudioTokenizer
from maezoo.core.pos_embed import sincos_pos_embed


def tiny_model(frames: int = 128, decoder: str = "swin_local", **kw):
    args = dict(target_frames=frames, embed_dim=32, depth=1, num_heads=2, decoder=decoder, decoder_dim=16,
                decoder_depth=2, decoder_heads=2)
    return maezoo.create_model("audiomae", **{**args, **kw})


def tone(freq: float, seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    g = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * g.standard_normal(t.size)
    return np.stack([x] * channels, axis=1).astype(np.float32) if channels > 1 else x.astype(np.float32)


# -- front end ----------------------------------------------------------------------------------------------
def test_kaldi_fbank_is_audiomae_call_and_batched_path_matches_within_tolerance():
    g = torch.Generator().manual_seed(0)
    lengths = [16000, 9123, 4000, 401]
    waves = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        waves[i, :n] = 0.1 * torch.randn(n, generator=g)
    cfg = FbankConfig()
    for i, n in enumerate(lengths):  # the reference is exactly Audio-MAE's call
        w = waves[i:i + 1, :n]
        ref = kaldi.fbank(w - w.mean(), htk_compat=True, sample_frequency=16000, use_energy=False,
                          window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
        assert torch.equal(kaldi_fbank(waves[i, :n]), ref) and ref.shape == (cfg.frames(n), 128)
    out = batched_fbank(waves, torch.tensor(lengths))
    assert out.shape == (4, cfg.frames(max(lengths)), 128)
    for i, n in enumerate(lengths):
        ref = kaldi_fbank(waves[i, :n])
        assert (out[i, :ref.shape[0]] - ref).abs().max() <= BATCHED_TOLERANCE
        assert not out[i, ref.shape[0]:].any()  # past the clip: zero, as Audio-MAE's padding
    with pytest.raises(ValueError, match="shorter than one"):
        batched_fbank(torch.zeros(2, 100))


def test_resampling_to_16k_fills_the_mel_filters(tmp_path):
    x = tone(440, 0.5, 8000)
    x = x + 0.05 * np.random.default_rng(1).standard_normal(x.size).astype(np.float32)  # broadband
    floor = math.log(torch.finfo(torch.float32).eps)
    at8k = kaldi.fbank(torch.from_numpy(x)[None], htk_compat=True, sample_frequency=8000, use_energy=False,
                       window_type="hanning", num_mel_bins=128, dither=0.0)
    assert int((at8k == floor).all(0).sum()) == 4, "at 8 kHz 4 of the 128 filters hold no FFT bin"
    sf.write(tmp_path / "a.wav", x, 8000)
    fb = kaldi_fbank(load_audio(tmp_path / "a.wav"))
    assert int((fb == floor).all(0).sum()) == 1  # at 16 kHz only the one Audio-MAE also has


def test_stereo_48k_is_downmixed_and_resampled(tmp_path):
    sf.write(tmp_path / "s.wav", tone(300, 0.5, 48000, channels=2), 48000)
    w = load_audio(tmp_path / "s.wav")
    assert w.dim() == 1 and w.numel() == 8000


# -- tokenizer and decoder ----------------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [128, 1024])
def test_tokenizer_grid_patch_layout_and_position_embedding(frames):
    tok = AudioTokenizer(embed_dim=32, target_frames=frames)
    x = torch.randn(2, frames, 128)
    tok.validate(x)
    assert tok.grid(x) == (frames // 16, 8)
    p = tok.patchify(x)
    assert p.shape == (2, frames // 16 * 8, 256)
    t, f = 3, 5  # token t*8+f is the patch at time block t, frequency block f
    assert torch.equal(p[0, t * 8 + f], x[0, 16 * t:16 * t + 16, 16 * f:16 * f + 16].reshape(-1))
    assert torch.equal(tok.unpatchify(p, tok.grid(x)), x)
    pos = tok(x).context["pos_embed"]
    assert torch.equal(pos, sincos_pos_embed(32, (frames // 16, 8)))
    grid = pos.reshape(frames // 16, 8, 32)  # first half encodes frequency (column), second half time (row)
    assert torch.allclose(grid[:, :, :16], grid[:1, :, :16].expand_as(grid[:, :, :16]))
    assert torch.allclose(grid[:, :, 16:], grid[:, :1, 16:].expand_as(grid[:, :, 16:]))


def test_tokenizer_rejects_bad_batches_with_clear_messages():
    tok = AudioTokenizer(embed_dim=32, target_frames=128)
    for bad, msg in [(torch.randn(2, 1, 128, 128), r"\[B, T, F\]"), (torch.randn(2, 128, 64), "mel bins"),
                     (torch.randn(2, 120, 128), "does not divide"), (torch.randn(2, 8, 128), "smaller than one")]:
        with pytest.raises(ValueError, match=msg):
            tok.validate(bad)
    x = torch.randn(2, 128, 128)
    x[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tok.validate(x)


def test_tokenizer_features_from_waveforms_use_stored_statistics():
    tok = AudioTokenizer(embed_dim=32, target_frames=64, norm_mean=-5.0, norm_std=4.0)
    w = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    x = tok.features(w, 8000)
    ref = normalize(pad_or_crop(kaldi_fbank(torchaudio_resample(w[0])), 64), -5.0, 4.0)
    assert x.shape == (2, 64, 128) and (x[0] - ref).abs().max() <= BATCHED_TOLERANCE / 8
    assert {"norm_mean", "norm_std"} <= set(tok.state_dict())  # saved with the checkpoint


def torchaudio_resample(w: torch.Tensor) -> torch.Tensor:
    import torchaudio

    return torchaudio.functional.resample(w, 8000, 16000)


@pytest.mark.parametrize("frames", [128, 1024])
def test_local_decoder_runs_at_128_and_1024_frames(frames):
    m = tiny_model(frames, decoder_depth=2)
    blocks = m.decoder.blocks
    assert [b.shift_size for b in blocks] == [(0, 0), (2, 0)] and all(b.window_size == (4, 4) for b in blocks)
    x = torch.randn(2, frames, 128)
    out = m(x)
    assert out.pred.shape == (2, frames // 16 * 8, 256) and out.grid == (frames // 16, 8)
    out.loss.backward()
    assert all(p.grad is not None for p in m.decoder.blocks.parameters() if p.requires_grad)


def test_local_decoder_window_from_args_and_odd_grids():
    m = tiny_model(80, decoder_args={"window": [2, 4], "shift": [1, 0]})  # grid (5, 8): padded to whole windows
    assert m.decoder.blocks[1].shift_size == (1, 0)
    assert m(torch.randn(2, 80, 128)).pred.shape == (2, 40, 256)
    with pytest.raises(ValueError, match="smaller than the window"):
        tiny_model(128, decoder_args={"window": [4, 4], "shift": [4, 0]})
    g = tiny_model(128, decoder="transformer")  # the global decoder is the alternative
    assert type(g.decoder).__name__ == "TransformerDecoder" and g(torch.randn(2, 128, 128)).pred.shape == (2, 64, 256)


def test_time_frequency_masking_for_pretraining_and_finetuning_with_soft_labels():
    m = tiny_model(128, masking="time_frequency", mask_ratio=None, masking_args={"time_ratio": 0.25, "freq_ratio": 0.25})
    out = m(torch.randn(2, 128, 128))
    hidden = out.mask.mask.reshape(2, 8, 8)
    assert (hidden.all(1).sum(1) == 2).all() and (hidden.all(2).sum(1) == 2).all()  # 2 bands, 2 time steps
    from maezoo.eval.finetune import FinetuneConfig, finetune

    x = torch.randn(8, 128, 128)
    y = torch.softmax(torch.randn(8, 3), -1)  # soft labels, as waveform mixup gives
    loader = [(x[:4], y[:4]), (x[4:], y[4:])]
    test = [(x, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))]
    cfg = FinetuneConfig(epochs=1, lr=1e-3, warmup_epochs=0, mixup_prob=0.0, precision="fp32",
                         masking="time_frequency", masking_args={"time_ratio": 0.2, "freq_ratio": 0.2})
    res = finetune(m, loader, test, num_classes=3, cfg=cfg)
    assert res["steps"] == 2 and math.isfinite(res["train_loss"]) and 0 <= res["top1"] <= 100


# -- datasets -----------------------------------------------------------------------------------------------
def write_fsdd(root: Path, speakers=("anna", "bob"), takes: int = 6) -> Path:
    rec = root / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for d in range(10):
        for si, s in enumerate(speakers):
            for t in range(takes):
                sf.write(rec / f"{d}_{s}_{t}.wav", tone(200 + 150 * d + 20 * si, 0.3 + 0.02 * t, 8000, seed=t), 8000)
    return rec


def test_fsdd_official_and_leave_one_speaker_out_splits(tmp_path):
    rec = write_fsdd(tmp_path, takes=7)
    off = fsdd_splits(rec, "fsdd-official")
    assert len(off["test"]) == 10 * 2 * 5 and len(off["train"]) == 10 * 2 * 2
    loso = fsdd_splits(rec, "fsdd-loso-bob")
    assert {c.group for c in loso["test"]} == {"bob"} and {c.group for c in loso["train"]} == {"anna"}
    with pytest.raises(ValueError, match="fsdd-loso-<speaker>.*anna, bob"):
        fsdd_splits(rec, "fsdd-loso-carol")


def test_fsdd_dataset_normalises_with_training_statistics(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    write_fsdd(tmp_path)
    tr = maezoo.build("dataset", "fsdd", split="train", transform="eval", root=str(tmp_path), target_frames=48)
    te = maezoo.build("dataset", "fsdd", split="test", transform="eval", root=str(tmp_path), target_frames=48)
    assert isinstance(tr, AudioClips) and len(tr) == 20 and len(te) == 100 and tr.num_classes == 10
    x, y = tr[0]
    assert x.shape == (48, 128) and isinstance(y, int)
    assert tr.model_kwargs == te.model_kwargs and tr.model_kwargs["target_frames"] == 48
    assert abs(float(tr.fbanks.mean())) < 1e-4 and abs(float(tr.fbanks.std()) - 0.5) < 1e-3  # (x - mean) / (2 std)
    rep = maezoo.build("dataset", "fsdd", split="train", transform="eval", root=str(tmp_path), target_frames=96,
                       pad="repeat")
    n = int(rep.frames[0])  # a short clip is tiled: frames n.. repeat frames 0..
    assert n < 48 and torch.allclose(rep.fbanks[0, n:2 * n], rep.fbanks[0, :n])
    with pytest.raises(ValueError, match="pad='edge'"):
        maezoo.build("dataset", "fsdd", split="train", transform="eval", root=str(tmp_path), pad="edge")
    ft = maezoo.build("dataset", "fsdd", split="train", transform="finetune", root=str(tmp_path), target_frames=48,
                      freqm=24, timem=12, time_shift=4, mixup=1.0)
    x, y = ft[3]
    assert x.shape == (48, 128) and y.shape == (10,) and abs(float(y.sum()) - 1) < 1e-5


def test_clip_mean_norm_removes_each_clips_own_bin_means(tmp_path, monkeypatch):
    from maezoo.audio.data import clip_mean_norm

    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    write_fsdd(tmp_path)
    fb = torch.randn(2, 6, 4) + torch.tensor([3.0, -1.0, 0.5, 2.0])
    frames = torch.tensor([6, 3])
    out = clip_mean_norm(fb, frames, "zero")
    assert torch.allclose(out[0], fb[0] - fb[0].mean(0)) and torch.allclose(out[1, :3], fb[1, :3] - fb[1, :3].mean(0))
    assert not out[1, 3:].any()  # zero padding stays at the (new) mean level
    kw = dict(split="train", transform="eval", root=str(tmp_path), target_frames=48, pad="repeat")
    plain = maezoo.build("dataset", "fsdd", **kw)
    cmn = maezoo.build("dataset", "fsdd", clip_norm=True, **kw)
    raw = cmn.fbanks * 2 * cmn.stats[1] + cmn.stats[0]  # undo the dataset normalisation
    n = int(cmn.frames[0])
    assert raw[0, :n].mean(0).abs().max() < 1e-3 and plain.stats != cmn.stats
    assert cmn.targets == plain.targets == [c.label for c in plain.clips]
    mixed = maezoo.build("dataset", "fsdd", clip_norm=True, **{**kw, "transform": "finetune"}, mixup=1.0)
    x, _ = mixed[0]  # the waveform-mixup path normalises its fresh filterbank the same way
    assert x.shape == (48, 128) and torch.isfinite(x).all()


def test_bad_files_are_skipped_and_counted_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    root = tmp_path / "folder"
    for c in ("yes", "no"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            sf.write(root / c / f"ok{i}.wav", tone(300 if c == "yes" else 900, 0.4, 16000, seed=i), 16000)
    sf.write(root / "yes" / "stereo48k.wav", tone(300, 0.4, 48000, channels=2), 48000)  # kept
    sf.write(root / "yes" / "empty.wav", np.zeros(0, np.float32), 16000)
    (root / "yes" / "text.wav").write_text("this is not a wav file")
    nan = tone(300, 0.4, 16000)
    nan[100] = np.nan
    sf.write(root / "no" / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(root / "no" / "short.wav", tone(900, 0.1, 16000), 16000)  # 8 frames < one 16-frame patch
    sf.write(root / "no" / "silent.wav", np.zeros(8000, np.float32), 16000)
    (root / "testing_list.txt").write_text("yes/ok0.wav\nno/ok0.wav\n")
    with pytest.warns(UserWarning, match=r"skipped 5 of 10 clips \(empty 1, nan 1, silent 1, too_short 1, unreadable 1\)"):
        ds = maezoo.build("dataset", "audio_folder", split="train", transform="eval", root=str(root), target_frames=32)
    assert len(ds) == 5 and ds.skipped == {"empty": 1, "nan": 1, "silent": 1, "too_short": 1, "unreadable": 1}
    assert any(c.path.name == "stereo48k.wav" for c in ds.clips)
    test = maezoo.build("dataset", "audio_folder", split="test", transform="eval", root=str(root), target_frames=32)
    assert sorted(test.targets) == [0, 1] and test.classes == ["no", "yes"]
    # the minimum follows the model's time patch: an 8-frame patch keeps the 8-frame clip
    with pytest.warns(UserWarning, match=r"skipped 4 of 10 clips"):
        ds8 = maezoo.build("dataset", "audio_folder", split="train", transform="eval", root=str(root), target_frames=32,
                           patch_frames=8)
    assert "too_short" not in ds8.skipped and any(c.path.name == "short.wav" for c in ds8.clips)


def write_json_lists(tmp_path: Path, multilabel: bool) -> dict[str, str]:
    audio = tmp_path / "audio"
    audio.mkdir()
    mids = ["/m/dog", "/m/rain", "/m/bell"]
    (tmp_path / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{m},"{m[3:]}"\n' for i, m in enumerate(mids)))
    lists = {}
    for split, n in (("train", 12), ("test", 6)):
        data = []
        for i in range(n):
            f = audio / f"{split}{i}.wav"
            sf.write(f, tone(250 * (1 + i % 3), 0.5, 22050, seed=i), 22050)
            labels = mids[i % 3] + (f",{mids[(i + 1) % 3]}" if multilabel and i % 2 else "")
            data.append({"wav": str(f.relative_to(tmp_path)), "labels": labels})
        (tmp_path / f"{split}.json").write_text(json.dumps({"data": data}))
        lists[split] = str(tmp_path / f"{split}.json")
    return {**lists, "label_csv": str(tmp_path / "class_labels_indices.csv")}


def test_ast_json_lists_single_and_multi_label(tmp_path, monkeypatch):
    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    args = write_json_lists(tmp_path, multilabel=True)
    ds = maezoo.build("dataset", "audio_json", split="train", transform="eval", target_frames=32, **args)
    assert ds.multilabel and ds.num_classes == 3
    x, y = ds[1]
    assert x.shape == (32, 128) and y.tolist() == [0.0, 1.0, 1.0]
    (tmp_path / "bad.json").write_text('{"data": [{"wav": "a.wav", "labels": "/m/cat"}]}')
    with pytest.raises(ValueError, match="needs test, label_csv .*data.args.test=..."):
        maezoo.build("dataset", "audio_json", split="train", transform="eval", train=args["train"])
    with pytest.raises(ValueError, match="data.args.root"):
        maezoo.build("dataset", "audio_folder", split="train", transform="eval")
    with pytest.raises(ValueError, match="not in the label csv"):
        maezoo.build("dataset", "audio_json", split="train", transform="eval", **{**args, "train": str(tmp_path / "bad.json")})


# -- recipes and the figure -----------------------------------------------------------------------------------
TINY = ["model.args.embed_dim=32", "model.args.depth=1", "model.args.num_heads=2", "model.args.decoder_dim=16",
        "model.args.decoder_depth=2", "model.args.decoder_heads=2", "trainer.max_steps=4", "trainer.batch_size=8",
        "trainer.warmup_steps=1", "trainer.threads=1", "trainer.num_workers=0", "eval.num_workers=0",
        "linprobe.epochs=2", "finetune.epochs=1", "finetune.batch_size=8", "trainer.precision=fp32", "visualize=2"]


def test_fsdd_recipe_end_to_end_on_a_tiny_copy(tmp_path, monkeypatch):
    from maezoo.cli import main
    from maezoo.results import read_results

    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    write_fsdd(tmp_path)
    run = tmp_path / "run"
    assert main(["run", "audio/audiomae_fsdd", *TINY, "datasets=[fsdd-official,fsdd-loso-bob]",
                 f"data.args.root={tmp_path}", "data.args.target_frames=48", "--run-dir", str(run)]) == 0
    _, rows = read_results(run / "results.json")
    got = {(r.dataset, r.protocol, r.init) for r in rows}
    for ds in ("fsdd-official", "fsdd-loso-bob"):
        assert {(ds, "knn", "pretrained"), (ds, "linprobe", "random"), (ds, "finetune", "random")} <= got
    spec = json.loads((run / "fsdd-official" / "model.json").read_text())
    assert "norm_mean" in json.dumps(spec) and "norm_std" in json.dumps(spec)  # statistics travel with the weights
    assert (run / "fsdd-official" / "reconstructions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "viz.png"  # the figure of a saved run, through the command
    assert main(["visualize", str(run / "fsdd-loso-bob"), "--out", str(out), "--num", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("recipe", ["audio/audiomae_esc50", "audio/audiomae_speechcommands"])
def test_user_data_recipes_run_on_tiny_lists(tmp_path, monkeypatch, recipe):
    from maezoo.cli import main
    from maezoo.results import read_results

    monkeypatch.setenv("MAEZOO_DATA", str(tmp_path / "data"))
    if recipe.endswith("esc50"):
        args = write_json_lists(tmp_path, multilabel=False)
        data = [f"data.args.{k}={v}" for k, v in args.items()] + ["data.args.target_frames=64"]
    else:
        root = tmp_path / "spc"
        for c in ("yes", "no", "up"):
            (root / c).mkdir(parents=True)
            for i in range(4):
                sf.write(root / c / f"{i}.wav", tone({"yes": 300, "no": 700, "up": 1200}[c], 0.5, 16000, seed=i), 16000)
        (root / "testing_list.txt").write_text("yes/0.wav\nno/0.wav\nup/0.wav\n")
        data = [f"data.args.root={root}"]
    overrides = [*TINY, "model.args.target_frames=64", "data.args.target_frames=64", *data,
                 "stages=[pretrain,linprobe,finetune]", "trainer.max_steps=2"]
    run = tmp_path / "run"
    assert main(["run", recipe, *overrides, "--run-dir", str(run)]) == 0
    _, rows = read_results(run / "results.json")
    assert {r.init for r in rows} == {"pretrained", "random", "published"}
    assert any(r.init == "published" and r.protocol == "finetune" for r in rows)
