"""The crop-yield LightningDataModule: region x year yields with optional daily weather (aggregated over the
growing season) and tabular covariates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.io import read_table
from sectorkit.domains.agriculture import sample
from sectorkit.domains.agriculture.crop_yield.baselines import trend_predictions
from sectorkit.domains.agriculture.features import season_aggregates
from sectorkit.domains.agriculture.readers import read_series_table, validate_season_weather, validate_yield


class YieldDataModule(SectorDataModule):
    """Region x year yields with optional daily weather (aggregated over the growing season) and covariates.

    Features: season aggregates (when weather is given), tabular ``covariates``, the centred year and the
    region's linear trend (fit on all years before the test span). Splits by year: the last ``test_years``
    are the test span (predicted from earlier years only: one expanding-window cut), the ``val_years``
    before them serve early stopping. ``path=None`` uses the synthetic crop-response sample (options in
    ``synthetic``). ``problem`` is the config key the agriculture hooks dispatch on (always ``yield`` here).
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
        synthetic: dict[str, Any] | None = None,
        problem: str = "yield",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("batch_size", 32)
        super().__init__(path=path, **kwargs)
        if problem != "yield":
            raise ConfigError(f"data.problem={problem!r}: the YieldDataModule forecasts crop yield (data.problem=yield)")
        if self.network is not None and self.network.input_type != "season_features":
            raise ConfigError(
                f"model.net._target_: {self.network.__name__} trains on {self.network.input_type!r} batches, not on "
                "season features; choose the yield model (model=yield_mlp) or weather data (data=weather)"
            )
        self.weather_path, self.use_weather = weather_path, use_weather
        self.region_column, self.year_column, self.target = region_column, year_column, target
        self.covariates, self.val_years, self.test_years = list(covariates), int(val_years), int(test_years)
        self.synthetic = dict(synthetic or {})
        self.feature_names: list[str] = []
        self.feature_mean: np.ndarray | None = None
        self.feature_std: np.ndarray | None = None
        self.year_center = 0.0
        self.y_mean, self.y_std = 0.0, 1.0
        self.frames: dict[str, pd.DataFrame] = {}

    def load_tables(self, allow_missing: bool = False) -> pd.DataFrame:
        """Yields joined with season aggregates (when weather is used); rows without a yield kept only for predict."""
        if self.path is None:
            yields, weather = sample.synthetic_yield(**self.synthetic)
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
        return self.dataloader(self.tensor_dataset(self.predict_split()))

    def predict_split(self) -> str:
        """What ``predict`` forecasts: the file's next season once ``setup('predict')`` has read a file, else the
        test years."""
        return "predict" if "predict" in self.frames else "test"

    def model_kwargs(self) -> dict[str, Any]:
        return {"n_features": len(self.feature_names) + 1, "y_mean": self.y_mean, "y_std": self.y_std}

    def predict_frame(self, outputs: Sequence[Any], stage: str) -> pd.DataFrame:
        key = self.predict_split() if stage == "predict" else "test"
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
