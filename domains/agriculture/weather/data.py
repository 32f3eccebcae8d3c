"""The weather LightningDataModule: a validated daily table -> per-series scaling fitted on the training span ->
lazy lookback/horizon windows.

Readers and schema checks live in :mod:`sectorkit.domains.agriculture.readers`; windows and scaling in
:mod:`sectorkit.domains.agriculture.weather.windows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.progress import phase
from sectorkit.domains.agriculture import sample
from sectorkit.domains.agriculture.metrics import QUANTILES
from sectorkit.domains.agriculture.readers import read_series_table, validate_series
from sectorkit.domains.agriculture.weather.windows import (
    Panel,
    SeriesStats,
    WindowDataset,
    build_panel,
    fit_stats,
    future_dates,
    latest_origins,
    stage_origins,
    train_end_rows,
)


class WeatherDataModule(SectorDataModule):
    """Daily multi-series weather: validated long table -> per-series scaling (train span) -> lazy windows.

    ``path=None`` uses the bundled stations listed in ``stations`` (or the synthetic generator when
    ``stations`` is ``[synthetic]``). Splits are chronological per series (``split`` = train, val
    fractions; the rest is the test span, backtested with one forecast origin per day).
    ``optional_covariates``: inputs only some series have (a sensor some stations lack, e.g. Seattle's wind);
    a series without one sees a constant zero there, its neutral scaled value. ``date_format``: how the file's
    dates are written (e.g. ``%d/%m/%Y``); unset, it is inferred, and dates that read both day-first and
    month-first are an error. ``problem`` is the config key
    the agriculture hooks dispatch on (always ``weather`` here).
    """

    def __init__(
        self,
        path: str | None = None,
        stations: Sequence[str] = ("seattle", "champion"),
        target: str = "tmax",
        covariates: Sequence[str] = ("tmin", "precip"),
        optional_covariates: Sequence[str] = (),
        id_column: str = "series_id",
        date_column: str = "date",
        date_format: str | None = None,
        lookback: int = 56,
        horizon: int = 7,
        split: Sequence[float] = (0.6, 0.15),
        fill_gaps: str | None = None,
        max_gap: int = 3,
        units_column: str = "units",
        expected_units: str | None = "degC",
        valid_range: Sequence[float] | None = (-70.0, 60.0),
        synthetic: dict[str, Any] | None = None,
        quantiles: Sequence[float] = QUANTILES,
        balance_series: bool = False,
        problem: str = "weather",
        **kwargs: Any,
    ) -> None:
        super().__init__(path=path, **kwargs)
        self.problem = problem  # what the agriculture hooks dispatch on
        if problem != "weather":
            raise ConfigError(f"data.problem={problem!r}: the WeatherDataModule forecasts weather (data.problem=weather)")
        if self.network is not None and self.network.input_type != "windows":
            raise ConfigError(
                f"model.net._target_: {self.network.__name__} trains on {self.network.input_type!r} batches, not on weather "
                "windows; choose a weather model (model=gru|dlinear|nhits|patchtst) or the yield data (data=yield)"
            )
        self.stations, self.target, self.covariates = list(stations), target, list(covariates)
        self.optional_covariates = [c for c in optional_covariates if c not in (target, *covariates)]
        self.id_column, self.date_column, self.date_format = id_column, date_column, date_format
        self.lookback, self.horizon, self.split = int(lookback), int(horizon), list(split)
        self.fill_gaps, self.max_gap = fill_gaps, max_gap
        self.units_column, self.expected_units = units_column, expected_units
        self.valid_range = list(valid_range) if valid_range is not None else None
        self.synthetic = dict(synthetic or {})
        self.quantiles = tuple(quantiles)
        self.balance_series = balance_series
        self.stats: SeriesStats | None = None
        self.panel: Panel | None = None
        self.origins: dict[str, np.ndarray] = {}

    # --- loading ------------------------------------------------------------------------------
    def load_frame(self, min_length: int) -> pd.DataFrame:
        """The validated long frame from ``path`` or the built-in sample."""
        if self.path is None:
            if list(self.stations) == ["synthetic"]:
                with phase("generating the synthetic weather sample"):
                    raw, source = sample.synthetic_weather(**self.synthetic), "synthetic sample"
            else:
                with phase(f"reading the bundled stations {', '.join(self.stations)}"):
                    raw, source = sample.sample_weather(self.stations), f"bundled stations {self.stations}"
            id_col, date_col = "series_id", "date"
        else:
            raw, source, id_col, date_col = (
                read_series_table(self.require_path(), self.id_column, [self.target, *self.inputs]),
                str(self.path),
                self.id_column,
                self.date_column,
            )
        return validate_series(
            raw,
            source,
            self.target,
            self.covariates,
            id_col,
            date_col,
            self.fill_gaps,
            self.max_gap,
            min_length,
            self.units_column,
            self.expected_units,
            self.valid_range,
            self.optional_covariates,
            self.date_format if self.path is not None else None,
        )

    @property
    def inputs(self) -> list[str]:
        """The covariates fed to the network, required ones first."""
        return [*self.covariates, *self.optional_covariates]

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            frame = self.load_frame(self.lookback)
            if self.stats is None:
                raise ConfigError("predict needs the scalers fitted at training time (load them from the checkpoint)")
            self.panel = build_panel(frame, self.stats, self.target, self.inputs)
            self.origins["predict"] = latest_origins(self.panel, self.lookback)
            return
        if self.panel is not None and self.origins.get("test") is not None:
            return
        frame = self.load_frame(self.lookback + self.horizon)
        lengths = frame.groupby("series_id", sort=False).size().to_numpy()
        cuts = train_end_rows(lengths, self.split)
        short = np.flatnonzero(cuts[:, 0] < self.lookback + self.horizon + 1)
        if len(short):
            raise DataError(
                f"series {frame['series_id'].unique()[short[0]]!r}: its training span ({cuts[short[0], 0]} days) "
                f"is shorter than lookback + horizon = {self.lookback + self.horizon}"
            )
        if self.stats is None:
            self.stats = fit_stats(frame, self.target, self.inputs, cuts[:, 0])
        self.panel = build_panel(frame, self.stats, self.target, self.inputs)
        self.origins.update(stage_origins(self.panel, self.lookback, self.horizon, cuts))

    # --- loaders --------------------------------------------------------------------------------
    def dataset(self, stage: str) -> WindowDataset:
        return WindowDataset(
            self.panel, self.origins[stage], self.lookback, self.horizon, with_target=stage != "predict"
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training windows; with ``balance_series`` every series is drawn equally often, so a long
        station does not drown a short one."""
        dataset = self.dataset("train")
        if not self.balance_series:
            return self.dataloader(dataset, shuffle=True)
        series = self.panel.series_index[self.origins["train"]]
        weights = 1.0 / np.bincount(series)[series]
        generator = torch.Generator().manual_seed(self.seed + (self.trainer.current_epoch if self.trainer else 0))
        sampler = WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(dataset), generator=generator)
        return self.dataloader(dataset, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.dataloader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        return self.dataloader(self.dataset(self.predict_split()))

    def predict_split(self) -> str:
        """What ``predict`` forecasts: the next days after each series' end once ``setup('predict')`` has read
        the data, else the test span."""
        return "predict" if "predict" in self.origins else "test"

    # --- hooks ----------------------------------------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        return {
            "lookback": self.lookback,
            "horizon": self.horizon,
            "n_past": int(self.panel.past.shape[1]),
            "n_future": int(self.panel.future.shape[1]),
            "quantiles": list(self.quantiles),
            "n_series": len(self.stats.series),
            "covariates": self.inputs,
        }

    def data_summary(self) -> dict[str, Any]:
        """Per split: forecast origins (windows), the series they come from and the first and last forecast date
        (origins in the test span are backtested one per day); the target, its units and each series' days."""
        splits = {}
        for name, origins in self.origins.items():
            if name == "predict" or not len(origins):
                continue
            targets = self.panel.dates[np.concatenate([origins + 1, origins + self.horizon])]
            splits[name] = {"forecast origins": len(origins), "series": len(np.unique(self.panel.series_index[origins])),
                            "forecast dates from": str(np.datetime_as_string(targets.min(), unit="D")),
                            "to": str(np.datetime_as_string(targets.max(), unit="D"))}
        lengths = {str(name): int(n) for name, n in zip(self.stats.series, self.panel.lengths)} if self.panel is not None else {}
        facts = {"target": f"{self.target} ({self.expected_units or 'units not stated'}), {self.horizon}-day horizon, "
                           f"quantiles {', '.join(f'{q:g}' for q in self.quantiles)}",
                 "days per series": ", ".join(f"{name} {n}" for name, n in lengths.items()),
                 "splits": f"chronological within each series (data.split={self.split}: train and validation fractions, the "
                           "rest is tested), so the date ranges below pool series of different lengths"}
        return {"source": str(self.path) if self.path else f"built-in sample ({', '.join(self.stations)})", "facts": facts, "splits": splits}

    def training_state(self) -> dict[str, Any]:
        """The training span a model's ridge reference is fitted on: the panel and its training origins."""
        return {"panel": self.panel, "train_origins": self.origins["train"]}

    def predict_frame(self, outputs: Sequence[Any], stage: str) -> pd.DataFrame:
        """One row per series, forecast origin and horizon with the quantiles (and the actual on ``test``)."""
        key = self.predict_split() if stage == "predict" else "test"
        preds = torch.cat([torch.as_tensor(o) for o in outputs]).cpu().numpy()
        origins = self.origins[key]
        n, h = preds.shape[:2]
        frame = pd.DataFrame(
            {
                "series_id": np.repeat(np.asarray(self.stats.series)[self.panel.series_index[origins]], h),
                "origin_date": np.repeat(self.panel.dates[origins], h),
                "date": future_dates(self.panel, origins, h).ravel(),
                "horizon": np.tile(np.arange(1, h + 1), n),
            }
        )
        for j, q in enumerate(self.quantiles):
            frame[f"q{q:g}"] = preds[..., j].ravel()
        if key == "test":
            frame["actual"] = self.panel.target[origins[:, None] + np.arange(1, h + 1)].ravel()
        return frame

    def export_contract(self) -> dict[str, Any]:
        """The exported graph's inputs: scaled windows. The per-series scaling of the inputs stays outside the graph
        (the windows are built from the series table, where it is one vectorised step; the graph would need the series'
        raw columns and its climatology); the unscaling of the forecasts with ``loc``/``scale`` is inside it."""
        stats = self.stats
        columns = [self.target, *self.inputs]
        return {
            "past": {"dtype": "float32", "shape": ["batch", self.lookback, len(columns) + 3],
                     "columns": [f"{c}_z" for c in columns] + ["climatology_z", "day_of_year_sin", "day_of_year_cos"],
                     "preprocessing": "x_z = (x - series_loc[series][column]) / series_scale[series][column] (0 where a series lacks a covariate); "
                                      "climatology_z = (climatology[series, day_of_year - 1] - series_loc[series][0]) / series_scale[series][0]; "
                                      "day of year as sin/cos of 2 pi (doy - 1) / 365.25; the last lookback days, oldest first",
                     "in_graph": False},
            "future": {"dtype": "float32", "shape": ["batch", self.horizon, 3], "columns": ["climatology_z", "day_of_year_sin", "day_of_year_cos"],
                       "preprocessing": "the same known-ahead features for the horizon days after the window", "in_graph": False},
            "loc": {"dtype": "float32", "shape": ["batch"], "preprocessing": f"series_loc[series][0] (the target {self.target!r}'s location)"},
            "scale": {"dtype": "float32", "shape": ["batch"], "preprocessing": f"series_scale[series][0] (the target {self.target!r}'s scale)"},
            "series": {"dtype": "int64", "shape": ["batch"], "preprocessing": "the series' position in series_ids"},
            "outputs": {"quantiles": f"(batch, {self.horizon}, {len(self.quantiles)}) forecasts of {self.target!r} in its own units, "
                                     f"quantiles {list(self.quantiles)}"},
            "series_ids": list(stats.series) if stats else [], "columns_order": columns,
            "series_loc": stats.loc.tolist() if stats else [], "series_scale": stats.scale.tolist() if stats else [],
            "climatology": "the checkpoint's data state (clim: per series, 366 days)",
        }

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.to_state()} if self.stats is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("stats") is not None:
            self.stats = SeriesStats.from_state(state_dict["stats"])
