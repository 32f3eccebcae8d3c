"""Cleaning an interaction log: duplicates, missing timestamps, implicit feedback, k-core, id mapping."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sectorkit.core.errors import ConfigError, DataError

DUPLICATE_POLICIES = ("last", "first", "keep", "error")
TIMESTAMP_POLICIES = ("error", "row_order", "drop")


def handle_duplicates(frame: pd.DataFrame, policy: str = "last", source: str = "interactions") -> pd.DataFrame:
    """Repeated (user, item) pairs: keep the ``last``/``first`` by time, ``keep`` them all, or ``error``."""
    if policy not in DUPLICATE_POLICIES:
        raise ConfigError(f"data.duplicates={policy!r}; expected one of {', '.join(DUPLICATE_POLICIES)}")
    if policy == "keep":
        return frame
    dup = frame.duplicated(["user", "item"], keep=False)
    if not dup.any():
        return frame
    if policy == "error":
        row = frame[dup].iloc[0]
        raise DataError(
            f"{source}: {int(dup.sum())} rows repeat a (user, item) pair, e.g. user {row['user']!r} item {row['item']!r}; "
            "set data.duplicates to last, first or keep"
        )
    ordered = frame.sort_values("timestamp", kind="stable", na_position="first")
    return ordered.drop_duplicates(["user", "item"], keep=policy).sort_index()


def handle_missing_timestamps(frame: pd.DataFrame, policy: str = "error", source: str = "interactions") -> pd.DataFrame:
    """Missing timestamps: ``error``, ``row_order`` (file order is time order) or ``drop`` those rows."""
    if policy not in TIMESTAMP_POLICIES:
        raise ConfigError(f"data.missing_timestamps={policy!r}; expected one of {', '.join(TIMESTAMP_POLICIES)}")
    missing = frame["timestamp"].isna()
    if not missing.any():
        return frame
    if policy == "error":
        raise DataError(
            f"{source}: {int(missing.sum())} of {len(frame)} rows have no timestamp (column 'timestamp'); "
            "set data.missing_timestamps=row_order to use the file order as time, or drop to remove them"
        )
    if policy == "drop":
        kept = frame[~missing]
        if kept.empty:
            raise DataError(f"{source}: every row lacks a timestamp, nothing left after data.missing_timestamps=drop")
        return kept
    out = frame.copy()
    out["timestamp"] = np.arange(len(out), dtype="float64")
    return out


def to_implicit(frame: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """Keep interactions with ``rating >= threshold`` (all of them when ``threshold`` is None); rating becomes 1."""
    kept = frame if threshold is None else frame[frame["rating"] >= threshold]
    if kept.empty:
        raise DataError(f"no interaction has rating >= {threshold} (data.rating_threshold); nothing to learn from")
    return kept.assign(rating=1.0)


def k_core(frame: pd.DataFrame, min_user: int = 0, min_item: int = 0, max_rounds: int = 100) -> pd.DataFrame:
    """Repeatedly drop users with fewer than ``min_user`` and items with fewer than ``min_item`` interactions."""
    out = frame
    for _ in range(max_rounds):
        user_counts = out["user"].map(out["user"].value_counts())
        item_counts = out["item"].map(out["item"].value_counts())
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            break
        out = out[keep]
    if out.empty:
        raise DataError(f"k-core filtering (data.min_user_interactions={min_user}, data.min_item_interactions={min_item}) removed every interaction")
    return out


def build_id_map(values: pd.Series) -> list[str]:
    """The sorted distinct ids: position in this list is the internal index (a plain list, checkpoint-safe)."""
    return sorted(pd.unique(values.astype(str)).tolist())


def encode(values: pd.Series, ids: list[str]) -> np.ndarray:
    """Internal indices of ``values`` under ``ids``; -1 for ids not in the map."""
    index = pd.Index(ids)
    return index.get_indexer(values.astype(str)).astype(np.int64)
