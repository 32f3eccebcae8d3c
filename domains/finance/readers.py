"""Read a user's transaction table (CSV or Parquet) into the canonical frame, with schema checks.

The canonical frame has ``seconds`` (float seconds since the first day's midnight), ``datetime``,
``day`` (integer day index), ``amount``, and when configured ``card``, ``terminal``, ``label``,
``id`` plus the extra numeric / categorical columns under their own names. Rows are sorted by time
(stable: ties keep file order). Every problem raises :class:`sectorkit.core.errors.DataError` naming the file
and the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sectorkit.core.errors import DataError
from sectorkit.core.io import read_table

SECONDS_PER_DAY = 86_400.0


@dataclass
class ColumnSpec:
    """Which columns of the user's file hold what (the ``columns`` section of the data config)."""

    time: str = "TX_DATETIME"
    amount: str = "TX_AMOUNT"
    label: str | None = "TX_FRAUD"
    card: str | None = "CUSTOMER_ID"
    terminal: str | None = "TERMINAL_ID"
    id: str | None = None
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    time_unit: str = "auto"  # auto | datetime | seconds
    time_origin: str = "2018-04-01"  # date that a seconds offset counts from

    def __post_init__(self) -> None:
        self.numeric, self.categorical = list(self.numeric), list(self.categorical)

    def required(self, with_label: bool) -> list[str]:
        """The columns the file must contain."""
        named = [self.time, self.amount, self.card, self.terminal, self.id, *self.numeric, *self.categorical]
        if with_label:
            named.append(self.label)
        return [c for c in named if c]


def _numeric(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """A column as float, with a DataError naming a non-numeric or non-finite (inf) value or an all-NaN column.

    NaN (a missing value) passes; the callers decide where it is allowed. An infinite value is refused: one
    ``inf`` amount turns every window sum it enters into inf or NaN.
    """
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.any():
        example = raw[bad].iloc[0]
        raise DataError(f"{source}: column {column!r} must be numeric; row {int(np.flatnonzero(bad.to_numpy())[0])} holds {example!r}")
    if values.isna().all():
        raise DataError(f"{source}: column {column!r} is entirely empty (all NaN)")
    out = values.to_numpy(np.float64)
    infinite = np.isinf(out)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise DataError(f"{source}: column {column!r} must hold finite numbers; row {row} holds {raw.iloc[row]!r} "
                        f"({int(infinite.sum())} infinite value(s) in all); fix or drop those rows")
    return out


def _times(frame: pd.DataFrame, spec: ColumnSpec, source: str) -> tuple[np.ndarray, pd.Series]:
    """Seconds since the first day's midnight and the datetimes, from a datetime or seconds column."""
    raw = frame[spec.time]
    if raw.isna().all():
        raise DataError(f"{source}: column {spec.time!r} (time) is entirely empty (all NaN)")
    if raw.isna().any():
        raise DataError(f"{source}: column {spec.time!r} (time) has {int(raw.isna().sum())} missing value(s); every transaction needs a time")
    unit = spec.time_unit
    if unit == "auto":
        unit = "seconds" if pd.api.types.is_numeric_dtype(raw) else "datetime"
    if unit == "seconds":
        offsets = _numeric(frame, spec.time, source)
        try:
            when = pd.Series(pd.Timestamp(spec.time_origin) + pd.to_timedelta(offsets, unit="s"), index=frame.index)
        except (OverflowError, ValueError) as exc:  # pandas' OutOfBounds errors are ValueErrors
            row = int(np.nanargmax(np.abs(offsets)))
            raise DataError(f"{source}: column {spec.time!r} (time, seconds since data.columns.time_origin) holds {raw.iloc[row]!r} in "
                            f"row {row}, beyond the dates pandas can represent ({str(exc).splitlines()[0]})") from None
    else:
        try:
            when = pd.to_datetime(raw, errors="raise")
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source}: column {spec.time!r} (time) is not a datetime or a seconds offset "
                            f"({str(exc).splitlines()[0]})") from None
        if getattr(when.dt, "tz", None) is not None:
            when = when.dt.tz_convert("UTC").dt.tz_localize(None)
    missing = when.isna().to_numpy()
    if missing.any():  # text that reads as no time at all ('NaT', 'nan')
        row = int(np.flatnonzero(missing)[0])
        raise DataError(f"{source}: column {spec.time!r} (time) has no time in row {row} ({raw.iloc[row]!r}); every transaction needs a time")
    origin = when.min().normalize()
    seconds = ((when - origin) / pd.Timedelta(seconds=1)).to_numpy(np.float64)
    return seconds, when


def to_canonical(frame: pd.DataFrame, spec: ColumnSpec, source: str, with_label: bool = True, keep: dict[str, str] | None = None) -> pd.DataFrame:
    """Check ``frame`` against ``spec`` and return the canonical, time-sorted frame.

    ``keep`` maps further columns of the file to names in the canonical frame (e.g. the column that assigns rows
    to splits, ``{"fold": "_split"}``); they are copied as strings and must exist. The frame is assembled from
    whole columns at once, so a table with hundreds of columns builds without pandas' fragmentation warnings.
    """
    keep = dict(keep or {})
    missing = [c for c in spec.required(with_label) if c not in frame.columns]
    if missing:
        shown = ", ".join(map(str, list(frame.columns)[:12])) + (" ..." if frame.shape[1] > 12 else "")
        raise DataError(f"{source}: missing column(s) {missing} (from data.columns); it has: {shown}")
    missing = [c for c in keep if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing} (from data.split.column)")
    seconds, when = _times(frame, spec, source)
    cols: dict[str, np.ndarray] = {"seconds": seconds, "datetime": when.to_numpy(), "amount": _numeric(frame, spec.amount, source)}
    if np.isnan(cols["amount"]).any():
        raise DataError(f"{source}: column {spec.amount!r} (amount) has missing values")
    cols["day"] = np.floor(seconds / SECONDS_PER_DAY).astype(np.int64)
    for role in ("card", "terminal", "id"):
        column = getattr(spec, role)
        if column:
            values = frame[column]
            if values.isna().all():
                raise DataError(f"{source}: column {column!r} ({role}) is entirely empty (all NaN)")
            if pd.api.types.is_integer_dtype(values):
                cols[role] = values.to_numpy()
            else:
                cols[role] = values.astype(str).where(values.notna(), "<missing>").to_numpy()
    if spec.id and pd.Series(cols["id"]).duplicated().any():
        ids = pd.Series(cols["id"])
        dup = ids[ids.duplicated()].iloc[0]
        raise DataError(f"{source}: column {spec.id!r} (transaction id) has duplicates, e.g. {dup!r}")
    if spec.label and spec.label in frame.columns:
        label = _numeric(frame, spec.label, source) if with_label else pd.to_numeric(frame[spec.label], errors="coerce").to_numpy(np.float64)
        known = label[~np.isnan(label)]
        if with_label and np.isnan(label).any():
            raise DataError(f"{source}: column {spec.label!r} (label) has {int(np.isnan(label).sum())} missing value(s)")
        if not np.isin(known, (0.0, 1.0)).all():
            raise DataError(f"{source}: column {spec.label!r} (label) must hold 0/1, found {sorted(set(known[~np.isin(known, (0.0, 1.0))]))[:5]}")
        cols["label"] = label
    for column in spec.numeric:
        cols[column] = _numeric(frame, column, source)
    for column in spec.categorical:
        if frame[column].isna().all():
            raise DataError(f"{source}: column {column!r} (categorical) is entirely empty (all NaN)")
        cols[column] = frame[column].astype(str).where(frame[column].notna(), "<missing>").to_numpy()
    for column, name in keep.items():
        cols[name] = frame[column].astype(str).where(frame[column].notna(), "<missing>").to_numpy()
    out = pd.DataFrame(cols)
    if (np.diff(seconds) < 0).any():
        out = out.iloc[np.argsort(seconds, kind="stable")]
    return out.reset_index(drop=True)


def read_transactions(path: str | Path, spec: ColumnSpec, with_label: bool = True, keep: dict[str, str] | None = None) -> pd.DataFrame:
    """Read and validate a user file (see :func:`to_canonical`)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file (from data.path)")
    return to_canonical(read_table(path, "transaction table"), spec, str(path), with_label=with_label, keep=keep)


def sample_spec() -> ColumnSpec:
    """The column roles of the built-in simulator's table."""
    return ColumnSpec(time="TX_DATETIME", amount="TX_AMOUNT", label="TX_FRAUD", card="CUSTOMER_ID", terminal="TERMINAL_ID", id="TRANSACTION_ID")

