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
from sectorkit.core.progress import phase
from sectorkit.domains.agriculture import sample
from sectorkit.domains.agriculture.crop_yield.baselines import trend_predictions
from sectorkit.domains.agriculture.crop_yield.protocols import Fold, make_folds
from sectorkit.domains.agriculture.features import season_aggregates
from sectorkit.domains.agriculture.readers import (
    SEASON_VALUES,
    read_series_table,
    validate_season_weather,
    validate_yield,
)


class YieldDataModule(SectorDataModule):
    """Region x year yields with optional daily weather (aggregated over the growing season) and covariates.

    Features: season aggregates (when weather is given), tabular ``covariates``, the centred year and the
    region's linear trend. ``protocol`` chooses the folds (:func:`~sectorkit.domains.agriculture.crop_yield.
    protocols.make_folds`): ``last_years`` (one fold: the last ``test_years`` years predicted from the earlier
    ones), ``expanding_window`` (one fold per year of the last ``test_years``, each from the earlier years only) or
    ``leave_one_year_out`` (one fold per year, from all the other years). Each fold keeps ``val_years`` of its
    training years for early stopping; its trend, standardisation and baselines are fitted on its own years, and
    every test row is predicted by the fold that held it out. Batches carry each row's inputs for every fold
    (``features (K, F)``, ``trend (K,)``), which folds train or validate on it (``mask (K,)``) and the fold that
    tests it (``fold``; -1 for a season no fold saw, which the model predicts with the mean of its folds).
    ``path=None`` uses the synthetic crop-response sample (options in ``synthetic``). ``problem`` is the config
    key the agriculture hooks dispatch on (always ``yield`` here).
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
        protocol: str = "last_years",
        val_years: int = 3,
        test_years: int = 5,
        date_format: str | None = None,
        synthetic: dict[str, Any] | None = None,
        problem: str = "yield",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("batch_size", 32)
        super().__init__(path=path, **kwargs)
        self.problem = problem  # what the agriculture hooks dispatch on
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
        self.protocol, self.date_format = protocol, date_format
        self.synthetic = dict(synthetic or {})
        self.feature_names: list[str] = []
        self.feature_mean: np.ndarray | None = None  # (K, F): per fold, on its training years
        self.feature_std: np.ndarray | None = None
        self.year_center = 0.0
        self.y_mean, self.y_std = [0.0], [1.0]
        self.folds: list[Fold] = []
        self.trained_protocol: str | None = None  # the protocol of a restored checkpoint
        self.frames: dict[str, pd.DataFrame] = {}
        self.fold_inputs: dict[str, dict[str, np.ndarray]] = {}

    def source(self) -> str:
        """The yield data's name in messages: the file, or the built-in sample."""
        return "synthetic yield sample" if self.path is None else str(self.path)

    def data_summary(self) -> dict[str, Any]:
        """Per split: region-years, regions, first and last year and mean yield (a row counts in train or val when
        at least one fold uses it so); the protocol, its folds and the features."""
        splits = {}
        for name in ("train", "val", "test", "predict"):
            frame = self.frames.get(name)
            if frame is None or frame.empty:
                continue
            facts: dict[str, Any] = {"region-years": len(frame), "regions": int(frame["region"].nunique()),
                                     "from year": int(frame["year"].min()), "to year": int(frame["year"].max())}
            if frame["yield"].notna().any():
                facts["mean yield"] = round(float(frame["yield"].mean()), 3)
            splits[name] = facts
        facts = {"protocol": f"{self.protocol}, {len(self.folds)} fold(s)",
                 "features": ", ".join(self.feature_names) or "trend only"}
        return {"source": self.source(), "facts": facts, "splits": splits}

    def load_tables(self, allow_missing: bool = False, rows: pd.DataFrame | None = None, source: str = "request") -> pd.DataFrame:
        """Yields joined with season aggregates (when weather is used); rows without a yield kept only for predict.
        ``rows``: a yield table held in memory in ``path``'s layout (a server's request, named ``source``) instead of ``path``."""
        if self.path is None and rows is None:
            with phase("generating the crop-yield sample (yields and season weather)"):
                yields, weather = sample.synthetic_yield(**self.synthetic)
        else:
            if rows is None:
                source = str(self.require_path())
            raw = read_table(self.path, "yield table") if rows is None else rows
            yields = validate_yield(
                raw, source, self.region_column, self.year_column, self.target, self.covariates, allow_missing
            )
            weather = None
            if self.weather_path:
                wraw = read_series_table(self.weather_path, self.region_column, SEASON_VALUES)
                weather = validate_season_weather(
                    wraw, str(self.weather_path), self.region_column, date_format=self.date_format
                )
        if weather is not None and self.use_weather:
            agg = season_aggregates(weather)
            merged = yields.merge(agg, on=["region", "year"], how="left")
            weather_cols = [c for c in agg.columns if c not in ("region", "year")]
            missing = merged[weather_cols].isna().any(axis=1)
            if missing.any():
                row = merged.loc[missing].iloc[0]
                raise DataError(
                    f"{self.source()}: no complete growing-season weather for region {row['region']!r} "
                    f"year {row['year']} (April-September needed)"
                )
            self.feature_names = weather_cols + self.covariates
            return merged
        self.feature_names = list(self.covariates)
        return yields

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.path is not None:
            self.setup_predict(read_table(self.require_path(), "yield table"), str(self.path))
            return
        if self.frames.get("test") is not None:
            return
        frame = self.load_tables().reset_index(drop=True)
        folds = make_folds(frame["year"], self.protocol, self.val_years, self.test_years, self.source())
        self._check_trained_folds(folds)
        self.folds = folds
        year = frame["year"]
        train = np.column_stack([year.isin(f.train_years).to_numpy() for f in folds])  # (N, K)
        val = np.column_stack([year.isin(f.val_years).to_numpy() for f in folds])
        test_fold = np.full(len(frame), -1, dtype=np.int64)
        for k, fold in enumerate(folds):
            test_fold[year.isin(fold.test_years).to_numpy()] = k
        # each fold's trend, fitted on its own years (a held-out year never informs its own trend)
        trend = np.column_stack([trend_predictions(frame[year.isin(f.history_years)], frame) for f in folds])
        if self.feature_mean is None:
            self.year_center = float(frame.loc[train.any(axis=1), "year"].mean())
            stats = [self._fold_stats(frame[train[:, k]]) for k in range(len(folds))]
            self.feature_mean = np.stack([s[0] for s in stats])
            self.feature_std = np.stack([s[1] for s in stats])
            self.y_mean, self.y_std = [s[2] for s in stats], [s[3] for s in stats]
        self.frames, self.fold_inputs = {"all": frame}, {}
        rows_of = {"train": train.any(axis=1), "val": val.any(axis=1), "test": test_fold >= 0}
        masks = {"train": train, "val": val, "test": test_fold[:, None] == np.arange(len(folds))[None, :]}
        for stage_name, rows in rows_of.items():
            mask = masks[stage_name][rows]
            own = np.argmax(mask, axis=1)  # the fold that tests the row (test), or the first that uses it
            self.frames[stage_name] = frame[rows].assign(
                trend=trend[rows][np.arange(len(own)), own], fold=test_fold[rows]
            ).reset_index(drop=True)
            self.fold_inputs[stage_name] = {"trend": trend[rows], "mask": mask, "fold": test_fold[rows]}

    def setup_predict(self, rows: pd.DataFrame, source: str = "request") -> None:
        """Next season's yields from a yield table (``path``'s layout, read from it or held in memory by a server): its
        rows with an empty yield (or, without features, each region's next year), with the history's trend."""
        trained_on = list(self.feature_names)
        frame = self.load_tables(allow_missing=True, rows=rows, source=source)
        if self.feature_mean is not None and self.feature_names != trained_on:
            raise DataError(
                f"{source}: features {self.feature_names} differ from those the model was trained "
                f"on {trained_on} (check data.weather_path, data.use_weather and data.covariates)"
            )
        history = frame[frame["yield"].notna()]
        target_rows = frame[frame["yield"].isna()]
        if target_rows.empty:
            if self.feature_names:
                raise DataError(
                    f"{source}: no rows with an empty {self.target!r} to forecast; add next season's "
                    "rows (with their covariates / weather) and leave the yield blank"
                )
            nxt = history.groupby("region")["year"].max() + 1
            target_rows = pd.DataFrame({"region": nxt.index, "year": nxt.to_numpy(), "yield": np.nan})
        # a season none of the folds saw: every fold's model gets the trend of the whole history
        predicted = target_rows.assign(trend=trend_predictions(history, target_rows)).reset_index(drop=True)
        k = max(len(self.folds), 1)
        self.frames["predict"], self.frames["history"] = predicted, history
        self.fold_inputs["predict"] = {
            "trend": np.repeat(predicted["trend"].to_numpy(float)[:, None], k, axis=1),
            "mask": np.zeros((len(predicted), k), dtype=bool),
            "fold": np.full(len(predicted), -1, dtype=np.int64),
        }

    def _check_trained_folds(self, folds: list[Fold]) -> None:
        """A restored checkpoint has one model per fold: this data and protocol must give folds testing the same
        years (their validation years may differ, they do not change a test prediction)."""
        if not self.folds or [f.test_years for f in self.folds] == [f.test_years for f in folds]:
            return
        if self.trained_protocol not in (None, self.protocol):
            raise ConfigError(
                f"data.protocol={self.protocol}: the checkpoint was trained with data.protocol={self.trained_protocol} "
                f"({len(self.folds)} fold(s)); set data.protocol={self.trained_protocol}"
            )

        def tested(fold_list: list[Fold]) -> str:
            names = [f.describe() for f in fold_list]
            return f"{len(names)} fold(s) testing {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"

        raise DataError(
            f"{self.source()}: data.protocol={self.protocol} gives {tested(folds)}, but the checkpoint's model has "
            f"{tested(self.folds)}; use the data and data.test_years it was trained with"
        )

    def _fold_stats(self, train: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, float, float]:
        x = self._raw_features(train)
        y_std = float(max(train["yield"].std(), 1e-6))
        return x.mean(0), np.maximum(x.std(0), 1e-6), float(train["yield"].mean()), y_std

    def _raw_features(self, frame: pd.DataFrame) -> np.ndarray:
        cols = [frame[c].to_numpy(float) for c in self.feature_names] + [
            frame["year"].to_numpy(float) - self.year_center
        ]
        return np.column_stack(cols)

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        """Feature matrix ``(N, K, F)``, standardised with each fold's statistics (of its training years)."""
        raw = self._raw_features(frame)[:, None, :]
        return ((raw - self.feature_mean[None]) / self.feature_std[None]).astype(np.float32)

    def tensor_dataset(self, stage: str) -> Dataset:
        frame, inputs = self.frames[stage], self.fold_inputs[stage]
        return _DictDataset(
            features=torch.from_numpy(self.features(frame)),
            trend=torch.as_tensor(inputs["trend"], dtype=torch.float32),
            fold=torch.as_tensor(inputs["fold"], dtype=torch.int64),
            mask=torch.as_tensor(inputs["mask"]),
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
        return {
            "n_features": len(self.feature_names) + 1,
            "y_mean": [float(v) for v in self.y_mean],
            "y_std": [float(v) for v in self.y_std],
            "folds": len(self.folds) or 1,
        }

    def predict_frame(self, outputs: Sequence[Any], stage: str) -> pd.DataFrame:
        """One row per region and year: the predicted yield and the region's trend; on the test years also the
        actual yield and the fold whose model predicted it."""
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
            out["fold"] = frame["fold"].to_numpy()
        return out

    def export_contract(self) -> dict[str, Any]:
        """The exported graph's inputs: standardised features for every fold, each fold's trend and the fold that
        predicts the row; the standardisation stays outside the graph (one cheap step, kept beside the features' own
        aggregation from daily weather); the yield's unscaling and the choice of fold are inside it."""
        folds = max(len(self.folds), 1)
        return {
            "features": {"dtype": "float32", "shape": ["batch", folds, len(self.feature_names)], "features": list(self.feature_names),
                         "preprocessing": "(x - feature_mean[fold]) / feature_std[fold], for every fold", "in_graph": False,
                         "feature_mean": np.asarray(self.feature_mean).tolist() if self.feature_mean is not None else None,
                         "feature_std": np.asarray(self.feature_std).tolist() if self.feature_std is not None else None},
            "trend": {"dtype": "float32", "shape": ["batch", folds], "preprocessing": "each fold's linear trend of the region's yield over its "
                                                                                     "training years, in yield units"},
            "fold": {"dtype": "int64", "shape": ["batch"], "preprocessing": "the fold that tested the row; -1 for a new season (the mean over folds)"},
            "outputs": {"yield": "(batch,) predicted yield in the yield's units"},
            "protocol": self.protocol,
        }

    def training_state(self) -> dict[str, Any]:
        """The training and validation rows of every fold, for networks fitted in closed form before training
        (``models/yield_classical.py``): per split ``features (N, K, F)`` (standardised per fold), ``trend (N, K)``,
        ``target (N,)`` and ``mask (N, K)`` (which folds train, or validate, on the row)."""
        return {split: {"features": self.features(self.frames[split]), "trend": np.asarray(self.fold_inputs[split]["trend"], dtype=np.float64),
                        "target": self.frames[split]["yield"].to_numpy(np.float64), "mask": np.asarray(self.fold_inputs[split]["mask"], dtype=bool)}
                for split in ("train", "val")}

    def state_dict(self) -> dict[str, Any]:
        if self.feature_mean is None:
            return {}
        return {
            "feature_names": list(self.feature_names),
            "feature_mean": torch.as_tensor(self.feature_mean),
            "feature_std": torch.as_tensor(self.feature_std),
            "year_center": self.year_center,
            "y_mean": [float(v) for v in self.y_mean],
            "y_std": [float(v) for v in self.y_std],
            "protocol": self.protocol,
            "folds": [fold.to_state() for fold in self.folds],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self.feature_names = list(state_dict["feature_names"])
        self.feature_mean = np.asarray(state_dict["feature_mean"])
        self.feature_std = np.asarray(state_dict["feature_std"])
        self.year_center = state_dict["year_center"]
        self.y_mean, self.y_std = list(state_dict["y_mean"]), list(state_dict["y_std"])
        self.trained_protocol = state_dict["protocol"]
        self.folds = [Fold.from_state(fold) for fold in state_dict["folds"]]


class _DictDataset(torch.utils.data.Dataset):
    """Rows of equally long tensors returned as dicts (the batch format of the core module)."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}
