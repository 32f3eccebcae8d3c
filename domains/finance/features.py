"""Leakage-free, vectorised transaction features (the handbook's chapter 3.3 feature set).

Every window feature of a transaction uses only rows at or before it in time: per-card counts and mean
amounts over (t - w, t]; per-terminal counts and fraud risk over (t - delay - w, t - delay], i.e. only
labels already known ``delay`` days before the transaction. Windows are found with one sort and
``np.searchsorted`` over a (group, time) key, so the cost is O(n log n) with no per-row Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400.0


def _sorted_keys(group: np.ndarray, seconds: np.ndarray, pad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order of rows by (group, time, original position), the sorted float key group*span + time and the sorted
    group codes."""
    codes = pd.factorize(group)[0]
    t = seconds - seconds.min() if len(seconds) else seconds
    span = (t.max() if len(t) else 0.0) + pad + 1.0
    key = codes.astype(np.float64) * span + t
    order = np.lexsort((np.arange(len(key)), key))
    return order, key[order], codes[order]


SHARED_SUM_LIMIT = 1e13  # a running sum over all rows stays accurate to ~0.002 below this total


def _group_prefix_sums(values: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running sums of ``values`` (sorted by group): (sum of the rows before each row, sum up to and including it).

    A window sum is the difference of two of them within one group. While the total of ``|values|`` stays below
    ``SHARED_SUM_LIMIT`` one running sum over all rows is used; above it (a huge amount, say 1e308, or squares that
    overflow) the sums restart at each group, so one card's outlier cannot wipe out the precision of every later
    card's sums.
    """
    with np.errstate(over="ignore"):
        total = float(np.abs(values).sum())
    if total < SHARED_SUM_LIMIT:
        running = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
        return running[:-1], running[1:]
    with np.errstate(over="ignore", invalid="ignore"):
        inclusive = pd.Series(values, copy=False).groupby(codes, sort=False).cumsum().to_numpy(np.float64)
    exclusive = np.zeros_like(inclusive)
    if len(values) > 1:
        exclusive[1:] = np.where(codes[1:] == codes[:-1], inclusive[:-1], 0.0)
    return exclusive, inclusive


def card_windows(card: np.ndarray, seconds: np.ndarray, amount: np.ndarray, windows: Sequence[float]) -> dict[str, np.ndarray]:
    """Per card, the number of transactions and their mean amount over the last ``w`` days (current included)."""
    out: dict[str, np.ndarray] = {}
    if len(card) == 0:
        return {f"card_{k}_{w:g}d": np.zeros(0) for w in windows for k in ("nb_tx", "avg_amount")}
    order, key, codes = _sorted_keys(card, seconds, max(windows) * SECONDS_PER_DAY)
    position = np.arange(len(key))
    before, upto = _group_prefix_sums(amount[order].astype(np.float64), codes)
    for w in windows:
        lo = np.searchsorted(key, key - w * SECONDS_PER_DAY, side="right")  # never before the card's first row
        count = position - lo + 1
        total = upto - before[lo]
        nb, avg = np.empty(len(key)), np.empty(len(key))
        nb[order], avg[order] = count, total / count
        out[f"card_nb_tx_{w:g}d"], out[f"card_avg_amount_{w:g}d"] = nb, avg
    return out


def card_history_features(card: np.ndarray, seconds: np.ndarray, amount: np.ndarray, lag_days: float, days: float) -> dict[str, np.ndarray]:
    """Per card, a baseline of its amounts over (t - lag - days, t - lag] and how the current amount compares.

    The lag keeps a recent burst of inflated amounts (a compromised card) out of the card's own baseline.
    Also the days since the card's previous transaction. NaN where the card has no such history.
    """
    names = ("card_hist_nb_tx", "card_hist_avg_amount", "card_hist_std_amount", "card_amount_hist_ratio",
             "card_amount_hist_zscore", "card_days_since_prev")
    if len(card) == 0:
        return {n: np.zeros(0) for n in names}
    order, key, codes = _sorted_keys(card, seconds, (lag_days + days) * SECONDS_PER_DAY)
    position = np.arange(len(key))
    amt = amount[order].astype(np.float64)
    csum = _group_prefix_sums(amt, codes)[0]  # rows [lo, hi) lie in the current row's card: sums before hi minus before lo
    with np.errstate(over="ignore"):
        csq = _group_prefix_sums(amt * amt, codes)[0]
    hi = np.minimum(np.searchsorted(key, key - lag_days * SECONDS_PER_DAY, side="right"), position)
    lo = np.minimum(np.searchsorted(key, key - (lag_days + days) * SECONDS_PER_DAY, side="right"), hi)
    count = (hi - lo).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = np.where(count > 0, (csum[hi] - csum[lo]) / count, np.nan)
        var = np.where(count > 1, ((csq[hi] - csq[lo]) - count * mean * mean) / np.maximum(count - 1, 1), np.nan)
        std = np.sqrt(np.maximum(var, 0.0))
        ratio = np.where(mean > 0, amt / mean, np.nan)
        zscore = np.where(std > 0, (amt - mean) / std, np.nan)
    # previous row of the same card in (card, time, position) order: same card when its key is within the pad
    same = np.concatenate([[False], np.diff(codes) == 0])
    gap = np.full(len(key), np.nan)
    gap[1:] = (key[1:] - key[:-1]) / SECONDS_PER_DAY
    gap[~same] = np.nan
    out: dict[str, np.ndarray] = {}
    for name, values in zip(names, (count, mean, std, ratio, zscore, gap)):
        col = np.empty(len(key))
        col[order] = values
        out[name] = col
    return out


def terminal_windows(
    terminal: np.ndarray, seconds: np.ndarray, label: np.ndarray, windows: Sequence[float], delay_days: float,
    recency_days: float | None = None,
) -> dict[str, np.ndarray]:
    """Per terminal, the number of transactions and the fraud share over (t - delay - w, t - delay].

    Unknown labels (NaN) count as transactions but not as frauds. Rows after the current one never count.
    With ``recency_days``, also the days from the first and from the last fraud known in
    (t - delay - recency_days, t - delay] to the transaction (NaN where none is known): a compromised terminal
    is clean again after a while, and the age of its run of known frauds tells an ongoing compromise from one
    that has ended, which the window fraud shares cannot.
    """
    recency = ("terminal_days_since_first_fraud", "terminal_days_since_last_fraud") if recency_days is not None else ()
    if len(terminal) == 0:
        return {n: np.zeros(0) for n in (*(f"terminal_{k}_{w:g}d" for w in windows for k in ("nb_tx", "risk")), *recency)}
    longest = max([*windows, recency_days or 0.0])
    order, key, _ = _sorted_keys(terminal, seconds, (longest + delay_days) * SECONDS_PER_DAY)
    n = len(key)
    position = np.arange(n)
    fraud = np.nan_to_num(label.astype(np.float64)[order], nan=0.0)
    csum = np.concatenate([[0.0], np.cumsum(fraud)])
    hi = np.minimum(np.searchsorted(key, key - delay_days * SECONDS_PER_DAY, side="right"), position)

    def lower(days: float) -> np.ndarray:
        return np.minimum(np.searchsorted(key, key - (delay_days + days) * SECONDS_PER_DAY, side="right"), hi)

    def unsort(values: np.ndarray) -> np.ndarray:
        col = np.empty(n)
        col[order] = values
        return col

    out: dict[str, np.ndarray] = {}
    for w in windows:
        lo = lower(w)
        count = (hi - lo).astype(np.float64)
        risk = np.divide(csum[hi] - csum[lo], count, out=np.zeros_like(count), where=count > 0)
        out[f"terminal_nb_tx_{w:g}d"], out[f"terminal_risk_{w:g}d"] = unsort(count), unsort(risk)
    if recency:
        lo = lower(recency_days)
        is_fraud = fraud > 0
        # the last fraud at or before each position, the first at or after it (n where none)
        last = np.maximum.accumulate(np.where(is_fraud, position, -1))
        first = np.minimum.accumulate(np.where(is_fraud, position, n)[::-1])[::-1]
        last_known = np.where(hi > 0, last[np.maximum(hi - 1, 0)], -1)
        has = (hi > lo) & (last_known >= lo)
        for name, idx in zip(recency, (first[lo], last_known)):
            gap = np.full(n, np.nan)
            gap[has] = (key[has] - key[idx[has]]) / SECONDS_PER_DAY
            out[name] = unsort(gap)
    return out


def calendar_flags(when: pd.Series, night_end_hour: int = 6) -> dict[str, np.ndarray]:
    """Weekend flag and night flag (hour <= ``night_end_hour``, as in the handbook)."""
    when = pd.to_datetime(when)
    return {
        "tx_weekend": (when.dt.day_of_week >= 5).to_numpy(np.float64),
        "tx_night": (when.dt.hour <= night_end_hour).to_numpy(np.float64),
    }


def build_features(
    frame: pd.DataFrame,
    windows: Sequence[float] = (1, 7, 30),
    delay_days: float = 7,
    card_features: bool = True,
    terminal_features: bool = True,
    calendar: bool = True,
    amount_ratios: bool = False,
    card_history: bool = False,
    card_history_lag_days: float = 14,
    card_history_days: float = 90,
    terminal_recency: bool = False,
    terminal_recency_days: float = 30,
) -> pd.DataFrame:
    """Engineered features for a canonical frame (columns ``seconds``, ``datetime``, ``amount``, ``card``,
    ``terminal``, ``label``; see :mod:`sectorkit.domains.finance.data`), aligned with its rows."""
    seconds = frame["seconds"].to_numpy(np.float64)
    cols: dict[str, np.ndarray] = {}
    if calendar and "datetime" in frame:
        cols.update(calendar_flags(frame["datetime"]))
    if card_features and "card" in frame:
        cols.update(card_windows(frame["card"].to_numpy(), seconds, frame["amount"].to_numpy(np.float64), windows))
        if amount_ratios:  # how unusual the amount is for this card (x5 amounts of stolen cards stand out)
            amount = frame["amount"].to_numpy(np.float64)
            for w in windows:
                mean = cols[f"card_avg_amount_{w:g}d"]
                cols[f"card_amount_ratio_{w:g}d"] = np.divide(amount, mean, out=np.ones_like(amount), where=mean > 0)
        if card_history:  # baseline that a compromised card's recent x5 amounts cannot inflate
            cols.update(card_history_features(frame["card"].to_numpy(), seconds, frame["amount"].to_numpy(np.float64),
                                              card_history_lag_days, card_history_days))
    if terminal_features and "terminal" in frame:
        label = frame["label"].to_numpy(np.float64) if "label" in frame else np.full(len(frame), np.nan)
        cols.update(terminal_windows(frame["terminal"].to_numpy(), seconds, label, windows, delay_days,
                                     terminal_recency_days if terminal_recency else None))
    return pd.DataFrame(cols, index=frame.index)
