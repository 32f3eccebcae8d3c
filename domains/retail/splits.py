"""Train/validation/test splits of an encoded interaction log (columns ``user``, ``item``, ``timestamp`` as ints/floats).

* ``ratio``: per user, ``ratios`` (default 8:1:1) of their interactions, in ``random`` or ``temporal`` order;
  counts follow RecBole's rule (validation and test get ``floor(ratio * n)``, a user with fewer than 10
  interactions still gives one to each of them while at least 2 stay in train);
* ``leave_one_out``: per user, the last interaction is test and the one before is validation (temporal);
  users with fewer than 3 interactions only train;
* ``temporal``: one global cut by time quantiles; validation/test users are those with history in train.

Each function returns an int array of split labels (0 train, 1 validation, 2 test), one per row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sectorkit.core.errors import ConfigError

SPLIT_METHODS = ("ratio", "leave_one_out", "temporal")


def _position_in_user(frame: pd.DataFrame, order: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's position within its user (0-based) under ``order``, and the user's interaction count."""
    if order == "random":
        key = np.random.default_rng(seed).random(len(frame))
    elif order == "temporal":
        key = frame["timestamp"].to_numpy(dtype="float64")
    else:
        raise ConfigError(f"data.split.order={order!r}; expected random or temporal")
    sort = np.lexsort((np.arange(len(frame)), key, frame["user"].to_numpy()))
    users = frame["user"].to_numpy()[sort]
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    counts_sorted = np.diff(np.r_[starts, len(users)])
    group = np.repeat(np.arange(len(starts)), counts_sorted)
    position = np.empty(len(frame), dtype=np.int64)
    position[sort] = np.arange(len(frame)) - starts[group]
    count = np.empty(len(frame), dtype=np.int64)
    count[sort] = counts_sorted[group]
    return position, count


def ratio_counts(n: np.ndarray, ratios: list[float]) -> np.ndarray:
    """Per-part counts for users with ``n`` interactions (vectorised RecBole ``_calcu_split_ids``)."""
    ratios = [r / sum(ratios) for r in ratios]
    n = np.asarray(n, dtype=np.int64)
    cnt = np.stack([np.floor(r * n).astype(np.int64) for r in ratios], axis=1)
    cnt[:, 0] = n - cnt[:, 1:].sum(axis=1)
    active = np.ones(len(n), dtype=bool)
    for i in range(1, len(ratios)):
        active &= cnt[:, 0] > 1
        bump = active & (ratios[-i] * n > 0) & (ratios[-i] * n < 1)
        cnt[bump, -i] += 1
        cnt[bump, 0] -= 1
    return cnt


def ratio_split(frame: pd.DataFrame, ratios: list[float] = (0.8, 0.1, 0.1), order: str = "random", seed: int = 0) -> np.ndarray:
    """Per-user ratio split in random or temporal order."""
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0:
        raise ConfigError(f"data.split.ratios={list(ratios)}; expected three non-negative numbers (train, validation, test)")
    position, count = _position_in_user(frame, order, seed)
    cnt = ratio_counts(count, list(ratios))
    labels = np.zeros(len(frame), dtype=np.int64)
    labels[position >= cnt[:, 0]] = 1
    labels[position >= cnt[:, 0] + cnt[:, 1]] = 2
    return labels


def leave_one_out_split(frame: pd.DataFrame) -> np.ndarray:
    """Per user, last interaction (by time) is test, the one before validation; fewer than 3: train only."""
    position, count = _position_in_user(frame, "temporal", 0)
    labels = np.zeros(len(frame), dtype=np.int64)
    eligible = count >= 3
    labels[eligible & (position == count - 2)] = 1
    labels[eligible & (position == count - 1)] = 2
    return labels


def temporal_split(frame: pd.DataFrame, ratios: list[float] = (0.8, 0.1, 0.1)) -> np.ndarray:
    """Global cut: the earliest ``ratios[0]`` of interactions train, then validation, then test."""
    total = sum(ratios)
    times = frame["timestamp"].to_numpy(dtype="float64")
    order = np.argsort(times, kind="stable")
    rank = np.empty(len(frame), dtype=np.int64)
    rank[order] = np.arange(len(frame))
    cut1 = int(round(len(frame) * ratios[0] / total))
    cut2 = int(round(len(frame) * (ratios[0] + ratios[1]) / total))
    return np.where(rank < cut1, 0, np.where(rank < cut2, 1, 2)).astype(np.int64)


def make_split(frame: pd.DataFrame, method: str = "ratio", ratios: list[float] = (0.8, 0.1, 0.1), order: str = "random", seed: int = 0) -> np.ndarray:
    """Dispatch on ``data.split.method``."""
    if method == "ratio":
        return ratio_split(frame, ratios, order, seed)
    if method == "leave_one_out":
        return leave_one_out_split(frame)
    if method == "temporal":
        return temporal_split(frame, ratios)
    raise ConfigError(f"data.split.method={method!r}; expected one of {', '.join(SPLIT_METHODS)}")
