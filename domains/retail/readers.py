"""Readers for interaction logs: MovieLens ``u.data`` / ``ratings.csv``, RecBole ``.inter`` and any CSV/Parquet.

Every reader returns the same frame: ``user`` and ``item`` as strings (ids are labels, never numbers),
``rating`` (float, 1.0 when the file has none) and ``timestamp`` (float, NaN when missing).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from sectorkit.core.errors import DataError

COLUMNS = ["user", "item", "rating", "timestamp"]
MOVIELENS_UDATA = ["user", "item", "rating", "timestamp"]
MOVIELENS_CSV = {"userId": "user", "movieId": "item", "rating": "rating", "timestamp": "timestamp"}
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}  # pandas decompresses these (and .zip) by suffix
DAMAGED_ARCHIVE = (EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, OSError)  # gzip.BadGzipFile is an OSError


def plain_name(path: Path) -> str:
    """The lower-case file name without a compression suffix (``ratings.csv.gz`` -> ``ratings.csv``)."""
    name = path.name.lower()
    for suffix in (*COMPRESSED, ".zip"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_compressed(path: Path) -> bool:
    return plain_name(path) != path.name.lower()


def _open_bytes(path: Path) -> IO[bytes]:
    """``path`` opened for reading its (decompressed) bytes, as pandas reads it."""
    name = path.name.lower()
    for suffix, opener in COMPRESSED.items():
        if name.endswith(suffix):
            return opener(path, "rb")
    if name.endswith(".zip"):
        archive = zipfile.ZipFile(path)
        return archive.open(archive.namelist()[0])
    return open(path, "rb")


def locate_fault(path: Path) -> str:
    """Where reading ``path`` line by line first fails: the line that is not UTF-8 (and the byte), or the last
    whole line before a compressed stream breaks off. Only run after a read failed (it reads the file again)."""
    line = 0
    try:
        with _open_bytes(path) as handle:
            for line, raw in enumerate(handle, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    return f"line {line}, byte 0x{raw[err.start]:02x} at column {err.start + 1}"
    except DAMAGED_ARCHIVE:
        return f"after line {line}" if line else "before its first line"
    return ""


def detect_format(path: Path) -> str:
    """The reader to use for ``path``: ``udata``, ``movielens_csv``, ``inter``, ``parquet`` or ``csv`` (a
    ``.gz``/``.bz2``/``.xz``/``.zip`` suffix is looked through)."""
    name = plain_name(path)
    if name == "u.data" or name.endswith(".data"):
        return "udata"
    if name.endswith(".inter"):
        return "inter"
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith(".csv") or name.endswith(".tsv") or name.endswith(".txt"):
        return "csv"
    raise DataError(f"{path}: cannot tell the file format from its name; set data.format to one of udata, movielens_csv, inter, csv, parquet")


def _read_table(path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` with every way a file can be unreadable turned into a one-line DataError naming it."""
    try:
        return pd.read_csv(path, dtype=str, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected one interaction per row") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not a readable delimited file ({str(err).splitlines()[0]})") from None
    except UnicodeDecodeError:
        where = locate_fault(path)
        raise DataError(f"{path}: not UTF-8 text ({where or 'undecodable bytes'}); ids and column names must be UTF-8, "
                        "so convert the file (e.g. iconv -f latin1 -t utf-8)") from None
    except DAMAGED_ARCHIVE as err:
        if not is_compressed(path):
            raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None
        where = locate_fault(path)
        raise DataError(f"{path}: the compressed file is truncated or damaged ({str(err).splitlines()[0] or type(err).__name__}"
                        f"{'; it breaks off ' + where if where else ''})") from None


def read_interactions(
    path: str | Path,
    format: str = "auto",
    user_column: str = "user_id",
    item_column: str = "item_id",
    rating_column: str | None = "rating",
    timestamp_column: str | None = "timestamp",
    separator: str | None = None,
) -> pd.DataFrame:
    """Read an interaction log into the standard ``user, item, rating, timestamp`` frame.

    ``user_column``/``item_column``/``rating_column``/``timestamp_column`` name the columns of generic CSV/Parquet
    files (the MovieLens and RecBole layouts are recognised without them). A missing rating column means
    implicit feedback (rating 1); a missing timestamp column gives NaN timestamps (see ``fill_timestamps``).
    """
    file = Path(path).expanduser()
    if file.is_dir():
        raise DataError(f"{file}: is a folder, expected a file (one interaction log: u.data, ratings.csv, .inter, .csv or .parquet; from data.path)")
    if not file.is_file():
        raise DataError(f"{file}: no such file (from data.path)")
    if file.stat().st_size == 0:
        raise DataError(f"{file}: the file is empty; expected one interaction per row")
    fmt = detect_format(file) if format == "auto" else format
    if fmt == "csv" and plain_name(file) == "ratings.csv":
        fmt = "movielens_csv"
    if fmt == "udata":
        raw = _read_table(file, sep=separator or "\t", header=None, names=MOVIELENS_UDATA, usecols=range(4))
        return _standardise(raw, file, "user", "item", "rating", "timestamp")
    if fmt == "movielens_csv":
        raw = _read_table(file, sep=separator or ",").rename(columns=MOVIELENS_CSV)
        return _standardise(raw, file, "user", "item", "rating", "timestamp")
    if fmt == "inter":
        raw = _read_table(file, sep=separator or "\t")
        raw.columns = [c.split(":")[0] for c in raw.columns]  # RecBole headers are name:type
        return _standardise(raw, file, user_column, item_column, rating_column, timestamp_column)
    if fmt == "parquet":
        try:
            raw = pd.read_parquet(file)
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise DataError(f"{file}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
        return _standardise(raw, file, user_column, item_column, rating_column, timestamp_column)
    if fmt == "csv":
        sep = separator or ("\t" if plain_name(file).endswith(".tsv") else ",")
        raw = _read_table(file, sep=sep)
        return _standardise(raw, file, user_column, item_column, rating_column, timestamp_column)
    raise DataError(f"data.format={fmt!r} is not supported; expected auto, udata, movielens_csv, inter, csv or parquet")


def standardise_rows(raw: pd.DataFrame, source: str, user_column: str = "user_id", item_column: str = "item_id",
                     rating_column: str | None = "rating", timestamp_column: str | None = "timestamp", **_: Any) -> pd.DataFrame:
    """Rows held in memory (a server's request) as the standard frame: what :func:`read_interactions` gives for a
    Parquet file of them (the named columns; ``format`` and ``separator`` concern files only)."""
    return _standardise(raw, source, user_column, item_column, rating_column, timestamp_column)


def _standardise(
    raw: pd.DataFrame, file: Path | str, user: str, item: str, rating: str | None, timestamp: str | None
) -> pd.DataFrame:
    """Check the columns exist and convert them to the standard names and dtypes."""
    if raw.empty:
        raise DataError(f"{file}: the file has a header but no interactions")
    for role, column in (("user", user), ("item", item)):
        if column not in raw.columns:
            raise DataError(
                f"{file}: no {role} column {column!r} (data.{role}_column); the file has columns {list(raw.columns)}"
            )
    out = pd.DataFrame({"user": raw[user].astype("string").str.strip(), "item": raw[item].astype("string").str.strip()})
    missing_ids = out["user"].isna() | out["item"].isna() | (out["user"] == "") | (out["item"] == "")
    if missing_ids.any():
        first = int(np.flatnonzero(missing_ids.to_numpy())[0])
        raise DataError(f"{file}: {int(missing_ids.sum())} rows have an empty user or item id (first at data row {first + 1})")
    out["user"] = out["user"].astype(str)
    out["item"] = out["item"].astype(str)
    out["rating"] = _numeric(raw, rating, file, default=1.0)
    out["timestamp"] = _numeric(raw, timestamp, file, default=np.nan, allow_dates=True)
    return out


def _numeric(raw: pd.DataFrame, column: str | None, file: Path, default: float, allow_dates: bool = False) -> pd.Series:
    if not column or column not in raw.columns:
        return pd.Series(default, index=raw.index, dtype="float64")
    values = pd.to_numeric(raw[column], errors="coerce")
    bad = values.isna() & raw[column].notna()
    if bad.any() and allow_dates:
        try:
            dates = pd.to_datetime(raw[column], errors="coerce", utc=True)
            if dates.notna().sum() >= bad.sum():
                return pd.Series((dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds(), index=raw.index, dtype="float64")
        except (ValueError, OverflowError):  # years pandas cannot represent (OutOfBoundsDatetime): not a date column
            pass
    if bad.any():
        example = raw.loc[bad, column].iloc[0]
        raise DataError(f"{file}: column {column!r} has {int(bad.sum())} non-numeric values (e.g. {example!r}); expected numbers")
    return values.astype("float64")
