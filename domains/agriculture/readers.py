"""Readers and schema checks for long-format daily series tables and region x year yield tables.

A daily table is one CSV / Parquet file, or a folder of station files (one series per file unless the files
carry a series id column); climate files of the FAO AquaCrop crop model (``Day Month Year Tmin Tmax Prcp Et0``,
whitespace-separated ``.txt``) are read as ``date, tmin, tmax, precip, et0``.

Bad-input handling (each case raises :class:`sectorkit.core.errors.DataError` naming the file and column, or is
handled as documented):

* unsorted rows: sorted by series then date (harmless, so handled silently);
* duplicated (series, date) rows: error;
* an infinite value (``inf``, ``-inf``, ``1e400``) in a column that is read: error naming the file, column and row
  (rows are counted from 0 after the header);
* dates whose day and month both fit either way (``03/04/2001``, every day <= 12): error naming the file, column
  and both readings, unless ``date_format`` says which; a column where some day is > 12 reads unambiguously;
* gaps in dates or NaN values: error, unless ``fill_gaps`` is set ("interpolate" fills runs of at most
  ``max_gap`` days linearly, longer runs are still an error);
* a series shorter than ``min_length`` (lookback + horizon): error;
* a ``units`` column whose value differs from the expected unit, or target values outside
  ``valid_range`` (e.g. Fahrenheit or Kelvin read as Celsius): error;
* an *optional* covariate (a sensor some stations lack) that is missing from a whole series, or from the whole
  table: kept as NaN for those series (the model then sees a neutral zero input); a series that has it gets the
  gap and NaN rules above.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format
from pandas.tseries.offsets import MonthEnd

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.io import TABLE_SUFFIXES, read_table
from sectorkit.domains.agriculture.features import SEASON_MONTHS

AQUACROP_DATE = ["Day", "Month", "Year"]
AQUACROP_VALUES = ("tmin", "tmax", "precip", "et0")
SEASON_KEY = "\x1f"  # joins region and year into one series id while a season is checked
SEASON_VALUES = ("tmax", "tmin", "precip")  # the daily columns the yield features are built from


def read_series_table(path: str | Path, id_column: str = "series_id", values: Sequence[str] = ()) -> pd.DataFrame:
    """A long-format daily table from one file or from a folder of station files (CSV, Parquet or AquaCrop
    climate files, read in name order). In a folder, a file without ``id_column`` is one series named after the
    file (``brussels.csv`` -> ``brussels``); every file must have the same columns. An infinite number in one of the
    ``values`` columns is an error naming the file, the column and the row."""
    path = Path(path)
    if not path.is_dir():
        frame = _read_station_file(path)
        require_finite(frame, values, str(path))
        return frame
    files = sorted(f for f in path.iterdir() if f.is_file() and f.name.lower().endswith(TABLE_SUFFIXES))
    if not files:
        raise DataError(f"{path}: the folder has no station files (.csv, .csv.gz, .parquet or AquaCrop .txt)")
    frames = []
    for file in files:
        frame = _read_station_file(file)
        require_finite(frame, values, str(file))
        if id_column not in frame.columns:
            frame.insert(0, id_column, series_name(file))
        if frames and set(frame.columns) != set(frames[0].columns):
            raise DataError(
                f"{file}: columns {sorted(frame.columns)} differ from {files[0].name}'s {sorted(frames[0].columns)}; "
                "every station file in a folder needs the same columns"
            )
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def require_finite(frame: pd.DataFrame, columns: Sequence[str], source: str, where: str = "") -> None:
    """Raise a DataError naming ``source``, the column and the row (the frame's index label) of the first infinite
    value in ``columns`` (those present); NaN passes, it is a gap for the gap rules. ``where`` names a column whose
    value is added to the row (the series or region)."""
    for col in columns:
        if col not in frame.columns:
            continue
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        bad = np.isinf(values)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            context = f", {where} {frame[where].iloc[pos]!r}" if where and where in frame.columns else ""
            raise DataError(
                f"{source}: column {col!r} has {int(bad.sum())} infinite value(s), the first {values[pos]} in row "
                f"{frame.index[pos]}{context}; expected finite numbers (leave a missing value empty)"
            )


def parse_dates(values: pd.Series, source: str, column: str, date_format: str | None = None) -> pd.Series:
    """``values`` as dates: with ``date_format`` (strptime codes, e.g. ``%d/%m/%Y``) when given, else the format
    inferred from the column. Numeric day and month that fit either way in every row (``03/04/2001``) are an
    error naming both readings, so a column is never read month-first without a word; an unparseable or empty
    date is an error naming its row."""
    if date_format:
        dates = pd.to_datetime(values, format=date_format, errors="coerce")
    elif pd.api.types.is_datetime64_any_dtype(values):
        dates = values
    else:
        dates = _inferred_dates(values, source, column)
    bad = dates.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        expected = f" (expected data.date_format={date_format!r})" if date_format else ""
        raise DataError(
            f"{source}: column {column!r} has an unparseable date {values.iloc[row]!r} (row {values.index[row]}){expected}"
        )
    return dates


def _inferred_dates(values: pd.Series, source: str, column: str) -> pd.Series:
    """Dates in the format of the column's first value; day-first or month-first when only one reads every row."""
    text = values.dropna().astype(str)
    guessed = guess_datetime_format(text.iloc[0]) if len(text) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pandas' note on falling back to per-value parsing
        if guessed is not None and not _day_and_month_numeric(guessed):
            return pd.to_datetime(values, errors="coerce")  # year first (ISO) or a month name: one reading
        if guessed is None:
            formats = (None, None)
            month_first = pd.to_datetime(values, errors="coerce")
            day_first = pd.to_datetime(values, errors="coerce", dayfirst=True)
        else:
            formats = (_month_before_day(guessed), _month_before_day(guessed, swap=True))
            month_first, day_first = (pd.to_datetime(values, format=f, errors="coerce") for f in formats)
    missed_month, missed_day = (int((d.isna() & values.notna()).sum()) for d in (month_first, day_first))
    if missed_month == missed_day == 0:
        differ = np.flatnonzero(((month_first != day_first) & month_first.notna()).to_numpy())
        if len(differ):
            row = int(differ[0])
            hint = " or ".join(f"'{f}'" for f in (formats[1], formats[0]) if f) or "'%d/%m/%Y' or '%m/%d/%Y'"
            raise DataError(
                f"{source}: column {column!r} has dates that read both day-first and month-first: "
                f"{values.iloc[row]!r} (row {values.index[row]}) is {day_first.iloc[row].date()} day-first or "
                f"{month_first.iloc[row].date()} month-first; set data.date_format ({hint})"
            )
    return day_first if missed_day < missed_month else month_first


def _day_and_month_numeric(fmt: str) -> bool:
    """Whether a strptime format has numeric day and month whose order is not fixed by a leading year."""
    if "%d" not in fmt or "%m" not in fmt:
        return False
    year = min((fmt.index(y) for y in ("%Y", "%y") if y in fmt), default=len(fmt))
    return year > min(fmt.index("%d"), fmt.index("%m"))


def _month_before_day(fmt: str, swap: bool = False) -> str:
    """``fmt`` with its numeric month first (``%m/%d/%Y``), or day first with ``swap``."""
    first, second = ("%d", "%m") if swap else ("%m", "%d")
    earlier, later = ("%d", "%m") if fmt.index("%d") < fmt.index("%m") else ("%m", "%d")
    return fmt.replace(earlier, "\0").replace(later, second).replace("\0", first)


def series_name(path: str | Path) -> str:
    """The series a file without an id column holds: its name before the first dot (``brussels.csv.gz``)."""
    return Path(path).name.split(".")[0]


def _read_station_file(path: Path) -> pd.DataFrame:
    return read_aquacrop_climate(path) if is_aquacrop_climate(path) else read_table(path, "daily table")


def is_aquacrop_climate(path: Path) -> bool:
    """Whether ``path`` is a climate file of the FAO AquaCrop crop model: whitespace-separated text whose header
    starts ``Day Month Year`` (then Tmin, Tmax, precipitation, reference ET)."""
    if not (path.is_file() and path.name.lower().endswith(".txt")):
        return False
    with path.open(encoding="utf-8", errors="replace") as handle:
        return handle.readline().split()[:3] == AQUACROP_DATE


def read_aquacrop_climate(path: Path) -> pd.DataFrame:
    """An AquaCrop climate file as ``date, tmin, tmax, precip, et0`` (degC, mm/day); its columns are taken by
    position, as AquaCrop reads them, since their names vary between files (``Tmax(C)``, ``MaxTemp``, ...)."""
    try:
        raw = pd.read_csv(path, sep=r"\s+")
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a whitespace-separated AquaCrop climate file ({exc})") from exc
    if raw.shape[1] < len(AQUACROP_DATE) + len(AQUACROP_VALUES):
        raise DataError(
            f"{path}: an AquaCrop climate file needs the columns Day Month Year Tmin Tmax Prcp Et0; "
            f"found {list(raw.columns)}"
        )
    date = pd.to_datetime(
        raw.iloc[:, :3].set_axis(["day", "month", "year"], axis=1)[["year", "month", "day"]], errors="coerce"
    )
    if date.isna().any():
        row = int(np.flatnonzero(date.isna().to_numpy())[0])
        raise DataError(f"{path}: row {row} has no valid Day/Month/Year ({raw.iloc[row, :3].tolist()})")
    values = raw.iloc[:, 3 : 3 + len(AQUACROP_VALUES)].set_axis(list(AQUACROP_VALUES), axis=1)
    return pd.concat([pd.DataFrame({"date": date}), values], axis=1)


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
    optional_covariates: Sequence[str] = (),
    date_format: str | None = None,
) -> pd.DataFrame:
    """Check and normalise a long-format daily table into ``series_id, date, target, *covariates,
    *optional_covariates``.

    Without an id column the whole file is one series named after the file. The result is sorted, daily and
    gap-free; it is NaN-free except for an optional covariate in the series that lack it entirely, and free of
    infinite values (an error). Dates are read with ``date_format`` when given (see :func:`parse_dates`).
    """
    if fill_gaps not in (None, "interpolate"):
        raise ConfigError(f"data.fill_gaps={fill_gaps!r}: expected null or 'interpolate'")
    frame = frame.copy()
    if id_column not in frame.columns:
        frame[id_column] = series_name(source)
    _require(frame, [date_column, target, *covariates], source)
    optional = [c for c in optional_covariates if c not in (target, *covariates)]
    for col in optional:
        if col not in frame.columns:
            frame[col] = np.nan
    if expected_units is not None and units_column in frame.columns:
        bad = frame.loc[frame[units_column].astype(str) != expected_units, units_column]
        if len(bad):
            raise DataError(
                f"{source}: column {units_column!r} has {sorted(map(str, bad.unique()))[:3]}, "
                f"expected {expected_units!r} for every row (convert the values first)"
            )
    dates = parse_dates(frame[date_column], source, date_column, date_format)
    out = pd.DataFrame({"series_id": frame[id_column].astype(str).to_numpy(), "date": dates.dt.normalize().to_numpy()})
    for col in [target, *covariates, *optional]:
        values = pd.to_numeric(frame[col], errors="coerce")
        if (values.isna() & frame[col].notna()).any():
            raise DataError(f"{source}: column {col!r} has non-numeric values")
        require_finite(frame.assign(**{col: values}), [col], source, where=id_column)
        out[col] = values.astype("float64").to_numpy()
    out = out.sort_values(["series_id", "date"], kind="stable").reset_index(drop=True)
    # a series without an optional covariate holds 0 there while gaps are checked, NaN again afterwards
    lacking: dict[str, set[str]] = {}
    for col in optional:
        flags = out[col].isna().groupby(out["series_id"]).all()
        lacking[col] = set(flags.index[flags])
        out.loc[out["series_id"].isin(lacking[col]), col] = 0.0
    dup = out.duplicated(["series_id", "date"])
    if dup.any():
        first = out.loc[dup.idxmax()]
        raise DataError(
            f"{source}: {int(dup.sum())} duplicated (series, date) row(s), first {first['series_id']!r} "
            f"{first['date'].date()}; expected one row per series and day"
        )
    out = _regularise(out, source, [target, *covariates, *optional], fill_gaps, max_gap)
    for col, series in lacking.items():
        out.loc[out["series_id"].isin(series), col] = np.nan
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


def validate_season_weather(
    raw: pd.DataFrame,
    source: str,
    region_column: str = "region",
    months: tuple[int, int] = SEASON_MONTHS,
    max_gap: int = 3,
    date_format: str | None = None,
) -> pd.DataFrame:
    """Daily weather for the yield model as ``region, date, tmax, tmin, precip``: only each region-year's growing
    season (``months``, inclusive) is kept and checked like a daily series (duplicates, non-numeric and infinite
    values, units; gaps of up to ``max_gap`` days interpolated, longer ones an error), so files holding the seasons
    only are fine. Every date of the file is read (with ``date_format`` when given; see :func:`parse_dates`).
    Seasons that do not run from the first to the last day of the season are dropped: a yield year that needs
    one then fails with an error naming its region and year."""
    if region_column not in raw.columns:
        raise DataError(f"{source}: missing column {region_column!r} (data.region_column); found {list(raw.columns)}")
    _require(raw, ["date"], source)
    dates = parse_dates(raw["date"], source, "date", date_format)
    keep = dates.dt.month.between(*months)
    require_finite(raw.loc[keep], SEASON_VALUES, source, where=region_column)
    frame = raw.loc[keep].assign(
        date=dates[keep], season=raw.loc[keep, region_column].astype(str) + SEASON_KEY + dates[keep].dt.year.astype(str)
    )
    checked = validate_series(
        frame, source, "tmax", ["tmin", "precip"], "season", fill_gaps="interpolate", max_gap=max_gap
    )
    span = checked.groupby("series_id")["date"].agg(["min", "max"])
    first = pd.to_datetime(pd.DataFrame({"year": span["min"].dt.year, "month": months[0], "day": 1}))
    last = pd.to_datetime(pd.DataFrame({"year": span["min"].dt.year, "month": months[1], "day": 1})) + MonthEnd(0)
    complete = checked["series_id"].isin(span.index[(span["min"] == first) & (span["max"] == last)])
    checked = checked.loc[complete].reset_index(drop=True)
    region = checked["series_id"].str.rsplit(SEASON_KEY, n=1).str[0]
    return checked.assign(series_id=region).rename(columns={"series_id": "region"})


def validate_yield(
    frame: pd.DataFrame,
    source: str,
    region_column: str = "region",
    year_column: str = "year",
    target: str = "yield",
    covariates: Sequence[str] = (),
    allow_missing_target: bool = False,
) -> pd.DataFrame:
    """Check a region x year yield table: required columns, integer years, one row per region-year, no NaN yield
    (``allow_missing_target``: an empty yield marks a season to forecast), no infinite value."""
    _require(frame, [region_column, year_column, target, *covariates], source)
    out = pd.DataFrame({"region": frame[region_column].astype(str).to_numpy()})
    years = pd.to_numeric(frame[year_column], errors="coerce")
    if years.isna().any() or (years % 1 != 0).any():
        raise DataError(f"{source}: column {year_column!r} must hold integer years")
    out["year"] = years.astype(int).to_numpy()
    for col in [target, *covariates]:
        values = pd.to_numeric(frame[col], errors="coerce")
        missing = values.isna()
        if allow_missing_target and col == target:
            missing &= frame[col].notna()  # a blank yield marks a season to forecast
        if missing.any():
            raise DataError(f"{source}: column {col!r} has {int(missing.sum())} missing or non-numeric value(s)")
        require_finite(frame.assign(**{col: values}), [col], source, where=region_column)
        out["yield" if col == target else col] = values.to_numpy(dtype=float)
    dup = out.duplicated(["region", "year"])
    if dup.any():
        first = out.loc[dup.idxmax()]
        raise DataError(
            f"{source}: duplicated region-year ({first['region']!r}, {first['year']}); expected one row each"
        )
    return out.sort_values(["region", "year"]).reset_index(drop=True)
