"""Traffic sensor series in the formats TSFormer/STEP publish: METR-LA and PEMS-BAY ``.h5`` (a pandas
``HDFStore`` frame: ``df/block0_values`` ``[T, N]`` speeds, ``df/axis0`` the sensor ids) and PEMS03/04/07/08
``.npz`` (``data`` ``[T, N, F]``, feature 0 the flow).

Each sensor is a channel; the windows, splits (train/val/test ratios, val/test windows starting ``context``
rows before their border) and the scaler fitted on the training part are those of
:mod:`maezoo.timeseries.data`. The ``.h5`` files are read with ``h5py`` (no PyTables needed).
Zeros in METR-LA/PEMS-BAY mark missing readings; STEP leaves them out of its metrics, maezoo keeps them
(``zeros="keep"``) or interpolates them (``zeros="interpolate"``), stated in the recipe.

Shapes:
    load_traffic(path) -> values ``[T, N]`` float64 and N sensor names
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from maezoo.data.sources import dataset_file_error
from maezoo.registry import register
from maezoo.timeseries.data import Constant, ForecastWindows, Split, fill_missing, forecast_split, resolve_path


def load_traffic(path: str | Path, feature: int = 0) -> tuple[np.ndarray, list[str]]:
    """``[T, N]`` values and sensor names from a METR-LA/PEMS-BAY ``.h5`` or a PEMS0x ``.npz``."""
    p = resolve_path(path)
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p) as z:
                files = list(z.files)
                arr = np.asarray(z["data"], dtype=np.float64) if "data" in files else None
        except (OSError, ValueError) as exc:
            raise dataset_file_error(p, f"not a readable .npz ({exc})", "download the file again") from None
        if arr is None:
            raise dataset_file_error(p, f"no 'data' array (found {files})",
                                     "give the PEMS0x .npz of STEP/ASTGCN (data [T, N, F])")
        if arr.ndim == 3:
            if not 0 <= feature < arr.shape[2]:
                raise ValueError(f"{p}: feature {feature} out of range; the file has {arr.shape[2]} features")
            arr = arr[:, :, feature]
        if arr.ndim != 2:
            raise dataset_file_error(p, f"'data' has shape {arr.shape}", "expected [T, N] or [T, N, F]")
        return arr, [str(i) for i in range(arr.shape[1])]
    if p.suffix.lower() not in (".h5", ".hdf5", ".hdf"):
        raise dataset_file_error(p, "unknown traffic format", "give a METR-LA/PEMS-BAY .h5 or a PEMS0x .npz")
    try:
        import h5py
    except ImportError:
        raise ImportError("reading METR-LA/PEMS-BAY .h5 files needs h5py: pip install h5py") from None
    try:
        with h5py.File(p, "r") as f:
            key = "df" if "df" in f else next(iter(f.keys()), None)
            if key is None or "block0_values" not in f[key]:
                raise dataset_file_error(p, f"no pandas frame with block0_values (keys {list(f.keys())})",
                                         "give the METR-LA/PEMS-BAY .h5 of DCRNN/STEP")
            g = f[key]
            arr = np.asarray(g["block0_values"], dtype=np.float64)
            ids = g["axis0"][()] if "axis0" in g else np.arange(arr.shape[1])
    except OSError as exc:
        raise dataset_file_error(p, f"not a readable HDF5 file ({exc})", "download the file again") from None
    names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
    return arr, names


@register("dataset", "traffic")
def traffic(
    split: Split = "train",
    transform: str = "eval",
    path: str = "traffic/metr-la.h5",
    context: int = 2016,
    horizon: int = 12,
    ratios: list[float] | None = None,
    feature: int = 0,
    zeros: Literal["keep", "interpolate"] = "keep",
    constant: Constant = "keep",
    step: int = 1,
) -> ForecastWindows:
    """Windows over a traffic file (defaults: METR-LA, STEP's 2,016-step history, 12-step horizon, 0.7/0.1/0.2).

    ``ratios``: train/val/test shares (PEMS04 in STEP: ``[0.6, 0.2, 0.2]``); ``zeros``: missing-reading policy.
    """
    values, names = load_traffic(path, feature)
    r = ratios or [0.7, 0.1, 0.2]
    if len(r) != 3 or any(v <= 0 for v in r) or abs(sum(r) - 1) > 1e-6:
        raise ValueError(f"ratios must be three positive shares summing to 1, got {r}")
    if zeros == "interpolate":
        values = fill_missing(np.where(values == 0, np.nan, values), names, "interpolate", str(path))
    else:
        values = fill_missing(values, names, "error", str(path))
    t = len(values)
    train, test = int(round(t * r[0])), int(round(t * r[2]))
    borders = (train, t - test, t)
    return forecast_split(values, names, split, context, horizon, borders, constant, step, str(path))


def _traffic_model_kwargs(path: str, feature: int, **_: Any) -> dict[str, Any]:
    return {"n_vars": len(load_traffic(path, feature)[1])}


traffic.model_kwargs = _traffic_model_kwargs  # type: ignore[attr-defined]
