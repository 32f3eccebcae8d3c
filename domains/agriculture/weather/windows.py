"""Per-series scaling fit on the training span, chronological splits and lazy lookback/horizon windows.

All series are concatenated into one day-indexed panel; a window is addressed only by its origin row
``t`` (past = rows ``t-L+1..t``, future = rows ``t+1..t+H``) and sliced on access, so no window is ever
materialised in advance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.domains.agriculture.features import doy_features, fit_climatology

STAGES = ("train", "val", "test")


@dataclass
class SeriesStats:
    """Fitted per-series preprocessing: location/scale per column, climatology and the MASE scale; ``present``
    says which series had each column when fitted (False: an optional covariate the series lacks)."""

    series: list[str]
    loc: np.ndarray  # (S, C)
    scale: np.ndarray  # (S, C)
    clim: np.ndarray  # (S, 366) day-of-year climatology of the target, raw units
    mase_scale: np.ndarray  # (S,) in-sample mean |y_t - y_{t-1}| over the training span
    present: np.ndarray | None = None  # (S, C) bool; None: every series has every column

    def to_state(self) -> dict[str, object]:
        """Plain tensors + list, storable in a checkpoint loaded with ``weights_only=True``."""
        return {
            "series": list(self.series),
            "loc": torch.as_tensor(self.loc),
            "scale": torch.as_tensor(self.scale),
            "clim": torch.as_tensor(self.clim),
            "mase_scale": torch.as_tensor(self.mase_scale),
            "present": torch.as_tensor(self.columns_present()),
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> SeriesStats:
        """The statistics :meth:`to_state` stored."""
        arrays = (np.asarray(state[k]) for k in ("loc", "scale", "clim", "mase_scale"))
        return cls(list(state["series"]), *arrays, present=np.asarray(state["present"]).astype(bool))

    def columns_present(self) -> np.ndarray:
        """``(S, C)`` bool: whether each series had each column when the statistics were fitted."""
        return np.ones(self.loc.shape, dtype=bool) if self.present is None else self.present


def train_end_rows(lengths: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Per-series row counts of the train and train+val spans, shape ``(S, 2)``."""
    train_frac, val_frac = float(fractions[0]), float(fractions[1])
    if not (0 < train_frac < 1 and 0 <= val_frac < 1 and train_frac + val_frac < 1):
        raise ConfigError(f"data.split={list(fractions)}: expected [train, val] fractions with train + val < 1")
    return np.stack([(lengths * train_frac).astype(int), (lengths * (train_frac + val_frac)).astype(int)], axis=1)


def fit_stats(frame: pd.DataFrame, target: str, covariates: Sequence[str], train_rows: np.ndarray) -> SeriesStats:
    """Fit scaling, climatology and MASE scale of every series on its first ``train_rows[s]`` days only (a
    covariate a series lacks, all NaN, gets location 0 and scale 1)."""
    columns = [target, *covariates]
    groups = list(frame.groupby("series_id", sort=False))
    locs, scales, clims, mases, present = [], [], [], [], []
    for (_, g), n_train in zip(groups, train_rows):
        train = g.iloc[:n_train]
        values = train[columns].to_numpy(float)
        has = ~np.isnan(values).all(axis=0)
        present.append(has)
        values = np.where(has, values, 0.0)
        locs.append(values.mean(axis=0))
        scales.append(np.where(has, np.maximum(values.std(axis=0), 1e-6), 1.0))
        y = train[target].to_numpy(float)
        clim = fit_climatology(y, train["date"].dt.day_of_year.to_numpy())
        clims.append(clim)
        # the target is scaled by the spread of its departure from climatology, so day-to-day weather noise
        # has unit scale at every station whatever the size of its seasonal cycle
        scales[-1][0] = max(float(np.std(y - clim[train["date"].dt.day_of_year.to_numpy() - 1])), 1e-6)
        mases.append(max(float(np.mean(np.abs(np.diff(y)))), 1e-6))
    return SeriesStats(
        [str(k) for k, _ in groups], np.array(locs), np.array(scales), np.array(clims), np.array(mases), np.array(present)
    )


@dataclass
class Panel:
    """All series concatenated: scaled model inputs, raw target and row bookkeeping."""

    past: np.ndarray  # (N, C_past) float32: target_z, covariates_z (0 where a series lacks one), clim_z, doy sin, cos
    future: np.ndarray  # (N, 3) float32: clim_z, doy sin, doy cos (known ahead)
    target: np.ndarray  # (N,) raw target
    clim: np.ndarray  # (N,) climatology of the target for that day, raw units
    series_index: np.ndarray  # (N,) int index into stats.series
    dates: np.ndarray  # (N,) datetime64
    starts: np.ndarray  # (S,) first row of each series
    lengths: np.ndarray  # (S,)
    stats: SeriesStats


def build_panel(frame: pd.DataFrame, stats: SeriesStats, target: str, covariates: Sequence[str]) -> Panel:
    """Scale a validated frame with fitted ``stats`` (series must be known to ``stats``). A covariate a series
    lacked when ``stats`` were fitted is 0 for it (its neutral value); one it had must still be there."""
    lookup = {s: i for i, s in enumerate(stats.series)}
    unknown = sorted(set(frame["series_id"]) - set(lookup))
    if unknown:
        raise DataError(
            f"series {unknown[:3]} were not seen when the scalers were fitted (known: {stats.series[:5]}); "
            "forecasts need a model trained on these series"
        )
    idx = frame["series_id"].map(lookup).to_numpy()
    values = frame[[target, *covariates]].to_numpy(float)
    present = stats.columns_present()[idx]
    lost = present & np.isnan(values)
    if lost.any():
        row, col = (int(i[0]) for i in np.nonzero(lost))
        raise DataError(
            f"series {frame['series_id'].iloc[row]!r} had column {[target, *covariates][col]!r} when the model was "
            f"trained, but it is missing on {pd.Timestamp(frame['date'].iloc[row]).date()}"
        )
    z = np.where(present, (values - stats.loc[idx]) / stats.scale[idx], 0.0)
    doy = frame["date"].dt.day_of_year.to_numpy()
    clim = stats.clim[idx, doy - 1]
    clim_z = (clim - stats.loc[idx, 0]) / stats.scale[idx, 0]
    cal = doy_features(frame["date"].to_numpy())
    past = np.column_stack([z, clim_z, cal]).astype(np.float32)
    future = np.column_stack([clim_z, cal]).astype(np.float32)
    order = frame.groupby("series_id", sort=False).size()
    lengths = order.to_numpy()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return Panel(past, future, values[:, 0], clim, idx, frame["date"].to_numpy(), starts, lengths, stats)


def stage_origins(panel: Panel, lookback: int, horizon: int, cuts: np.ndarray) -> dict[str, np.ndarray]:
    """Origin rows per stage: a stage's origins are the days whose next ``horizon`` targets lie in its span.

    ``cuts[s] = (n_train, n_train + n_val)`` rows of series ``s``; the test span runs to the end, one origin
    per day (rolling-origin backtest). Lookback windows may reach back into earlier spans.
    """
    out: dict[str, list[np.ndarray]] = {s: [] for s in STAGES}
    for start, n, (a, b) in zip(panel.starts, panel.lengths, cuts):
        bounds = {"train": (lookback - 1, a - horizon), "val": (a - 1, b - horizon), "test": (b - 1, n - horizon)}
        for stage, (lo, hi) in bounds.items():
            lo = max(lo, lookback - 1)
            out[stage].append(start + np.arange(lo, max(hi, lo)))
    return {k: np.concatenate(v).astype(np.int64) for k, v in out.items()}


def latest_origins(panel: Panel, lookback: int) -> np.ndarray:
    """The last row of every series long enough for one lookback window (forecast origin for predict)."""
    last = panel.starts + panel.lengths - 1
    return last[panel.lengths >= lookback].astype(np.int64)


def future_dates(panel: Panel, origins: np.ndarray, horizon: int) -> np.ndarray:
    """The ``horizon`` calendar days after each origin, shape ``(n, H)``."""
    return panel.dates[origins][:, None] + np.arange(1, horizon + 1).astype("timedelta64[D]")[None, :]


def future_calendar(panel: Panel, origins: np.ndarray, horizon: int) -> np.ndarray:
    """Known-ahead features (clim_z, doy sin, doy cos) for the days after each origin, even past the data's end."""
    dates = future_dates(panel, origins, horizon).ravel()
    s = np.repeat(panel.series_index[origins], horizon)
    stats = panel.stats
    doy = pd.DatetimeIndex(dates).day_of_year.to_numpy()
    clim_z = (stats.clim[s, doy - 1] - stats.loc[s, 0]) / stats.scale[s, 0]
    feats = np.column_stack([clim_z, doy_features(dates)]).astype(np.float32)
    return feats.reshape(len(origins), horizon, 3)


class WindowDataset(Dataset):
    """Lazy windows: item ``i`` slices the panel around origin ``origins[i]``.

    Items hold ``past`` (L, C), ``future`` (H, 3), ``loc``/``scale`` of the target, ``mase_scale``, ``origin``
    and, when the horizon lies inside the data, ``target`` (H,) in raw units.
    """

    def __init__(
        self, panel: Panel, origins: np.ndarray, lookback: int, horizon: int, with_target: bool = True
    ) -> None:
        self.panel, self.origins, self.lookback, self.horizon = panel, origins, lookback, horizon
        self.with_target = with_target
        self._past = torch.from_numpy(panel.past)
        self._future = torch.from_numpy(panel.future)
        self._target = torch.from_numpy(panel.target.astype(np.float32))
        s = panel.series_index
        self._loc = torch.from_numpy(panel.stats.loc[s, 0].astype(np.float32))
        self._scale = torch.from_numpy(panel.stats.scale[s, 0].astype(np.float32))
        self._mase = torch.from_numpy(panel.stats.mase_scale[s].astype(np.float32))
        self._series = torch.from_numpy(s.astype(np.int64))
        self._ahead = None if with_target else torch.from_numpy(future_calendar(panel, origins, horizon))

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = int(self.origins[i])
        item = {
            "past": self._past[t - self.lookback + 1 : t + 1],
            "loc": self._loc[t],
            "scale": self._scale[t],
            "mase_scale": self._mase[t],
            "origin": torch.tensor(t),
            "series": self._series[t],
        }
        if not self.with_target:
            item["future"] = self._ahead[i]
        else:
            item["future"] = self._future[t + 1 : t + 1 + self.horizon]
            item["target"] = self._target[t + 1 : t + 1 + self.horizon]
        return item
