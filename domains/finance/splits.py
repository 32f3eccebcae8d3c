"""Time-based splits: validation / train / delay / test windows and the handbook's prequential folds.

Windows are given in days (floats allowed, e.g. for the two-day Kaggle file). Validation sits just
before the training window (its labels are known when the model is trained); the ``delay`` window
between train and test is left out because its labels are not yet known at deployment time.
No shuffled split is ever made on time-ordered data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sectorkit.core.errors import ConfigError, DataError

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Windows:
    """Start (in days since the first day's midnight) and lengths of the split windows."""

    train_start: float
    train_days: float = 7
    delay_days: float = 7
    test_days: float = 7
    valid_days: float = 7

    @property
    def test_start(self) -> float:
        return self.train_start + self.train_days + self.delay_days

    def bounds(self) -> dict[str, tuple[float, float]]:
        """[start, end) of each window, in days."""
        return {
            "valid": (self.train_start - self.valid_days, self.train_start),
            "train": (self.train_start, self.train_start + self.train_days),
            "test": (self.test_start, self.test_start + self.test_days),
        }


def resolve_start(train_start: float | str | None, datetimes: pd.Series, seconds: np.ndarray, w: Windows) -> float:
    """Train start in days: a number of days, a date (for datetime data), or ``None`` = test ends at the data end."""
    if train_start is None:
        end_day = float(np.ceil(seconds.max() / SECONDS_PER_DAY + 1e-9)) if len(seconds) else 0.0
        return end_day - w.test_days - w.delay_days - w.train_days
    if isinstance(train_start, str):
        try:
            stamp = pd.Timestamp(train_start)
        except ValueError as exc:
            raise ConfigError(f"data.split.train_start={train_start!r}: expected a date (YYYY-MM-DD), a number of days or null") from exc
        origin = pd.Timestamp(pd.to_datetime(datetimes).min()).normalize()
        return (stamp - origin) / pd.Timedelta(days=1)
    return float(train_start)


def window_masks(seconds: np.ndarray, w: Windows) -> dict[str, np.ndarray]:
    """Boolean masks of the validation, train and test windows (the delay window is in none)."""
    days = seconds / SECONDS_PER_DAY
    return {name: (days >= lo) & (days < hi) for name, (lo, hi) in w.bounds().items()}


def known_fraud_card_mask(frame: pd.DataFrame, w: Windows) -> np.ndarray:
    """Test rows whose card already had a fraud with a known label (handbook protocol: drop them).

    A card counts as known-compromised on test day D when it had a fraud on or after the train start and
    before D - delay (labels become known ``delay`` days later).
    """
    if "card" not in frame or "label" not in frame:
        return np.zeros(len(frame), dtype=bool)
    days = frame["seconds"].to_numpy() / SECONDS_PER_DAY
    is_fraud = (frame["label"].to_numpy() == 1) & (days >= w.train_start)
    codes, uniques = pd.factorize(frame["card"])
    first = np.full(len(uniques), np.inf)
    np.minimum.at(first, codes[is_fraud], np.floor(days[is_fraud]))
    test_day = np.floor(days)
    return first[codes] < test_day - w.delay_days


def split_frame(frame: pd.DataFrame, w: Windows, drop_known_frauds: bool = True, source: str = "data") -> dict[str, np.ndarray]:
    """Row indices of each window, checked: every window non-empty, the training window holds fraud."""
    masks = window_masks(frame["seconds"].to_numpy(), w)
    if drop_known_frauds:
        masks["test"] &= ~known_fraud_card_mask(frame, w)
    out = {name: np.flatnonzero(mask) for name, mask in masks.items()}
    for name, (lo, hi) in w.bounds().items():
        if name == "valid" and w.valid_days == 0:
            continue
        if len(out[name]) == 0:
            span = frame["seconds"].agg(["min", "max"]) / SECONDS_PER_DAY
            raise DataError(
                f"{source}: the {name} window [{lo:g}, {hi:g}) days has no transactions (data covers days {span['min']:.2f}-{span['max']:.2f}); "
                "adjust data.split.train_start / train_days / delay_days / test_days / valid_days"
            )
    if "label" in frame and frame["label"].to_numpy()[out["train"]].sum() == 0:
        lo, hi = w.bounds()["train"]
        raise DataError(f"{source}: the training window [{lo:g}, {hi:g}) days has no fraud (label column); move or widen data.split.train_start / train_days")
    return out


def prequential_windows(start: float, n_folds: int = 4, train_days: float = 7, delay_days: float = 7, test_days: float = 7, valid_days: float = 0) -> list[Windows]:
    """The handbook's prequential folds: fold k trains from ``start - k * test_days`` (k = 0..n_folds-1)."""
    if n_folds < 1:
        raise ConfigError(f"n_folds={n_folds}: expected at least 1")
    return [Windows(start - k * test_days, train_days, delay_days, test_days, valid_days) for k in range(n_folds)]
