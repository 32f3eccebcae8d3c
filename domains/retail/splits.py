"""Train/validation/test splits of an encoded interaction log (columns ``user``, ``item``, ``timestamp`` as ints/floats).

* ``ratio``: per user, ``ratios`` (default 8:1:1) of their interactions, in ``random`` or ``temporal`` order;
  counts follow RecBole's rule (validation and test get ``floor(ratio * n)``, a user with fewer than 10
  interactions still gives one to each of them while at least 2 stay in train);
* ``recbole``: the same counts, with the rows put in RecBole 1.2.1's order first (``RS`` grouped by user):
  ``random`` is its ``RO`` (the table permuted by ``torch.randperm(n)`` drawn right after
  ``torch.manual_seed(seed)``), ``temporal`` its ``TO`` (a stable sort on the float32 copy of the min-max
  normalised timestamp, ties in row order); each user's rows keep that order and the first ones train.
  Given the same rows in the same file order and the same seed, this is RecBole's split row for row;
* ``leave_one_out``: per user, the last interaction is test and the one before is validation (temporal);
  users with fewer than 3 interactions only train;
* ``temporal``: one global cut by time quantiles; validation/test users are those with history in train;
* ``cold_items``: the items (not the interactions) are split by ``ratios``: every interaction of a validation
  item is validation, every interaction of a test item is test, so those items are never seen in training
  (cold-start items, scored from their side information only).

Each function returns an int array of split labels (0 train, 1 validation, 2 test), one per row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from sectorkit.core.errors import ConfigError

SPLIT_METHODS = ("ratio", "recbole", "leave_one_out", "temporal", "cold_items")


def _order_key(frame: pd.DataFrame, order: str, seed: int) -> np.ndarray:
    """The sort key of ``order``: a uniform random number per row, or the timestamp."""
    if order == "random":
        return np.random.default_rng(seed).random(len(frame))
    if order == "temporal":
        return frame["timestamp"].to_numpy(dtype="float64")
    raise ConfigError(f"data.split.order={order!r}; expected random or temporal")


def recbole_order_key(frame: pd.DataFrame, order: str, seed: int) -> np.ndarray:
    """Each row's place in RecBole's ordering of the table before it splits (``RO`` or ``TO``), as a sort key.

    ``random`` (``RO``): RecBole shuffles the whole table with ``torch.randperm(n)`` right after seeding torch,
    so row ``perm[j]`` moves to place ``j``. ``temporal`` (``TO``): RecBole stably sorts its float32 copy of the
    timestamp, min-max normalised as in its ML-100K preset (``normalize_all: True``); float32 makes timestamps
    less than about a second apart tie, and ties keep row order, so the key is rounded the same way here.
    """
    n = len(frame)
    if order == "random":
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
        rank = np.empty(n, dtype=np.int64)
        rank[perm] = np.arange(n)
        return rank
    if order == "temporal":
        times = frame["timestamp"].to_numpy(dtype="float64")
        low, high = (float(times.min()), float(times.max())) if n else (0.0, 0.0)
        scaled = (times - low) / (high - low) if high > low else np.ones(n)
        return scaled.astype(np.float32)
    raise ConfigError(f"data.split.order={order!r}; expected random or temporal")


def _position_in_user(frame: pd.DataFrame, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's position within its user (0-based) when sorted by ``key`` (ties in row order), and the
    user's interaction count."""
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


def _check_ratios(ratios: list[float]) -> None:
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0:
        raise ConfigError(f"data.split.ratios={list(ratios)}; expected three non-negative numbers (train, validation, test)")


def _labels_by_position(position: np.ndarray, count: np.ndarray, ratios: list[float]) -> np.ndarray:
    """Per user: the first ``cnt[0]`` rows train, the next ``cnt[1]`` validation, the rest test."""
    cnt = ratio_counts(count, list(ratios))
    labels = np.zeros(len(position), dtype=np.int64)
    labels[position >= cnt[:, 0]] = 1
    labels[position >= cnt[:, 0] + cnt[:, 1]] = 2
    return labels


def ratio_split(frame: pd.DataFrame, ratios: list[float] = (0.8, 0.1, 0.1), order: str = "random", seed: int = 0) -> np.ndarray:
    """Per-user ratio split in random or temporal order."""
    _check_ratios(ratios)
    return _labels_by_position(*_position_in_user(frame, _order_key(frame, order, seed)), ratios)


def recbole_split(frame: pd.DataFrame, ratios: list[float] = (0.8, 0.1, 0.1), order: str = "random", seed: int = 0) -> np.ndarray:
    """RecBole 1.2.1's ``RS`` split grouped by user, in its ``RO`` (``random``) or ``TO`` (``temporal``) order:
    rows ordered by :func:`recbole_order_key`, then per user the counts of :func:`ratio_counts`."""
    _check_ratios(ratios)
    return _labels_by_position(*_position_in_user(frame, recbole_order_key(frame, order, seed)), ratios)


def leave_one_out_split(frame: pd.DataFrame) -> np.ndarray:
    """Per user, last interaction (by time) is test, the one before validation; fewer than 3: train only."""
    position, count = _position_in_user(frame, _order_key(frame, "temporal", 0))
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


def cold_items_split(frame: pd.DataFrame, ratios: list[float] = (0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Hold out whole items: a random ``ratios[1]`` share of the items (at least one) give all their
    interactions to validation, another ``ratios[2]`` share (at least one) to test; the rest train."""
    _check_ratios(ratios)
    total = sum(ratios)
    items = np.unique(frame["item"].to_numpy())
    n_valid = max(int(round(len(items) * ratios[1] / total)), 1 if ratios[1] > 0 else 0)
    n_test = max(int(round(len(items) * ratios[2] / total)), 1)
    if n_valid + n_test >= len(items):
        raise ConfigError(f"data.split.ratios={list(ratios)}: holding out {n_valid} + {n_test} of {len(items)} items leaves none to train on")
    order = np.random.default_rng(seed).permutation(items)
    part = pd.Series(0, index=items, dtype=np.int64)
    part[order[:n_valid]] = 1
    part[order[n_valid:n_valid + n_test]] = 2
    return part.reindex(frame["item"].to_numpy()).to_numpy(dtype=np.int64)


def make_split(frame: pd.DataFrame, method: str = "ratio", ratios: list[float] = (0.8, 0.1, 0.1), order: str = "random", seed: int = 0) -> np.ndarray:
    """Dispatch on ``data.split.method``."""
    if method == "ratio":
        return ratio_split(frame, ratios, order, seed)
    if method == "recbole":
        return recbole_split(frame, ratios, order, seed)
    if method == "leave_one_out":
        return leave_one_out_split(frame)
    if method == "temporal":
        return temporal_split(frame, ratios)
    if method == "cold_items":
        return cold_items_split(frame, ratios, seed)
    raise ConfigError(f"data.split.method={method!r}; expected one of {', '.join(SPLIT_METHODS)}")
