"""Readers and schema checks for long-format daily series tables and region x year yield tables.

Bad-input handling (each case raises :class:`core.errors.DataError` naming the file and column, or is
handled as documented):

* unsorted rows: sorted by series then date (harmless, so handled silently);
* duplicated (series, date) rows: error;
* gaps in dates or NaN values: error, unless ``fill_gaps`` is set ("interpolate" fills runs of at most
  ``max_gap`` days linearly, longer runs are still an error);
* a series shorter than ``min_length`` (lookback + horizon): error;
* a ``units`` column whose value differs from the expected unit, or target values outside
  ``valid_range`` (e.g. Fahrenheit or Kelvin read as Celsius): error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ConfigError, DataError


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (optionally gzipped) or Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a .csv, .csv.gz or .parquet table)")
    name = path.name.lower()
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return pd.read_csv(path)
    raise DataError(f"{path}: unsupported file type; expected .csv, .csv.gz or .parquet")


def _require(frame: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")


def validate_series(
    frame: pd.DataFrame,
    source: str,
    target: str,
    covariates: Sequence[str] = (),
    id_column: str = "series_id",
    date_column: str = "date",
    fill_gaps: str | None = None,
    max_gap: int = 3,
    min_length: int = 0,
    units_column: str = "units",
    expected_units: str | None = "degC",
    valid_range: Sequence[float] | None = (-70.0, 60.0),
) -> pd.DataFrame:
    """Check and normalise a long-format daily table into ``series_id, date, target, *covariates``.

    Without an id column the whole file is one series named after the file. The result is sorted, daily,
    gap-free and NaN-free.
    """
    if fill_gaps not in (None, "interpolate"):
        raise ConfigError(f"data.fill_gaps={fill_gaps!r}: expected null or 'interpolate'")
    frame = frame.copy()
    if id_column not in frame.columns:
        frame[id_column] = Path(source).name.split(".")[0]
    _require(frame, [date_column, target, *covariates], source)
    if expected_units is not None and units_column in frame.columns:
        bad = frame.loc[frame[units_column].astype(str) != expected_units, units_column]
        if len(bad):
            raise DataError(
                f"{source}: column {units_column!r} has {sorted(bad.astype(str).unique())[:3]}, "
                f"expected {expected_units!r} for every row (convert the values first)"
            )
    dates = pd.to_datetime(frame[date_column], errors="coerce")
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise DataError(
            f"{source}: column {date_column!r} has an unparseable date {frame[date_column].iloc[row]!r} (row {row})"
        )
    out = pd.DataFrame({"series_id": frame[id_column].astype(str).to_numpy(), "date": dates.dt.normalize().to_numpy()})
    for col in [target, *covariates]:
        values = pd.to_numeric(frame[col], errors="coerce")
        if (values.isna() & frame[col].notna()).any():
            raise DataError(f"{source}: column {col!r} has non-numeric values")
        out[col] = values.astype("float64").to_numpy()
    out = out.sort_values(["series_id", "date"], kind="stable").reset_index(drop=True)
    dup = out.duplicated(["series_id", "date"])
    if dup.any():
        first = out.loc[dup.idxmax()]
        raise DataError(
            f"{source}: {int(dup.sum())} duplicated (series, date) row(s), first {first['series_id']!r} "
            f"{first['date'].date()}; expected one row per series and day"
        )
    out = _regularise(out, source, [target, *covariates], fill_gaps, max_gap)
    if valid_range is not None:
        lo, hi = valid_range
        outside = (out[target] < lo) | (out[target] > hi)
        if outside.any():
            raise DataError(
                f"{source}: column {target!r} has {int(outside.sum())} value(s) outside [{lo}, {hi}] "
                f"(e.g. {out.loc[outside, target].iloc[0]}); wrong units? expected {expected_units}"
            )
    lengths = out.groupby("series_id").size()
    short = lengths[lengths < min_length]
    if len(short):
        raise DataError(
            f"{source}: series {short.index[0]!r} has {int(short.iloc[0])} days, fewer than "
            f"lookback + horizon = {min_length}"
        )
    return out


def _regularise(
    out: pd.DataFrame, source: str, columns: list[str], fill_gaps: str | None, max_gap: int
) -> pd.DataFrame:
    """Reindex every series to consecutive days; fill short gaps/NaNs when configured, else raise."""
    bounds = out.groupby("series_id")["date"].agg(["min", "max"])
    n_days = ((bounds["max"] - bounds["min"]).dt.days + 1).to_numpy()
    ids = np.repeat(bounds.index.to_numpy(), n_days)
    offsets = np.arange(n_days.sum()) - np.repeat(np.cumsum(n_days) - n_days, n_days)
    full_dates = np.repeat(bounds["min"].to_numpy(), n_days) + offsets.astype("timedelta64[D]")
    full = pd.DataFrame({"series_id": ids, "date": full_dates})
    out = full.merge(out, on=["series_id", "date"], how="left")
    missing = out[columns].isna().any(axis=1)
    if not missing.any():
        return out
    row = out.loc[missing].iloc[0]
    absent_rows = int(missing.sum())
    if fill_gaps is None:
        raise DataError(
            f"{source}: {absent_rows} day(s) with a gap in dates or a NaN value, first series "
            f"{row['series_id']!r} on {row['date'].date()}; set data.fill_gaps=interpolate to fill "
            f"gaps of up to data.max_gap={max_gap} days"
        )
    run_id = (missing != missing.shift()).cumsum()
    run_len = missing.groupby(run_id).transform("size").where(missing, 0)
    if (run_len > max_gap).any():
        bad = out.loc[run_len > max_gap].iloc[0]
        raise DataError(
            f"{source}: series {bad['series_id']!r} has a gap of {int(run_len.max())} days from "
            f"{bad['date'].date()}, longer than data.max_gap={max_gap}"
        )
    out[columns] = out.groupby("series_id")[columns].transform(lambda s: s.interpolate(limit_direction="both"))
    return out


def validate_yield(
    frame: pd.DataFrame,
    source: str,
    region_column: str = "region",
    year_column: str = "year",
    target: str = "yield",
    covariates: Sequence[str] = (),
) -> pd.DataFrame:
    """Check a region x year yield table: required columns, integer years, one row per region-year, no NaN yield."""
    _require(frame, [region_column, year_column, target, *covariates], source)
    out = pd.DataFrame({"region": frame[region_column].astype(str).to_numpy()})
    years = pd.to_numeric(frame[year_column], errors="coerce")
    if years.isna().any() or (years % 1 != 0).any():
        raise DataError(f"{source}: column {year_column!r} must hold integer years")
    out["year"] = years.astype(int).to_numpy()
    for col in [target, *covariates]:
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.isna().any():
            raise DataError(f"{source}: column {col!r} has {int(values.isna().sum())} missing or non-numeric value(s)")
        out["yield" if col == target else col] = values.to_numpy(dtype=float)
    dup = out.duplicated(["region", "year"])
    if dup.any():
        first = out.loc[dup.idxmax()]
        raise DataError(
            f"{source}: duplicated region-year ({first['region']!r}, {first['year']}); expected one row each"
        )
    return out.sort_values(["region", "year"]).reset_index(drop=True)
