"""Time-ordered splits: where the validation, training and test rows come from, and the handbook's prequential folds.

Four protocols (``data.split.method``), all time-ordered, none shuffled:

* ``windows`` (default): windows in days from ``train_start``; ``order`` ``valid_first`` (validation just before
  training, its labels known when the model is trained: ``valid | train | delay | test``) or ``train_first``
  (``train | valid | delay | test``), ``gap_days`` between validation and training;
* ``ranges``: an explicit [start, end) for each split (dates or day numbers), in any order and with any gaps;
* ``column``: a column of the file names each row's split;
* ``fractions``: shares of the rows in time order (e.g. 0.7 / 0.15 / 0.15).

Windows are given in days (floats allowed, e.g. for the two-day Kaggle file). Whatever the protocol, the test rows
come after every labelled (training or validation) row, with ``delay_days`` between the end of the labelled
history and the start of the test window (labels are not yet known there at deployment time): the time-window
protocols place the test window there, the row protocols leave out labelled rows that fall inside the delay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sectorkit.core.errors import ConfigError, DataError

SECONDS_PER_DAY = 86_400.0
SPLITS = ("train", "valid", "test")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Windows:
    """Start (in days since the first day's midnight) and lengths of the split windows.

    ``order``: ``valid_first`` puts validation ``gap_days`` before the training window, ``train_first`` puts it
    ``gap_days`` after; the test window starts ``delay_days`` after whichever of the two ends later.
    """

    train_start: float
    train_days: float = 7
    delay_days: float = 7
    test_days: float = 7
    valid_days: float = 7
    order: str = "valid_first"
    gap_days: float = 0.0

    @property
    def labelled_end(self) -> float:
        """End of the labelled history (training and validation windows)."""
        train_end = self.train_start + self.train_days
        return train_end if self.order == "valid_first" else train_end + self.gap_days + self.valid_days

    @property
    def test_start(self) -> float:
        return self.labelled_end + self.delay_days

    def bounds(self) -> dict[str, tuple[float, float]]:
        """[start, end) of each window, in days."""
        train = (self.train_start, self.train_start + self.train_days)
        if self.order == "valid_first":
            valid = (self.train_start - self.gap_days - self.valid_days, self.train_start - self.gap_days)
        else:
            valid = (train[1] + self.gap_days, train[1] + self.gap_days + self.valid_days)
        return {"valid": valid, "train": train, "test": (self.test_start, self.test_start + self.test_days)}

    def keys(self) -> str:
        return "data.split.train_start / train_days / delay_days / test_days / valid_days / gap_days"


@dataclass(frozen=True)
class Ranges:
    """Explicit [start, end) days of each split: ``data.split.method=ranges``, or the spans a row split covers."""

    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    delay_days: float = 0.0

    @property
    def train_start(self) -> float:
        return self.spans["train"][0]

    @property
    def labelled_end(self) -> float:
        return max(self.spans["train"][1], self.spans["valid"][1])

    @property
    def test_start(self) -> float:
        return self.spans["test"][0]

    def bounds(self) -> dict[str, tuple[float, float]]:
        return {name: self.spans[name] for name in ("valid", "train", "test")}

    def keys(self) -> str:
        return "data.split.train / valid / test"


def to_days(value: float | str, datetimes: pd.Series, key: str) -> float:
    """A number of days since the first day's midnight, or a date (for datetime data) converted to one."""
    if isinstance(value, str):
        try:
            stamp = pd.Timestamp(value)
        except ValueError as exc:
            raise ConfigError(f"{key}={value!r}: expected a date (YYYY-MM-DD), a number of days or null") from exc
        origin = pd.Timestamp(pd.to_datetime(datetimes).min()).normalize()
        return (stamp - origin) / pd.Timedelta(days=1)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r}: expected a date (YYYY-MM-DD) or a number of days")
    return float(value)


def resolve_start(train_start: float | str | None, datetimes: pd.Series, seconds: np.ndarray, w: Windows) -> float:
    """Train start in days: a number of days, a date (for datetime data), or ``None`` = test ends at the data end."""
    if train_start is None:
        end_day = float(np.ceil(seconds.max() / SECONDS_PER_DAY + 1e-9)) if len(seconds) else 0.0
        start = end_day - w.test_days - w.delay_days - w.train_days
        return start if w.order == "valid_first" else start - w.gap_days - w.valid_days
    return to_days(train_start, datetimes, "data.split.train_start")


def resolve_ranges(spans: dict[str, list | None], delay_days: float, datetimes: pd.Series) -> Ranges:
    """``data.split.method=ranges``: each split's [start, end) in days, checked: training and validation do not
    overlap, and the test window starts at least ``delay_days`` after both end."""
    days: dict[str, tuple[float, float]] = {}
    for name in SPLITS:
        key = f"data.split.{name}"
        value = spans.get(name)
        if value is None or len(value) != 2:
            raise ConfigError(f"{key}={value!r}: data.split.method=ranges needs [start, end] (dates or day numbers) for train, valid and test")
        lo, hi = (to_days(v, datetimes, key) for v in value)
        if not lo < hi:
            raise ConfigError(f"{key}={list(value)!r}: the start must come before the end")
        days[name] = (lo, hi)
    (t0, t1), (v0, v1), (s0, _) = days["train"], days["valid"], days["test"]
    if t0 < v1 and v0 < t1:
        raise ConfigError(f"data.split.train={spans['train']!r} and data.split.valid={spans['valid']!r} overlap")
    if s0 < max(t1, v1) + delay_days:
        raise ConfigError(f"data.split.test={spans['test']!r} starts {s0 - max(t1, v1):g} day(s) after the labelled history (train, valid) ends; "
                          f"it must start at least data.split.delay_days={delay_days:g} later")
    return Ranges(days, delay_days)


def window_masks(seconds: np.ndarray, w: Windows | Ranges) -> dict[str, np.ndarray]:
    """Boolean masks of the validation, train and test windows (the delay window is in none)."""
    days = seconds / SECONDS_PER_DAY
    return {name: (days >= lo) & (days < hi) for name, (lo, hi) in w.bounds().items()}


def known_fraud_card_mask(frame: pd.DataFrame, w: Windows | Ranges) -> np.ndarray:
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


def split_frame(frame: pd.DataFrame, w: Windows | Ranges, drop_known_frauds: bool = True, source: str = "data") -> dict[str, np.ndarray]:
    """Row indices of each window, checked: every window non-empty, the training window holds fraud."""
    masks = window_masks(frame["seconds"].to_numpy(), w)
    if drop_known_frauds:
        masks["test"] &= ~known_fraud_card_mask(frame, w)
    out = {name: np.flatnonzero(mask) for name, mask in masks.items()}
    for name, (lo, hi) in w.bounds().items():
        if name == "valid" and isinstance(w, Windows) and w.valid_days == 0:
            continue
        if len(out[name]) == 0:
            span = frame["seconds"].agg(["min", "max"]) / SECONDS_PER_DAY
            raise DataError(
                f"{source}: the {name} window [{lo:g}, {hi:g}) days has no transactions (data covers days {span['min']:.2f}-{span['max']:.2f}); "
                f"adjust {w.keys()}"
            )
    if "label" in frame and frame["label"].to_numpy()[out["train"]].sum() == 0:
        lo, hi = w.bounds()["train"]
        raise DataError(f"{source}: the training window [{lo:g}, {hi:g}) days has no fraud (label column); move or widen {w.keys()}")
    return out


def column_assignment(values: np.ndarray, names: dict[str, str], column: str, source: str) -> np.ndarray:
    """``data.split.method=column``: each row's split (``train``/``valid``/``test``, ``""`` for rows left out) from
    the file's column, whose values for each split are ``names`` (``data.split.values``)."""
    values = np.asarray(values).astype(str)
    out = np.full(len(values), "", dtype=object)
    for split in SPLITS:
        out[values == str(names[split])] = split
    for split in SPLITS:
        if not (out == split).any():
            found = pd.Series(values).value_counts().head(8).to_dict()
            raise DataError(f"{source}: column {column!r} (data.split.column) has no row with value {names[split]!r} for the {split} split "
                            f"(data.split.values.{split}); its values: {found}")
    other = int((out == "").sum())
    if other:
        log.warning("%s: %d row(s) of column %r hold none of the split values %s and are left out (their transactions still feed the window "
                    "features)", source, other, column, {k: names[k] for k in SPLITS})
    return out


def fraction_assignment(n: int, fractions: list[float], order: str) -> np.ndarray:
    """``data.split.method=fractions``: shares (train, valid, test) of the ``n`` time-ordered rows. The test rows are
    the last; ``order`` puts validation after (``train_first``) or before (``valid_first``) the training rows. Shares
    summing to less than 1 leave the earliest rows out (they still feed the window features)."""
    if len(fractions) != 3 or min(fractions) <= 0 or sum(fractions) > 1 + 1e-9:
        raise ConfigError(f"data.split.fractions={list(fractions)!r}: expected three shares (train, valid, test), each > 0, summing to at most 1")
    counts = np.floor(np.asarray(fractions, dtype=np.float64) * n + 1e-9).astype(int)
    if counts.min() == 0:
        raise ConfigError(f"data.split.fractions={list(fractions)!r}: a share of {n} rows is empty")
    first, second = ("train", "valid") if order == "train_first" else ("valid", "train")
    sizes = {"train": counts[0], "valid": counts[1], "test": counts[2]}
    out = np.full(n, "", dtype=object)
    end = n
    for split in ("test", second, first):  # from the end of the time line backwards
        out[end - sizes[split]:end] = split
        end -= sizes[split]
    return out


def split_by_rows(frame: pd.DataFrame, assignment: np.ndarray, delay_days: float, drop_known_frauds: bool, source: str,
                  what: str) -> tuple[dict[str, np.ndarray], Ranges]:
    """Row indices of each split from a per-row assignment (``column`` and ``fractions`` protocols), with the leakage
    rules of the time windows: every test row comes after every training and validation row, labelled rows within
    ``delay_days`` before the first test row are left out, and the handbook's known-fraud filter applies to the test
    rows. Also the [start, end) days each split covers."""
    seconds = frame["seconds"].to_numpy()
    test_start = seconds[assignment == "test"].min()
    for split in ("train", "valid"):
        late = (assignment == split) & (seconds > test_start)
        if late.any():
            when = pd.Timestamp(frame["datetime"].to_numpy()[np.flatnonzero(late)[0]])
            first = pd.Timestamp(frame["datetime"].to_numpy()[np.flatnonzero(assignment == "test")[0]])
            raise DataError(f"{source}: {int(late.sum())} {split} row(s) of {what} come after the first test row ({first}), e.g. at {when}; "
                            "test rows must follow all labelled rows in time (no training on the future)")
    labelled = (assignment == "train") | (assignment == "valid")
    if delay_days > 0:
        inside = labelled & (seconds > test_start - delay_days * SECONDS_PER_DAY)
        if inside.any():
            log.info("%s: %d labelled row(s) within data.split.delay_days=%g before the first test row are left out", source, int(inside.sum()), delay_days)
        assignment = np.where(inside, "", assignment)
    idx = {split: np.flatnonzero(assignment == split) for split in ("valid", "train", "test")}
    for split, rows in idx.items():
        if len(rows) == 0:
            raise DataError(f"{source}: the {split} split of {what} is empty once the labelled rows within data.split.delay_days={delay_days:g} "
                            "before the test rows are left out; lower data.split.delay_days")
    days = seconds / SECONDS_PER_DAY
    spans = Ranges({split: (float(days[rows].min()), float(np.nextafter(days[rows].max(), np.inf))) for split, rows in idx.items()}, delay_days)
    if drop_known_frauds:
        keep = ~known_fraud_card_mask(frame, spans)[idx["test"]]
        idx["test"] = idx["test"][keep]
        if len(idx["test"]) == 0:
            raise DataError(f"{source}: every test row of {what} belongs to a card with an already known fraud; set data.split.drop_known_frauds=false")
    if "label" in frame and frame["label"].to_numpy()[idx["train"]].sum() == 0:
        raise DataError(f"{source}: the training rows of {what} hold no fraud (label column)")
    return idx, spans


def prequential_windows(start: float, n_folds: int = 4, train_days: float = 7, delay_days: float = 7, test_days: float = 7, valid_days: float = 0) -> list[Windows]:
    """The handbook's prequential folds: fold k trains from ``start - k * test_days`` (k = 0..n_folds-1)."""
    if n_folds < 1:
        raise ConfigError(f"n_folds={n_folds}: expected at least 1")
    return [Windows(start - k * test_days, train_days, delay_days, test_days, valid_days) for k in range(n_folds)]
