"""Time-series modality: tokenizer, core additions (shared masks, zero mask token), PatchTST/TSFormer, datasets
and their bad-input policies, traffic loaders, the forecast protocols, figures and the recipes end to end.

Everything runs on small series the tests write; ETTh1 checks run only where shared/data holds it.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import maezoo  # noqa: F401  (registers everything)
from maezoo.cli import main
from maezoo.core.masking import SharedRandomMasking
from maezoo.eval.forecast import Forecaster, ForecastSettings, run_forecast, save_forecast_figure
from maezoo.eval.metrics import higher_is_better
from maezoo.eval.protocols import EvalData, ProtocolEnv
from maezoo.registry import build
from maezoo.timeseries.data import read_table, series, split_borders
from maezoo.timeseries.tokenizer import SeriesPatchTokenizer
from maezoo.timeseries.traffic import load_traffic, traffic
from maezoo.timeseries.visualize import visualize_series

SHARED_ETT = Path(__file__).resolve().parents[3] / "shared" / "data" / "ett" / "ETTh1.csv"
SMALL = {"embed_dim": 16, "depth": 1, "num_heads": 2, "decoder_dim": 16, "decoder_heads": 2, "patch_len": 4}


def _csv(path: Path, rows: int = 400, channels: int = 3, seed: int = 0, **cols) -> Path:
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    data = {"date": pd.date_range("2020-01-01", periods=rows, freq="h").astype(str)}
    for c in range(channels):
        data[f"c{c}"] = np.sin(2 * math.pi * t / (12 + 5 * c)) * (c + 1) + 0.1 * rng.standard_normal(rows) + c
    data.update(cols)
    pd.DataFrame(data).to_csv(path, index=False)
    return path


# -- tokenizer ------------------------------------------------------------------------------------------------
def test_tokenizer_shapes_crop_pad_overlap_and_mixing():
    x = torch.randn(2, 3, 50)
    tok = SeriesPatchTokenizer(16, patch_len=12, stride=12)  # 50 = 12 + 3*12 + 2: crop 2 oldest steps
    t = tok(x)
    assert t.grid == (4,) and t.tokens.shape == (6, 4, 16) and tok.token_batch_size(x) == 6
    assert torch.equal(tok.patchify(x)[0, 0], ((x[0, 0] - x[0, 0].mean()) / (x[0, 0].var(unbiased=False) + 1e-5).sqrt())[2:14])
    pad = SeriesPatchTokenizer(16, patch_len=12, stride=12, remainder="pad")
    assert pad.grid(x) == (5,) and pad(x).tokens.shape == (6, 5, 16)
    over = SeriesPatchTokenizer(16, patch_len=12, stride=6)  # overlapping segments
    assert over.grid(x) == (7,) and over.patchify(x).shape == (6, 7, 12)
    mix = SeriesPatchTokenizer(16, patch_len=10, stride=10, channel_independent=False, n_vars=3)
    assert mix(x).tokens.shape == (2, 5, 16) and mix.patchify(x).shape == (2, 5, 30) and mix.token_batch_size(x) == 2
    learned = SeriesPatchTokenizer(16, patch_len=10, pos_embed="learned", max_patches=8)
    assert torch.equal(learned(x).context["pos_embed"], learned.pos[:5])


def test_tokenizer_inverse_and_unpatchify_undo_revin_and_patching():
    x = torch.randn(2, 3, 48) * 5 + 3
    for tok in (SeriesPatchTokenizer(16, 12, 6), SeriesPatchTokenizer(16, 12, 12, channel_independent=False, n_vars=3)):
        ctx = tok(x).context
        raw = SeriesPatchTokenizer(16, tok.patch_len, tok.stride, tok.channel_independent, tok.n_vars, revin=False)
        torch.testing.assert_close(tok.inverse(tok.patchify(x), ctx), raw.patchify(x), atol=1e-4, rtol=1e-4)
        back = raw.unpatchify(raw.patchify(x), raw.grid(x))
        torch.testing.assert_close(back.reshape(2, 3, -1), x)


@pytest.mark.parametrize("bad, msg", [
    (torch.randn(2, 3, 8), "shorter than one patch"),
    (torch.randn(2, 48), r"\[B, C, L\]"),
    (torch.ones(2, 3, 48, dtype=torch.long), "floating point"),
    (torch.randn(2, 4, 48), "n_vars=3"),
    (torch.full((2, 3, 48), float("nan")), "NaN"),
])
def test_tokenizer_rejects_bad_batches_clearly(bad, msg):
    with pytest.raises(ValueError, match=msg):
        SeriesPatchTokenizer(16, 12, n_vars=3).validate(bad)


def test_constant_window_stays_finite_through_revin_and_the_model():
    model = build("model", "patchtst", n_vars=3, **{k: v for k, v in SMALL.items() if k != "decoder_dim"})
    x = torch.randn(2, 3, 32)
    x[:, 1] = 7.0  # a constant channel: std 0
    out = model(x)
    assert torch.isfinite(out.loss) and torch.isfinite(out.pred).all()
    assert torch.equal(model.tokenizer.patchify(x)[1], torch.zeros(8, 4))


# -- core additions -------------------------------------------------------------------------------------------
def test_shared_random_masking_shares_one_mask_per_batch_or_group():
    g = torch.Generator().manual_seed(0)
    m = SharedRandomMasking(0.75)(6, (8,), generator=g)
    assert (m.mask == m.mask[0]).all() and int(m.mask[0].sum()) == 6
    grouped = SharedRandomMasking(0.5, group=3)(6, (10,), generator=g).mask
    assert (grouped[:3] == grouped[0]).all() and (grouped[3:] == grouped[3]).all() and int(grouped.sum()) == 30
    assert build("masking", "shared_random", ratio=0.4, group=2).group == 2
    with pytest.raises(ValueError, match="divisible by 4"):
        SharedRandomMasking(0.5, group=4)(6, (10,))
    with pytest.raises(ValueError, match="group >= 1"):
        SharedRandomMasking(0.5, group=0)


def test_zero_mask_token_is_a_fixed_buffer_and_hidden_tokens_are_position_only():
    from maezoo.core.mae import MaskedAutoencoder

    model = build("model", "patchtst", n_vars=3, **{k: v for k, v in SMALL.items() if k != "decoder_dim"})
    assert "mask_token" not in dict(model.named_parameters()) and torch.equal(model.mask_token, torch.zeros(16))
    seen = {}
    model.encoder.register_forward_pre_hook(lambda mod, args: seen.update(x=seen.get("x", args[0])))
    x = torch.randn(2, 3, 32)
    out = model(x, generator=torch.Generator().manual_seed(0))
    pos = model.tokenizer(x).context["pos_embed"]
    hidden = out.mask.mask
    assert seen["x"].shape[1] == 8  # replace mode: the encoder sees every patch
    torch.testing.assert_close(seen["x"][hidden], pos.expand(6, -1, -1)[hidden])
    out.loss.backward()
    assert "mask_token" in dict(model.named_buffers())
    with pytest.raises(ValueError, match="mask_token must be"):
        MaskedAutoencoder(model.tokenizer, model.encoder, model.decoder, model.masking, mask_mode="replace",
                          mask_token="ones")  # type: ignore[arg-type]


# -- models ---------------------------------------------------------------------------------------------------
def test_patchtst_and_tsformer_follow_their_papers_settings():
    x = torch.randn(4, 3, 48)
    p = build("model", "patchtst", n_vars=3, **{k: v for k, v in SMALL.items() if k != "decoder_dim"})
    out = p(x)
    assert out.pred.shape == (12, 12, 4) and out.mask.mask.sum(1).eq(4).all()  # 40% of 12, per channel
    assert len({tuple(r) for r in out.mask.mask.int().tolist()}) > 1
    t = build("model", "tsformer", n_vars=3, **SMALL)
    seen = {}
    t.encoder.register_forward_pre_hook(lambda mod, args: seen.update(x=seen.get("x", args[0])))
    out = t(x)
    assert (out.mask.mask == out.mask.mask[0]).all() and int(out.mask.mask[0].sum()) == 9  # 75%, whole batch
    assert seen["x"].shape[1] == 3  # drop mode: visible segments only
    assert type(t.loss_fn).__name__ == "MaskedL1" and t.target_name == "raw"
    out.loss.backward()
    assert t.encode(x, pool="none").shape == (12, 12, 16)
    with pytest.raises(ValueError, match="mask_mode='replace'"):
        build("model", "patchtst", decoder="linear", mask_mode="drop")


# -- data -----------------------------------------------------------------------------------------------------
def test_series_windows_splits_and_train_only_scaler(tmp_path):
    path = _csv(tmp_path / "s.csv", rows=400)
    tr, va, te = (series(s, path=str(path), context=32, horizon=8) for s in ("train", "val", "test"))
    assert split_borders("auto", 400, "s.csv") == (280, 320, 400)  # 0.7 / 0.1 / 0.2
    # val/test parts start `context` rows before their border: windows = rows + context - (context + horizon) + 1
    assert (len(tr), len(va), len(te)) == (280 - 40 + 1, 40 - 8 + 1, 80 - 8 + 1)
    raw = read_table(path).values
    mean, std = raw[:280].mean(0), raw[:280].std(0)
    np.testing.assert_allclose(tr.scaler_mean, mean)
    x, y = va[0]
    np.testing.assert_allclose(x.numpy().T, (raw[248:280] - mean) / std, rtol=1e-5, atol=1e-5)  # look-back overlap
    np.testing.assert_allclose(y.numpy().T, (raw[280:288] - mean) / std, rtol=1e-5, atol=1e-5)
    assert tr.model_kwargs == {"n_vars": 3} and tr.columns == ["c0", "c1", "c2"]
    assert len(te.with_horizon(16)) == 80 - 16 + 1 and te.with_horizon(16)[0][1].shape == (3, 16)
    assert split_borders("auto", 17420, "ETTh1.csv") == (8640, 11520, 14400)
    assert split_borders("auto", 69680, "ETTm2.csv") == (34560, 46080, 57600)


@pytest.mark.skipif(not SHARED_ETT.is_file(), reason="ETTh1 not in shared/data")
def test_etth1_standard_split_lengths():
    lens = [len(series(s, path="ett/ETTh1.csv", context=512, horizon=96)) for s in ("train", "val", "test")]
    assert lens == [8033, 2785, 2785]


def test_bad_tables_get_clear_messages_or_the_documented_policy(tmp_path):
    n = 300
    with pytest.raises(ValueError, match=r"non-numeric column\(s\) \['site'\]"):
        series(path=str(_csv(tmp_path / "a.csv", n, site=["x"] * n)), context=16, horizon=4)
    nan = np.ones(n)
    nan[[5, 9]] = np.nan
    p = _csv(tmp_path / "b.csv", n, gap=nan * np.arange(n))
    with pytest.raises(ValueError, match=r"2 missing .* row 5 \(gap\)"):
        series(path=str(p), context=16, horizon=4)
    filled = series(path=str(p), context=16, horizon=4, missing="interpolate")
    assert torch.isfinite(filled.series).all()
    const = _csv(tmp_path / "c.csv", n, flat=np.full(n, 3.0))
    with pytest.warns(UserWarning, match=r"constant channel\(s\) \['flat'\]"):
        ds = series(path=str(const), context=16, horizon=4)
    assert torch.isfinite(ds.series).all() and float(ds.series[-1].abs().max()) == 0.0
    with pytest.raises(ValueError, match="zero variance"):
        series(path=str(const), context=16, horizon=4, constant="error")
    with pytest.raises(ValueError, match="context 300 is longer than the training part"):
        series("val", path=str(_csv(tmp_path / "d.csv", n)), context=300, horizon=4)
    with pytest.raises(ValueError, match="has 210 steps, fewer than context 205"):
        series("train", path=str(_csv(tmp_path / "e.csv", n)), context=205, horizon=10)
    with pytest.raises(ValueError, match="no column"):
        series(path=str(_csv(tmp_path / "f.csv", n)), columns=["nope"], context=16, horizon=4)
    with pytest.raises(FileNotFoundError, match="missing.csv not found .*MAEZOO_DATA"):
        series(path=str(tmp_path / "missing.csv"))
    (tmp_path / "junk.csv").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="junk.csv"):
        series(path=str(tmp_path / "junk.csv"), context=4, horizon=2)


def test_parquet_tables_read_or_say_what_is_missing(tmp_path):
    import importlib.util

    import pandas as pd

    p = tmp_path / "s.parquet"
    df = pd.read_csv(_csv(tmp_path / "s.csv", rows=200))
    if importlib.util.find_spec("pyarrow") or importlib.util.find_spec("fastparquet"):
        df.to_parquet(p)
        assert series(path=str(p), context=16, horizon=4).columns == ["c0", "c1", "c2"]
    else:
        p.write_bytes(b"PAR1")
        with pytest.raises(ValueError, match="pip install pyarrow"):
            series(path=str(p), context=16, horizon=4)


def test_traffic_npz_and_h5_loaders(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    flow = rng.random((200, 5, 3)) * 100
    np.savez(tmp_path / "pems04.npz", data=flow)
    vals, names = load_traffic(tmp_path / "pems04.npz")
    np.testing.assert_allclose(vals, flow[:, :, 0]) and names == [str(i) for i in range(5)]
    ds = traffic("test", path=str(tmp_path / "pems04.npz"), context=24, horizon=12, ratios=[0.6, 0.2, 0.2])
    assert ds[0][0].shape == (5, 24) and len(ds) == 40 - 12 + 1
    speed = rng.random((150, 4)) * 60
    speed[10, 2] = 0.0
    with h5py.File(tmp_path / "metr-la.h5", "w") as f:  # pandas HDFStore "fixed" layout, as DCRNN/STEP ship it
        g = f.create_group("df")
        g["block0_values"] = speed
        g["axis0"] = np.array([b"773869", b"767541", b"767542", b"717447"])
        g["axis1"] = np.arange(150, dtype=np.int64)
    vals, names = load_traffic(tmp_path / "metr-la.h5")
    np.testing.assert_allclose(vals, speed) and names[0] == "773869"
    filled = traffic("train", path=str(tmp_path / "metr-la.h5"), context=24, horizon=12, zeros="interpolate")
    assert filled.columns[0] == "773869" and torch.isfinite(filled.series).all()
    bad = tmp_path / "bad.npz"
    np.savez(bad, other=flow)
    with pytest.raises(ValueError, match="no 'data' array"):
        load_traffic(bad)


# -- forecast protocol ----------------------------------------------------------------------------------------
def _data(path: Path, context: int = 32) -> EvalData:
    return EvalData(lambda split, tf: series(split, tf, path=str(path), context=context, horizon=8), label="tiny")


def test_forecaster_reads_every_token_and_denormalises_per_channel():
    for kwargs in ({}, {"channel_independent": False}):
        model = build("model", "patchtst", n_vars=3, **{k: v for k, v in SMALL.items() if k != "decoder_dim"}, **kwargs)
        x = torch.randn(2, 3, 32) + torch.tensor([0.0, 10.0, -5.0]).view(1, 3, 1)
        rows = model.tokenizer.token_batch_size(x) // 2
        f = Forecaster(model, 8, rows, 3, horizon=6)
        assert f.head[-1].in_features == 8 * 16 and f.head[-1].out_features == 3 * 6 // rows
        torch.nn.init.zeros_(f.head[-1].weight)
        torch.nn.init.zeros_(f.head[-1].bias)
        pred = f(x)  # a zero forecast in RevIN units is each channel's look-back mean
        assert pred.shape == (2, 3, 6)
        torch.testing.assert_close(pred, x.mean(-1, keepdim=True).expand(-1, -1, 6), atol=1e-5, rtol=1e-5)


def test_forecast_protocols_report_mse_mae_per_horizon(tmp_path):
    torch.manual_seed(0)
    data = _data(_csv(tmp_path / "t.csv", rows=300))
    model = build("model", "patchtst", n_vars=3, **{k: v for k, v in SMALL.items() if k != "decoder_dim"})
    s = ForecastSettings(horizons=[4, 8], epochs=2, head_epochs=2, max_steps_per_epoch=3, batch_size=16,
                         val_subset=20, test_subset=25, lr=1e-3, patience=1)
    env = ProtocolEnv(device=torch.device("cpu"), batch_size=32, progress=False, run_dir=tmp_path / "run")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outs = {mode: run_forecast(model, data, s, env, mode) for mode in ("linprobe", "finetune", "scratch")}
    for mode, out in outs.items():
        assert set(out.metrics) == {"mse@4", "mae@4", "mse@8", "mae@8"}, mode
        assert all(math.isfinite(v) and v > 0 for v in out.metrics.values())
        assert out.extra["per_horizon"]["8"]["test_windows"] == 25
    assert (tmp_path / "run" / "forecast_scratch_H8.png").read_bytes()[:4] == b"\x89PNG"
    assert outs["linprobe"].steps == 2 * 2 * 3 and outs["finetune"].steps == 2 * 4 * 3
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the MAE itself is untouched
    assert not higher_is_better("mse@8") and not higher_is_better("mae@4") and not higher_is_better("mse@96")
    ForecastSettings(horizons=[13])
    assert not higher_is_better("mse@13")
    with pytest.raises(ValueError, match="positive horizons"):
        ForecastSettings(horizons=[])


def test_forecast_protocol_needs_windows_with_a_horizon():
    from maezoo.config import ConfigError

    data = EvalData(lambda split, tf: [(torch.randn(3, 32), torch.randn(3, 8))], label="plain")
    model = build("model", "patchtst", n_vars=3, **{k: v for k, v in SMALL.items() if k != "decoder_dim"})
    with pytest.raises(ConfigError, match="with_horizon"):
        run_forecast(model, data, ForecastSettings(horizons=[8]), ProtocolEnv(device=torch.device("cpu")), "linprobe")


def test_figures_are_written(tmp_path):
    ds = series("test", path=str(_csv(tmp_path / "v.csv", rows=300)), context=32, horizon=8)
    for name in ("patchtst", "tsformer"):
        model = build("model", name, n_vars=3, **({k: v for k, v in SMALL.items() if k != "decoder_dim"}
                                                  if name == "patchtst" else SMALL))
        png = visualize_series(model, ds, tmp_path / f"{name}.png", num=3)
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    f = Forecaster(model, 8, 3, 3, 8)
    png = save_forecast_figure(f, ds, tmp_path / "forecast.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


# -- recipes --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["timeseries/patchtst_etth1", "timeseries/tsformer_etth1"])
def test_recipes_run_end_to_end_on_a_small_series(recipe, tmp_path, capsys):
    import json

    path = _csv(tmp_path / "tiny.csv", rows=320)
    run = tmp_path / "run"
    tiny = [f"data.args.path={path}", "data.args.columns=null", "data.args.context=48", "data.args.horizon=8", "model.args.embed_dim=16", "model.args.depth=1",
            "model.args.num_heads=2", "model.args.decoder_dim=16", "model.args.decoder_heads=2",
            "trainer.max_steps=3", "trainer.warmup_steps=1", "trainer.threads=1", "trainer.batch_size=8",
            "forecast.horizons=[8]", "forecast.max_steps_per_epoch=2", "forecast.val_subset=8",
            "forecast.test_subset=8", "visualize=2", "eval.progress=false", "trainer.progress=false"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", recipe, *tiny, "--run-dir", str(run)]) == 0
    rows = json.loads((run / "results.json").read_text())["results"]
    got = {(r["protocol"], r["init"], r["metric"]) for r in rows}
    for proto, init in (("forecast_linprobe", "pretrained"), ("forecast_finetune", "pretrained"),
                        ("forecast_finetune", "random")):  # forecast_scratch reports as fine-tuning's baseline
        assert {(proto, init, "mse@8"), (proto, init, "mae@8")} <= got
    assert not any(init == "published" for _, init, _ in got), "ETTh1's published figures beside another CSV"
    assert all(not r["higher_is_better"] for r in rows if r["metric"].startswith(("mse@", "mae@")))
    assert (run / "reconstructions.png").is_file() and (run / "forecast_finetune_H8.png").is_file()
    assert "forecast_scratch H=8" in capsys.readouterr().out
