"""The weather LightningDataModule: a validated daily table -> per-series scaling fitted on the training span ->
lazy lookback/horizon windows.

Readers and schema checks live in :mod:`sectorkit.domains.agriculture.readers`; windows and scaling in
:mod:`sectorkit.domains.agriculture.weather.windows`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.export import ExportGraph
from sectorkit.core.progress import phase
from sectorkit.core.sharding import distributed_rank, parquet_files, shard_items
from sectorkit.domains.agriculture import sample, scale
from sectorkit.domains.agriculture.metrics import QUANTILES
from sectorkit.domains.agriculture.readers import read_series_table, require_finite, validate_series
from sectorkit.domains.agriculture.weather.baselines import ridge_ar_scaled_weights
from sectorkit.domains.agriculture.weather.export import RawWindowModel
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

STATS_BLOCK = 500  # series fitted at a time when the shared statistics file is written
STATS_WAIT_S = 3600.0  # how long a rank waits for its node's first process to write that file


class RankShareSampler(DistributedSampler):
    """The windows of this rank's own share (already cut by series), shuffled or in order, repeated from the start
    up to ``total`` (so that every rank draws the same number of batches). A DistributedSampler of one replica:
    Lightning leaves samplers of that type alone instead of cutting the share again."""

    def __init__(self, dataset: Any, total: int, shuffle: bool, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
        self.num_samples = self.total_size = int(total)


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
    ``shard_by_rank``: each global rank reads only its block of whole series from the Parquet ``path`` (see
    :meth:`setup_shard`); the per-series statistics of every series come from ``stats_path`` (default: a hidden
    file beside the data, or under ``cache_dir``), written once by each node's first process.
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
        shard_by_rank: bool = False,
        stats_path: str | None = None,
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
        self.shard_by_rank, self.stats_path = bool(shard_by_rank), stats_path
        if self.shard_by_rank and balance_series:
            raise ConfigError("data.balance_series=true does not combine with data.shard_by_rank=true (each rank draws its own series)")
        self.shard: dict[str, Any] = {}  # with shard_by_rank: this rank, the world size and its series (setup_shard)
        self.stats: SeriesStats | None = None
        self.panel: Panel | None = None
        self.origins: dict[str, np.ndarray] = {}

    # --- loading ------------------------------------------------------------------------------
    def load_frame(self, min_length: int, series: Sequence | None = None, rows: pd.DataFrame | None = None, source: str = "request") -> pd.DataFrame:
        """The validated long frame from ``path`` or the built-in sample; with ``series``, only those series' rows of
        the Parquet ``path`` are read (a pyarrow filter on the id column); with ``rows``, those rows held in memory in
        ``path``'s layout (a server's request, named ``source``), checked as a file holding them is."""
        if rows is not None:
            require_finite(rows, [self.target, *self.inputs], source)
            raw, id_col, date_col = rows, self.id_column, self.date_column
        elif series is not None:
            raw, source, id_col, date_col = self.read_series(series), str(self.path), self.id_column, self.date_column
        elif self.path is None:
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
            self.date_format if self.path is not None or rows is not None else None,
        )

    @property
    def inputs(self) -> list[str]:
        """The covariates fed to the network, required ones first."""
        return [*self.covariates, *self.optional_covariates]

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            self.predict_panel(self.load_frame(self.lookback))
            return
        if self.shard_by_rank and self.shard and (self.shard["rank"], self.shard["world_size"]) != distributed_rank():
            self.panel = None  # set up before the ranks started (Lightning launches them in fit): cut this rank's share
        if self.panel is not None and self.origins.get("test") is not None:
            return
        if self.shard_by_rank:
            self.setup_shard()
            return
        frame = self.load_frame(self.lookback + self.horizon)
        cuts = self.split_rows(frame)
        if self.stats is None:
            self.stats = fit_stats(frame, self.target, self.inputs, cuts[:, 0])
        self.panel = build_panel(frame, self.stats, self.target, self.inputs)
        self.origins.update(stage_origins(self.panel, self.lookback, self.horizon, cuts))

    def split_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """Per-series train and train+val row counts (:func:`train_end_rows`); a series whose training span cannot
        hold one window is an error naming it."""
        lengths = frame.groupby("series_id", sort=False).size().to_numpy()
        cuts = train_end_rows(lengths, self.split)
        short = np.flatnonzero(cuts[:, 0] < self.lookback + self.horizon + 1)
        if len(short):
            raise DataError(
                f"series {frame['series_id'].unique()[short[0]]!r}: its training span ({cuts[short[0], 0]} days) "
                f"is shorter than lookback + horizon = {self.lookback + self.horizon}"
            )
        return cuts

    # --- per-rank shares (data.shard_by_rank) -------------------------------------------------------------------
    def read_series(self, series: Sequence) -> pd.DataFrame:
        """The raw rows of ``series`` only, with only the columns this module uses, from the Parquet ``path``."""
        path = self.require_path()
        columns = [self.id_column, self.date_column, self.target, *self.inputs, self.units_column]
        raw = scale.read_series_rows(path, series, self.id_column, columns)
        require_finite(raw, [self.target, *self.inputs], str(path), where=self.id_column)
        return raw

    def stats_settings(self) -> dict[str, Any]:
        """What the shared statistics depend on: the Parquet files (path, size, modification time) and the settings
        that change the validated table, its split or the windows."""
        files = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in parquet_files(self.require_path())]
        return {"files": files, "id_column": self.id_column, "date_column": self.date_column, "date_format": self.date_format,
                "target": self.target, "inputs": self.inputs, "split": [float(x) for x in self.split], "lookback": self.lookback,
                "horizon": self.horizon, "fill_gaps": self.fill_gaps, "max_gap": int(self.max_gap), "units_column": self.units_column,
                "expected_units": self.expected_units, "valid_range": self.valid_range}

    def stats_file(self) -> Path:
        """``data.stats_path``, else ``.series_stats-<hash of the settings>.npz`` under ``cache_dir`` or beside the data
        (a folder every node of a multi-node job sees), so other data or settings never reuse a stale file."""
        if self.stats_path:
            return Path(self.stats_path).expanduser()
        key = hashlib.sha256(json.dumps(self.stats_settings(), sort_keys=True).encode()).hexdigest()[:16]
        path = self.require_path()
        return (self.cache_dir or (path if path.is_dir() else path.parent)) / f".series_stats-{key}.npz"

    def write_series_stats(self, path: str | Path, ids: Sequence | None = None) -> Path:
        """Fit the statistics of every series (scaling, climatology, MASE scale, ridge reference weights) on its training
        span and write them to ``path``, :data:`STATS_BLOCK` series at a time (memory holds one block)."""
        ids = scale.series_ids(self.require_path(), self.id_column) if ids is None else list(ids)
        pieces, lengths, weights = [], [], []
        n_blocks = max(1, -(-len(ids) // STATS_BLOCK))
        for b in range(n_blocks):
            frame = self.load_frame(self.lookback + self.horizon, series=scale.series_shard_ids(ids, b, n_blocks))
            cuts = self.split_rows(frame)
            stats = fit_stats(frame, self.target, self.inputs, cuts[:, 0])
            panel = build_panel(frame, stats, self.target, self.inputs)
            train = stage_origins(panel, self.lookback, self.horizon, cuts)["train"]
            pieces.append(stats)
            lengths.append(panel.lengths)
            weights.append(ridge_ar_scaled_weights(panel, train, self.horizon))
        return scale.save_series_stats(path, scale.merge_series_stats(pieces), np.concatenate(lengths), np.concatenate(weights),
                                       self.stats_settings())

    def shared_stats(self, ids: Sequence, rank: int) -> tuple[SeriesStats, np.ndarray, np.ndarray]:
        """``(stats, lengths, reference_weights)`` of every series from :meth:`stats_file`: each node's first process
        (``LOCAL_RANK``/``SLURM_LOCALID`` 0) writes it when missing, the others wait for it, so every rank scales with
        the same numbers without reading the other ranks' rows."""
        path = self.stats_file()
        local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", rank)))
        if not path.is_file():
            if local_rank == 0:
                with phase(f"fitting the statistics of {len(ids)} series into {path}"):
                    self.write_series_stats(path, ids)
            else:
                deadline = time.monotonic() + STATS_WAIT_S
                while not path.is_file():
                    if time.monotonic() > deadline:
                        raise DataError(f"{path}: the series statistics did not appear within {STATS_WAIT_S:.0f} s (each node's "
                                        "first process writes them); write them first (WeatherDataModule.write_series_stats) "
                                        "and point data.stats_path at the file")
                    time.sleep(1.0)
        return scale.load_series_stats(path, self.stats_settings())

    def setup_shard(self) -> None:
        """This global rank's share: the sorted series ids (only the id column is read) cut into contiguous blocks,
        one per rank (disjoint, together all), and only this block's rows read. The statistics are those of every
        series from the shared file (:meth:`shared_stats`), so series indices, the model's per-series parameters and
        the scaling agree on every rank; each rank's number of training windows is known from it too."""
        path = self.require_path()
        if path.is_file() and path.suffix.lower() != ".parquet":
            raise ConfigError(f"data.shard_by_rank=true reads Parquet: {path} is not a .parquet file or a folder of them "
                              "(convert it with pandas: pd.read_csv(...).to_parquet(...))")
        rank, world_size = distributed_rank()
        ids = scale.series_ids(path, self.id_column)
        if len(ids) < world_size:
            raise DataError(f"{path}: {len(ids)} series for {world_size} ranks; data.shard_by_rank=true needs a series per rank")
        stats, lengths, weights = self.shared_stats(ids, rank)
        if self.stats is None:
            self.stats = stats
        mine = scale.series_shard_ids(ids, rank, world_size)
        frame = self.load_frame(self.lookback + self.horizon, series=mine)
        cuts = self.split_rows(frame)
        self.panel = build_panel(frame, self.stats, self.target, self.inputs)
        self.origins.update(stage_origins(self.panel, self.lookback, self.horizon, cuts))
        per_series = np.maximum(train_end_rows(lengths, self.split)[:, 0] - self.horizon - self.lookback + 1, 0)
        train = [int(per_series[list(shard_items(len(ids), r, world_size))].sum()) for r in range(world_size)]
        self.shard = {"rank": rank, "world_size": world_size, "series": len(mine), "train_windows": train,
                      "reference_weights": weights}

    def sampler(self, stage: str) -> RankShareSampler | None:
        """With shard_by_rank on several ranks: this rank's own windows (training: shuffled and repeated up to the
        largest rank's count, so every rank runs the same number of steps; evaluation: each window once, in order)."""
        if not self.shard or self.shard["world_size"] == 1:
            return None
        dataset = self.dataset(stage)
        total = max(self.shard["train_windows"]) if stage == "train" else len(dataset)
        return RankShareSampler(dataset, total, shuffle=stage == "train", seed=self.seed)

    def setup_predict(self, rows: pd.DataFrame, source: str = "request") -> None:
        """The next days after each series' end from rows held in memory (``path``'s layout, at least ``lookback`` days
        per series), as ``setup('predict')`` forecasts ``path``'s."""
        self.predict_panel(self.load_frame(self.lookback, rows=rows, source=source))

    def predict_panel(self, frame: pd.DataFrame) -> None:
        """The panel of the validated frame to forecast (scaled with the training statistics) and its latest origins."""
        if self.stats is None:
            raise ConfigError("predict needs the scalers fitted at training time (load them from the checkpoint)")
        self.panel = build_panel(frame, self.stats, self.target, self.inputs)
        self.origins["predict"] = latest_origins(self.panel, self.lookback)

    # --- loaders --------------------------------------------------------------------------------
    def dataset(self, stage: str) -> WindowDataset:
        return WindowDataset(
            self.panel, self.origins[stage], self.lookback, self.horizon, with_target=stage != "predict"
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training windows; with ``balance_series`` every series is drawn equally often, so a long
        station does not drown a short one."""
        dataset, shard_sampler = self.dataset("train"), self.sampler("train")
        if shard_sampler is not None:
            return self.dataloader(dataset, sampler=shard_sampler)
        if not self.balance_series:
            return self.dataloader(dataset, shuffle=True)
        series = self.panel.series_index[self.origins["train"]]
        weights = 1.0 / np.bincount(series)[series]
        generator = torch.Generator().manual_seed(self.seed + (self.trainer.current_epoch if self.trainer else 0))
        sampler = WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(dataset), generator=generator)
        return self.dataloader(dataset, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader(self.dataset("val"), sampler=self.sampler("val"), batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.dataloader(self.dataset("test"), sampler=self.sampler("test"), batch_size=self.eval_batch_size)

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
        # the panel's own series (with data.shard_by_rank, this rank's share of stats.series)
        names = np.asarray(self.stats.series)[self.panel.series_index[self.panel.starts]] if self.panel is not None else []
        lengths = {str(name): int(n) for name, n in zip(names, self.panel.lengths)} if self.panel is not None else {}
        facts = {"target": f"{self.target} ({self.expected_units or 'units not stated'}), {self.horizon}-day horizon, "
                           f"quantiles {', '.join(f'{q:g}' for q in self.quantiles)}",
                 "days per series": ", ".join(f"{name} {n}" for name, n in lengths.items()),
                 "splits": f"chronological within each series (data.split={self.split}: train and validation fractions, the "
                           "rest is tested), so the date ranges below pool series of different lengths"}
        return {"source": str(self.path) if self.path else f"built-in sample ({', '.join(self.stations)})", "facts": facts, "splits": splits}

    def training_state(self) -> dict[str, Any]:
        """The training span a model's ridge reference is fitted on: the panel and its training origins."""
        state = {"panel": self.panel, "train_origins": self.origins["train"]}
        if self.shard:  # a rank sees its own series only: the ridge reference of every series, fitted once
            state["reference_weights"] = self.shard["reference_weights"]
        return state

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
        """The exported graph's inputs: raw windows in the data's units, the series and the origin's date. The window
        scaling (per-series location/scale, climatology and day-of-year features) and the forecasts' unscaling are
        inside the graph (:class:`~sectorkit.domains.agriculture.weather.export.RawWindowModel`)."""
        stats = self.stats
        columns = [self.target, *self.inputs]
        lacking = {str(s): [c for c, has in zip(columns, row) if not has] for s, row in zip(stats.series, stats.columns_present())} if stats else {}
        return {
            "values": {"dtype": "float32", "shape": ["batch", self.lookback, len(columns)], "columns": columns,
                       "preprocessing": f"none: the raw columns in the data's units (target {self.target!r} in "
                                        f"{self.expected_units or 'its own units'}), the last {self.lookback} days up to the forecast origin, "
                                        "oldest first, one row a day; NaN only for a covariate the series did not have in training "
                                        "(series_lacking)",
                       "in_graph": "(x - series_loc[series][column]) / series_scale[series][column] (0 where the series lacks the "
                                   "covariate); the target's day-of-year climatology and the day of year as sin/cos of 2 pi (doy - 1) / "
                                   "365.25 for the window and the horizon days; the forecasts unscaled to the target's units"},
            "series": {"dtype": "int64", "shape": ["batch"], "preprocessing": "the series' position in series_ids"},
            "origin_date": {"dtype": "int64", "shape": ["batch"],
                            "preprocessing": "the date of the window's last day as days since 1970-01-01 "
                                             "(numpy.datetime64(date, 'D').astype('int64'))"},
            "outputs": {"quantiles": f"(batch, {self.horizon}, {len(self.quantiles)}) forecasts of {self.target!r} in its own units "
                                     f"for the {self.horizon} days after origin_date, quantiles {list(self.quantiles)}"},
            "series_ids": list(stats.series) if stats else [], "columns_order": columns, "series_lacking": lacking,
            "series_loc": stats.loc.tolist() if stats else [], "series_scale": stats.scale.tolist() if stats else [],
        }

    def export_graph(self, model: Any, batch: dict[str, torch.Tensor]) -> ExportGraph:
        """The model behind the window scaling (:class:`RawWindowModel`), traced on the raw windows of ``batch`` (the
        target as read, the covariates unscaled from the panel); the parity check also runs the rows in reverse order
        (the same batch size: a TimesFM graph holds only its traced one). Its forecasts must agree with the model's on
        the loader's scaled windows."""
        stats, panel = self.stats, self.panel
        origin = batch["origin"].numpy()
        rows = origin[:, None] + np.arange(-self.lookback + 1, 1)[None, :]
        series = panel.series_index[origin]
        scaled = batch["past"][..., : len(self.inputs) + 1].double().numpy()
        raw = scaled * stats.scale[series][:, None, :] + stats.loc[series][:, None, :]
        raw = np.where(stats.columns_present()[series][:, None, :], raw, np.nan)
        raw[..., 0] = panel.target[rows]
        values = torch.as_tensor(raw, dtype=torch.float32)
        dates = torch.as_tensor(panel.dates[origin].astype("datetime64[D]").astype(np.int64))
        with torch.inference_mode():
            reference = [model(*model.batch_inputs(batch))]
        inputs = (values, batch["series"].long(), dates)
        return ExportGraph(RawWindowModel(model, stats, self.lookback, self.horizon), inputs, ["values", "series", "origin_date"],
                           list(model.export_outputs), {name: {0: "batch"} for name in ("values", "series", "origin_date")},
                           checks=[tuple(t.flip(0) for t in inputs)], reference=reference)

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.to_state()} if self.stats is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("stats") is not None:
            self.stats = SeriesStats.from_state(state_dict["stats"])
