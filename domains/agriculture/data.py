"""LightningDataModules: daily weather windows and region x year yield tables.

Readers and schema checks live in :mod:`sectorkit.domains.agriculture.readers`; windows and scaling in
:mod:`sectorkit.domains.agriculture.windows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.io import read_table, save_figure
from sectorkit.domains.agriculture import sample
from sectorkit.domains.agriculture.baselines import trend_predictions
from sectorkit.domains.agriculture.features import season_aggregates
from sectorkit.domains.agriculture.metrics import QUANTILES
from sectorkit.domains.agriculture.readers import (
    read_series_table,
    validate_season_weather,
    validate_series,
    validate_yield,
)
from sectorkit.domains.agriculture.windows import (
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
    a series without one sees a constant zero there, its neutral scaled value.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(path=path, **kwargs)
        if lookback < 14 or horizon < 1:
            raise ConfigError(
                f"data.lookback={lookback} / data.horizon={horizon}: expected lookback >= 14 and horizon >= 1"
            )
        self.stations, self.target, self.covariates = list(stations), target, list(covariates)
        self.optional_covariates = [c for c in optional_covariates if c not in (target, *covariates)]
        self.id_column, self.date_column = id_column, date_column
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
                raw, source = sample.synthetic_weather(**self.synthetic), "synthetic sample"
            else:
                raw, source = sample.sample_weather(self.stations), f"bundled stations {self.stations}"
            id_col, date_col = "series_id", "date"
        else:
            raw, source, id_col, date_col = (
                read_series_table(self.require_path(), self.id_column),
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
        self.predicted_stage = "predict" if "predict" in self.origins else "test"
        return self.dataloader(self.dataset(self.predicted_stage))

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

    def predict_frame(self, outputs: Sequence[Any], stage: str) -> pd.DataFrame:
        """One row per series, forecast origin and horizon with the quantiles (and the actual on ``test``)."""
        key = "predict" if stage == "predict" and "predict" in self.origins else "test"
        key = getattr(self, "predicted_stage", key)
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
        elif self.output_dir is not None:
            from sectorkit.domains.agriculture.report import forecast_figure

            save_figure(forecast_figure(self, frame), self.output_dir / "forecast.png")
        return frame

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.to_state()} if self.stats is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("stats") is not None:
            self.stats = SeriesStats.from_state(state_dict["stats"])


class YieldDataModule(SectorDataModule):
    """Region x year yields with optional daily weather (aggregated over the growing season) and covariates.

    Features: season aggregates (when weather is given), tabular ``covariates``, the centred year and the
    region's linear trend (fit on all years before the test span). Splits by year: the last ``test_years``
    are the test span (predicted from earlier years only: one expanding-window cut), the ``val_years``
    before them serve early stopping. ``path=None`` uses the synthetic crop-response sample.
    """

    def __init__(
        self,
        path: str | None = None,
        weather_path: str | None = None,
        use_weather: bool = True,
        region_column: str = "region",
        year_column: str = "year",
        target: str = "yield",
        covariates: Sequence[str] = (),
        val_years: int = 3,
        test_years: int = 5,
        sample_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("batch_size", 32)
        super().__init__(path=path, **kwargs)
        self.weather_path, self.use_weather = weather_path, use_weather
        self.region_column, self.year_column, self.target = region_column, year_column, target
        self.covariates, self.val_years, self.test_years = list(covariates), int(val_years), int(test_years)
        self.sample_options = dict(sample_options or {})
        self.feature_names: list[str] = []
        self.feature_mean: np.ndarray | None = None
        self.feature_std: np.ndarray | None = None
        self.year_center = 0.0
        self.y_mean, self.y_std = 0.0, 1.0
        self.frames: dict[str, pd.DataFrame] = {}

    def load_tables(self, allow_missing: bool = False) -> pd.DataFrame:
        """Yields joined with season aggregates (when weather is used); rows without a yield kept only for predict."""
        if self.path is None:
            yields, weather = sample.synthetic_yield(**self.sample_options)
            source = "synthetic yield sample"
        else:
            source = str(self.require_path())
            raw = read_table(self.path, "yield table")
            if allow_missing and self.target in raw.columns:
                raw = raw.assign(**{self.target: raw[self.target].fillna(-np.inf)})
            yields = validate_yield(raw, source, self.region_column, self.year_column, self.target, self.covariates)
            yields["yield"] = yields["yield"].replace(-np.inf, np.nan)
            weather = None
            if self.weather_path:
                wraw = read_series_table(self.weather_path, self.region_column)
                weather = validate_season_weather(wraw, str(self.weather_path), self.region_column)
        if weather is not None and self.use_weather:
            agg = season_aggregates(weather)
            merged = yields.merge(agg, on=["region", "year"], how="left")
            weather_cols = [c for c in agg.columns if c not in ("region", "year")]
            missing = merged[weather_cols].isna().any(axis=1)
            if missing.any():
                row = merged.loc[missing].iloc[0]
                raise DataError(
                    f"{source}: no complete growing-season weather for region {row['region']!r} "
                    f"year {row['year']} (April-September needed)"
                )
            self.feature_names = weather_cols + self.covariates
            return merged
        self.feature_names = list(self.covariates)
        return yields

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.path is not None:
            trained_on = list(self.feature_names)
            frame = self.load_tables(allow_missing=True)
            if self.feature_mean is not None and self.feature_names != trained_on:
                raise DataError(
                    f"{self.path}: features {self.feature_names} differ from those the model was trained "
                    f"on {trained_on} (check data.weather_path, data.use_weather and data.covariates)"
                )
            history = frame[frame["yield"].notna()]
            target_rows = frame[frame["yield"].isna()]
            if target_rows.empty:
                if self.feature_names:
                    raise DataError(
                        f"{self.path}: no rows with an empty {self.target!r} to forecast; add next season's "
                        "rows (with their covariates / weather) and leave the yield blank"
                    )
                nxt = history.groupby("region")["year"].max() + 1
                target_rows = pd.DataFrame({"region": nxt.index, "year": nxt.to_numpy(), "yield": np.nan})
            self.frames["predict"] = self._with_trend(history, target_rows)
            self.frames["history"] = history
            return
        if self.frames.get("test") is not None:
            return
        frame = self.load_tables()
        years = np.sort(frame["year"].unique())
        if len(years) < self.val_years + self.test_years + 3:
            raise DataError(
                f"yield table has {len(years)} years; need at least val_years + test_years + 3 = "
                f"{self.val_years + self.test_years + 3}"
            )
        test_start, val_start = years[-self.test_years], years[-self.test_years - self.val_years]
        history = frame[frame["year"] < test_start]
        self.frames = {
            "train": frame[frame["year"] < val_start],
            "val": frame[(frame["year"] >= val_start) & (frame["year"] < test_start)],
            "test": frame[frame["year"] >= test_start],
        }
        self.frames = {k: self._with_trend(history, v) for k, v in self.frames.items()}
        if self.feature_mean is None:
            train = self.frames["train"]
            self.year_center = float(train["year"].mean())
            x = self._raw_features(train)
            self.feature_mean, self.feature_std = x.mean(0), np.maximum(x.std(0), 1e-6)
            self.y_mean, self.y_std = float(train["yield"].mean()), float(max(train["yield"].std(), 1e-6))

    def _with_trend(self, history: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
        return rows.assign(trend=trend_predictions(history, rows)).reset_index(drop=True)

    def _raw_features(self, frame: pd.DataFrame) -> np.ndarray:
        cols = [frame[c].to_numpy(float) for c in self.feature_names] + [
            frame["year"].to_numpy(float) - self.year_center
        ]
        return np.column_stack(cols)

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        """Standardised feature matrix (statistics of the training years)."""
        return ((self._raw_features(frame) - self.feature_mean) / self.feature_std).astype(np.float32)

    def tensor_dataset(self, stage: str) -> Dataset:
        frame = self.frames[stage]
        return _DictDataset(
            features=torch.from_numpy(self.features(frame)),
            trend=torch.as_tensor(frame["trend"].to_numpy(np.float32)),
            target=torch.as_tensor(frame["yield"].fillna(0).to_numpy(np.float32)),
        )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader(self.tensor_dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader(self.tensor_dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.dataloader(self.tensor_dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        self.predicted_stage = "predict" if "predict" in self.frames else "test"
        return self.dataloader(self.tensor_dataset(self.predicted_stage))

    def model_kwargs(self) -> dict[str, Any]:
        return {"n_features": len(self.feature_names) + 1, "y_mean": self.y_mean, "y_std": self.y_std}

    def predict_frame(self, outputs: Sequence[Any], stage: str) -> pd.DataFrame:
        key = "predict" if stage == "predict" and "predict" in self.frames else "test"
        key = getattr(self, "predicted_stage", key)
        frame = self.frames[key]
        out = pd.DataFrame(
            {
                "region": frame["region"],
                "year": frame["year"],
                "predicted_yield": torch.cat([torch.as_tensor(o) for o in outputs]).cpu().numpy(),
                "trend": frame["trend"],
            }
        )
        if key == "test":
            out["actual"] = frame["yield"].to_numpy()
        elif self.output_dir is not None and "history" in self.frames:
            from sectorkit.domains.agriculture.report import yield_forecast_figure

            save_figure(yield_forecast_figure(self.frames["history"], out), self.output_dir / "forecast.png")
        return out

    def state_dict(self) -> dict[str, Any]:
        if self.feature_mean is None:
            return {}
        return {
            "feature_names": list(self.feature_names),
            "feature_mean": torch.as_tensor(self.feature_mean),
            "feature_std": torch.as_tensor(self.feature_std),
            "year_center": self.year_center,
            "y_mean": self.y_mean,
            "y_std": self.y_std,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self.feature_names = list(state_dict["feature_names"])
        self.feature_mean = np.asarray(state_dict["feature_mean"])
        self.feature_std = np.asarray(state_dict["feature_std"])
        self.year_center, self.y_mean, self.y_std = state_dict["year_center"], state_dict["y_mean"], state_dict["y_std"]


class _DictDataset(torch.utils.data.Dataset):
    """Rows of equally long tensors returned as dicts (the batch format of the core module)."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}
