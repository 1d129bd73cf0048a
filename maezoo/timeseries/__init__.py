"""Time-series modality: patch tokenizer with RevIN, PatchTST and TSFormer builders, forecasting datasets
(CSV/Parquet with the standard splits; METR-LA / PEMS-BAY ``.h5`` and PEMS0x ``.npz`` traffic) and figures.

Forecasting is evaluated by the modality-agnostic protocols in :mod:`maezoo.eval.forecast`.
"""

from maezoo.timeseries import data, hf_compat, models, traffic, visualize  # noqa: F401  (registers datasets, builders, figures)
from maezoo.timeseries.data import ForecastWindows, read_table, split_borders
from maezoo.timeseries.models import PatchLinearDecoder, series_mae
from maezoo.timeseries.tokenizer import SeriesPatchTokenizer
from maezoo.timeseries.visualize import save_reconstruction_figure

__all__ = ["ForecastWindows", "PatchLinearDecoder", "SeriesPatchTokenizer", "read_table", "save_reconstruction_figure", "series_mae", "split_borders"]
