"""Windowed forecasting datasets over multivariate series (CSV or Parquet), with the field's standard splits.

A table has one row per time step and one numeric column per channel; a timestamp column is optional
(``timestamp="auto"`` drops a first column named like ``date``/``time``/``timestamp``). Splits follow the
long-term-forecasting code of Informer/Autoformer/PatchTST:

* ETT hourly (``ETTh*``): rows ``[0, 8640)`` / ``[8640, 11520)`` / ``[11520, 14400)`` (12/4/4 months);
  ETT 15-minute (``ETTm*``): 4x those; any other table: 0.7 / 0.1 / 0.2 of its rows.
* val and test windows start ``context`` rows before their border (the look-back may reach into the
  previous part; targets never do).
* the scaler (mean and population std per column) is fitted on the training part only; every split is
  standardised with it, and MSE/MAE are reported on that scale.

Policies for bad input (each tested):
    * a non-numeric column (other than the timestamp): ``ValueError`` naming it; select ``columns=[...]``.
    * missing values (NaN/empty cells): ``missing="error"`` (default) names the first rows and columns;
      ``missing="interpolate"`` fills them linearly in time (edges with the nearest value) before scaling.
    * a constant channel (zero variance on the training part): ``constant="keep"`` (default) leaves it
      centred with scale 1 (as scikit-learn's ``StandardScaler``) and warns, naming it; ``"error"`` raises.
    * a split shorter than ``context + horizon`` rows: ``ValueError`` with the lengths and the fix.

Samples are ``(x, y)``: ``x`` ``[C, context]`` the look-back, ``y`` ``[C, horizon]`` the future, float32.
Datasets expose ``with_horizon(h)`` (the same split with another horizon; the forecast protocol uses it),
``columns``, ``scaler_mean``/``scaler_std`` and ``model_kwargs`` (``n_vars``).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from maezoo.config import data_root
from maezoo.core.types import SPLITS, Split
from maezoo.data.sources import dataset_file_error, download_or_explain, find_shared_data, missing_dataset
from maezoo.registry import register

Borders = Literal["auto", "ett_hourly", "ett_minute", "ratio"]
Missing = Literal["error", "interpolate"]
Constant = Literal["keep", "error"]
_TIME_NAMES = ("date", "time", "timestamp", "datetime", "ds")


def resolve_path(path: str | Path) -> Path:
    """``path`` as given (absolute or from the working directory), else under the data root, else in
    ``shared/data`` beside the checkout."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    for cand in (data_root() / p, find_shared_data(str(path))):
        if cand is not None and Path(cand).is_file():
            return Path(cand)
    url = DOWNLOADS.get(p.as_posix())
    if url is None:
        raise missing_dataset(f"the series table {path}", data_root() / p, None)
    return _download(url, data_root() / p)


#: official homes of the tables recipes name by their data-root path (users with a network get them once)
DOWNLOADS = {f"ett/{n}.csv": f"https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{n}.csv"
             for n in ("ETTh1", "ETTh2", "ETTm1", "ETTm2")}


def _download(url: str, dest: Path) -> Path:
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        download_or_explain(dest.name, dest, url, lambda: urllib.request.urlretrieve(url, tmp))
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


@dataclass
class SeriesTable:
    """A loaded table: ``values`` ``[T, C]`` float64, the channel names and the timestamps (if any)."""

    values: np.ndarray
    columns: list[str]
    timestamps: np.ndarray | None = None


def read_table(path: str | Path, columns: list[str] | None = None, timestamp: str | None = "auto") -> SeriesTable:
    """Read a CSV or Parquet table of one row per step (see the module docstring for the policies).

    ``timestamp``: ``"auto"`` (a first column named like a date), a column name, or ``None`` (no timestamp).
    """
    p = resolve_path(path)
    return _read_cached(str(p), p.stat().st_mtime_ns, tuple(columns) if columns else None, timestamp)


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, _mtime: int, columns: tuple[str, ...] | None, timestamp: str | None) -> SeriesTable:
    import pandas as pd

    p = Path(path)
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p)
    except ImportError as exc:
        raise dataset_file_error(p, f"cannot read Parquet here ({exc})", "pip install pyarrow, or convert it to CSV") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise dataset_file_error(p, f"not a readable table ({type(exc).__name__}: {exc})",
                                 "give a CSV/Parquet file with one row per time step") from None
    if df.empty:
        raise dataset_file_error(p, "the table has no rows", "give a table with one row per time step")
    stamps = None
    if timestamp == "auto":
        timestamp = str(df.columns[0]) if str(df.columns[0]).lower() in _TIME_NAMES else None
    if timestamp is not None:
        if timestamp not in df.columns:
            raise ValueError(f"{p}: no timestamp column {timestamp!r}; columns are {list(df.columns)} "
                             "(set data.args.timestamp to one of them, or null)")
        stamps = df[timestamp].to_numpy()
        df = df.drop(columns=[timestamp])
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"{p}: no column(s) {missing}; columns are {list(df.columns)}")
        df = df[list(columns)]
    bad = [str(c) for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ValueError(f"{p}: non-numeric column(s) {bad}; select the numeric channels with "
                         f"data.args.columns=[...] (or name the timestamp column with data.args.timestamp)")
    if df.shape[1] == 0:
        raise ValueError(f"{p}: no numeric column left to forecast")
    return SeriesTable(df.to_numpy(dtype=np.float64), [str(c) for c in df.columns], stamps)


def split_borders(kind: Borders, num_rows: int, name: str = "") -> tuple[int, int, int]:
    """Ends of the train / val / test parts (rows), by the field's conventions (module docstring)."""
    if kind == "auto":
        stem = Path(name).name.lower()
        kind = "ett_hourly" if stem.startswith("etth") else "ett_minute" if stem.startswith("ettm") else "ratio"
    if kind in ("ett_hourly", "ett_minute"):
        k = 4 if kind == "ett_minute" else 1
        ends = (12 * 30 * 24 * k, 16 * 30 * 24 * k, 20 * 30 * 24 * k)
        if num_rows < ends[2]:
            raise ValueError(f"{name or 'series'}: {num_rows} rows, but the {kind} split needs {ends[2]}; "
                             "use data.args.borders=ratio for other tables")
        return ends
    if kind != "ratio":
        raise ValueError(f"borders must be 'auto', 'ett_hourly', 'ett_minute' or 'ratio', got {kind!r}")
    train, test = int(num_rows * 0.7), int(num_rows * 0.2)
    return train, num_rows - test, num_rows


def fill_missing(values: np.ndarray, columns: list[str], policy: Missing, name: str = "series") -> np.ndarray:
    """Apply the missing-value policy to ``[T, C]`` values (``error``: raise naming rows and columns)."""
    nan = ~np.isfinite(values)
    if not nan.any():
        return values
    rows, cols = np.nonzero(nan)
    if policy == "error":
        where = ", ".join(f"row {r} ({columns[c]})" for r, c in list(zip(rows, cols))[:5])
        raise ValueError(f"{name}: {int(nan.sum())} missing or infinite value(s), first at {where}; clean the table "
                         "or set data.args.missing=interpolate (linear in time, nearest value at the edges)")
    if policy != "interpolate":
        raise ValueError(f"missing must be 'error' or 'interpolate', got {policy!r}")
    out = values.copy()
    t = np.arange(len(out))
    for c in range(out.shape[1]):
        ok = ~nan[:, c]
        if not ok.any():
            raise ValueError(f"{name}: column {columns[c]!r} has no finite value; drop it with data.args.columns")
        out[~ok, c] = np.interp(t[~ok], t[ok], out[ok, c])
    return out


def fit_scaler(train: np.ndarray, columns: list[str], constant: Constant = "keep") -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std per column of the training part; a zero std becomes 1 (policy ``keep``)."""
    mean, std = train.mean(0), train.std(0)
    flat = std < 1e-12
    if flat.any():
        names = [columns[i] for i in np.nonzero(flat)[0]]
        if constant == "error":
            raise ValueError(f"constant channel(s) {names} (zero variance on the training part); drop them with "
                             "data.args.columns or set data.args.constant=keep")
        warnings.warn(f"constant channel(s) {names} on the training part: centred, scale 1", stacklevel=3)
        std = np.where(flat, 1.0, std)
    return mean, std


class ForecastWindows(Dataset):
    """Sliding windows ``(x [C, context], y [C, horizon])`` over one split of a standardised series.

    Shapes:
        series: ``[C, T_part]`` (standardised; ``T_part`` includes the look-back rows before the border)
    """

    def __init__(self, series: Tensor, context: int, horizon: int, step: int = 1, columns: list[str] | None = None,
                 scaler_mean: np.ndarray | None = None, scaler_std: np.ndarray | None = None, split: str = "") -> None:
        if context < 1 or horizon < 1 or step < 1:
            raise ValueError(f"context, horizon and step must be >= 1, got {context}, {horizon}, {step}")
        need = context + horizon
        if series.shape[1] < need:
            raise ValueError(f"the {split or 'series'} part has {series.shape[1]} steps, fewer than context {context} "
                             f"+ horizon {horizon} = {need}; use a shorter context/horizon or a longer series")
        self.series, self.context, self.horizon, self.step = series, int(context), int(horizon), int(step)
        self.columns = list(columns or [str(i) for i in range(series.shape[0])])
        self.scaler_mean, self.scaler_std, self.split = scaler_mean, scaler_std, split
        self.model_kwargs = {"n_vars": int(series.shape[0])}

    def __len__(self) -> int:
        return (self.series.shape[1] - self.context - self.horizon) // self.step + 1

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range ({len(self)})")
        s = (i % len(self)) * self.step
        return self.series[:, s:s + self.context], self.series[:, s + self.context:s + self.context + self.horizon]

    @property
    def channels(self) -> int:
        return int(self.series.shape[0])

    def with_horizon(self, horizon: int) -> ForecastWindows:
        """The same split and look-back with another forecast horizon."""
        return ForecastWindows(self.series, self.context, horizon, self.step, self.columns, self.scaler_mean,
                               self.scaler_std, self.split)


def forecast_split(
    values: np.ndarray, columns: list[str], split: Split, context: int, horizon: int,
    borders: tuple[int, int, int], constant: Constant = "keep", step: int = 1, name: str = "series",
) -> ForecastWindows:
    """Windows of one split of ``[T, C]`` values (scaler fitted on the training part)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    b1, b2, b3 = borders
    mean, std = fit_scaler(values[:b1], columns, constant)
    start, end = {"train": (0, b1), "val": (b1 - context, b2), "test": (b2 - context, b3)}[split]
    if start < 0:
        raise ValueError(f"{name}: context {context} is longer than the training part ({b1} rows); use a shorter "
                         "context or a longer series")
    part = (values[start:end] - mean) / std
    series = torch.from_numpy(np.ascontiguousarray(part.T)).float()
    return ForecastWindows(series, context, horizon, step, columns, mean, std, split)


@register("dataset", "series")
def series(
    split: Split = "train",
    transform: str = "eval",
    path: str = "ett/ETTh1.csv",
    context: int = 512,
    horizon: int = 96,
    columns: list[str] | None = None,
    timestamp: str | None = "auto",
    borders: Borders = "auto",
    missing: Missing = "error",
    constant: Constant = "keep",
    step: int = 1,
) -> ForecastWindows:
    """Forecasting windows over a CSV/Parquet series (defaults: ETTh1, look-back 512, horizon 96).

    ``step``: stride between consecutive windows (1 is the convention; larger values thin a split).
    ``transform`` is accepted for the recipe dialect; series windows are never augmented.
    """
    table = read_table(path, columns, timestamp)
    values = fill_missing(table.values, table.columns, missing, str(path))
    return forecast_split(values, table.columns, split, context, horizon,
                          split_borders(borders, len(values), str(path)), constant, step, str(path))


def _series_model_kwargs(path: str, columns: list[str] | None, timestamp: str | None, **_: Any) -> dict[str, Any]:
    return {"n_vars": len(read_table(path, columns, timestamp).columns)}  # the table only, no windows


series.model_kwargs = _series_model_kwargs  # type: ignore[attr-defined]
