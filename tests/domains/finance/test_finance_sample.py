"""The transaction simulator: determinism, caching, planted scenarios."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sectorkit.domains.finance.sample import SimulatorConfig, load_sample, simulate, summary

SMALL = SimulatorConfig(n_customers=300, n_terminals=600, n_days=40, seed=3)


def test_deterministic_by_seed() -> None:
    a, b = simulate(SMALL), simulate(SMALL)
    pd.testing.assert_frame_equal(a, b)
    c = simulate(SimulatorConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not a["TX_AMOUNT"].equals(c["TX_AMOUNT"])


def test_cache_round_trip(tmp_path) -> None:
    first = load_sample(SMALL, tmp_path)
    files = list(tmp_path.glob("finance_sim_*.parquet"))
    assert len(files) == 1
    pd.testing.assert_frame_equal(first, load_sample(SMALL, tmp_path), check_dtype=False)


def test_scenarios_follow_the_handbook_rules() -> None:
    tx = simulate(SMALL)
    assert tx["TX_TIME_SECONDS"].is_monotonic_increasing
    assert (tx["TX_TIME_SECONDS"] // 86_400 == tx["TX_TIME_DAYS"]).all()
    s1 = tx[tx["TX_FRAUD_SCENARIO"] == 1]
    assert (s1["TX_AMOUNT"] > 220).all()
    assert set(tx.loc[tx["TX_FRAUD"] == 0, "TX_FRAUD_SCENARIO"]) == {0}
    assert {1, 2, 3} <= set(tx["TX_FRAUD_SCENARIO"])
    # scenario 2: a compromised terminal's frauds cover consecutive days (a 28-day window)
    s2 = tx[tx["TX_FRAUD_SCENARIO"] == 2]
    span = s2.groupby("TERMINAL_ID")["TX_TIME_DAYS"].agg(lambda d: d.max() - d.min())
    assert span.max() >= 7
    # scenario 3: amounts scaled x5 -> far above the card's usual amount
    legit_mean = tx[tx["TX_FRAUD"] == 0].groupby("CUSTOMER_ID")["TX_AMOUNT"].mean()
    s3 = tx[tx["TX_FRAUD_SCENARIO"] == 3]
    ratio = s3["TX_AMOUNT"].to_numpy() / legit_mean.reindex(s3["CUSTOMER_ID"]).to_numpy()
    assert np.nanmedian(ratio) > 3


def test_statistics_scale_with_size() -> None:
    stats = summary(simulate(SimulatorConfig(n_customers=1000, n_terminals=2000, n_days=30, n_compromised_terminals=1, n_compromised_customers=1)))
    # ~1000 customers x 2 tx/day x 30 days x 97 % kept inside the day
    assert 50_000 < stats["n_transactions"] < 65_000
    assert 0.002 < stats["fraud_rate"] < 0.05
    assert abs(sum(stats[f"scenario_{k}_share"] for k in (1, 2, 3)) - 1) < 1e-9
