"""Time-based windows, the handbook's known-fraud test filter and prequential folds."""

from __future__ import annotations

import pandas as pd
import pytest

from sectorkit.core.errors import ConfigError
from sectorkit.domains.finance.readers import sample_spec, to_canonical
from sectorkit.domains.finance.sample import SimulatorConfig, simulate
from sectorkit.domains.finance.splits import Windows, known_fraud_card_mask, prequential_windows, resolve_start, split_frame


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return simulate(SimulatorConfig(n_customers=300, n_terminals=600, n_days=60, seed=2))


def _handbook_test_set(tx: pd.DataFrame, start_day: int, delta_train=7, delta_delay=7, delta_test=7) -> set:
    """The handbook's get_train_test_set test filtering, day by day (reference)."""
    train = tx[(tx.TX_TIME_DAYS >= start_day) & (tx.TX_TIME_DAYS < start_day + delta_train)]
    known = set(train[train.TX_FRAUD == 1].CUSTOMER_ID)
    kept = []
    for day in range(delta_test):
        today = tx[tx.TX_TIME_DAYS == start_day + delta_train + delta_delay + day]
        delay_day = tx[tx.TX_TIME_DAYS == start_day + delta_train + day - 1]
        known |= set(delay_day[delay_day.TX_FRAUD == 1].CUSTOMER_ID)
        kept += list(today[~today.CUSTOMER_ID.isin(known)].TRANSACTION_ID)
    return set(kept)


def test_test_window_matches_handbook_filter(raw) -> None:
    frame = to_canonical(raw, sample_spec(), "sample")
    w = Windows(30, valid_days=7)
    idx = split_frame(frame, w)
    assert set(frame["id"].to_numpy()[idx["test"]]) == _handbook_test_set(raw, 30)
    assert len(idx["test"]) < ((frame["day"] >= 44) & (frame["day"] < 51)).sum()
    # train and validation are whole days, no overlap, delay left out
    days = frame["day"].to_numpy()
    assert set(days[idx["train"]]) == set(range(30, 37)) and set(days[idx["valid"]]) == set(range(23, 30))
    assert not known_fraud_card_mask(frame.drop(columns="card"), w).any()


def test_start_from_date_number_or_end(raw) -> None:
    frame = to_canonical(raw, sample_spec(), "sample")
    w = Windows(0)
    assert resolve_start("2018-04-11", frame["datetime"], frame["seconds"].to_numpy(), w) == 10
    assert resolve_start(12.5, frame["datetime"], frame["seconds"].to_numpy(), w) == 12.5
    assert resolve_start(None, frame["datetime"], frame["seconds"].to_numpy(), w) == 60 - 21
    with pytest.raises(ConfigError, match="data.split.train_start"):
        resolve_start("next tuesday", frame["datetime"], frame["seconds"].to_numpy(), w)


def test_prequential_folds_go_back_one_test_window_each() -> None:
    folds = prequential_windows(136, n_folds=4)
    assert [f.train_start for f in folds] == [136, 129, 122, 115]
    assert all(f.test_start == f.train_start + 14 for f in folds)
    # consecutive folds' test windows tile the time line without overlap
    tests = sorted(f.bounds()["test"] for f in folds)
    assert all(a[1] == b[0] for a, b in zip(tests, tests[1:]))
    with pytest.raises(ConfigError):
        prequential_windows(10, n_folds=0)
