"""Window features: equal to the handbook's pandas rolling definitions, and free of leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sectorkit.domains.finance.features import build_features
from sectorkit.domains.finance.readers import sample_spec, to_canonical
from sectorkit.domains.finance.sample import SimulatorConfig, simulate


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return simulate(SimulatorConfig(n_customers=60, n_terminals=120, n_days=45, seed=1))


def _reference(raw: pd.DataFrame) -> pd.DataFrame:
    """The handbook's per-group pandas rolling implementation (slow, reference only)."""
    parts = []
    for _, g in raw.groupby("CUSTOMER_ID"):
        g = g.sort_values("TX_DATETIME").set_index("TX_DATETIME")
        out = pd.DataFrame(index=g["TRANSACTION_ID"])
        for w in (1, 7, 30):
            roll = g["TX_AMOUNT"].rolling(f"{w}D")
            out[f"card_nb_tx_{w}d"] = roll.count().to_numpy()
            out[f"card_avg_amount_{w}d"] = (roll.sum() / roll.count()).to_numpy()
        parts.append(out)
    cust = pd.concat(parts)
    parts = []
    for _, g in raw.groupby("TERMINAL_ID"):
        g = g.sort_values("TX_DATETIME").set_index("TX_DATETIME")
        out = pd.DataFrame(index=g["TRANSACTION_ID"])
        fd, td = g["TX_FRAUD"].rolling("7D").sum(), g["TX_FRAUD"].rolling("7D").count()
        for w in (1, 7, 30):
            fdw, tdw = g["TX_FRAUD"].rolling(f"{7 + w}D").sum(), g["TX_FRAUD"].rolling(f"{7 + w}D").count()
            out[f"terminal_nb_tx_{w}d"] = (tdw - td).to_numpy()
            out[f"terminal_risk_{w}d"] = ((fdw - fd) / (tdw - td)).fillna(0).to_numpy()
        parts.append(out)
    return cust.join(pd.concat(parts)).sort_index()


def test_matches_handbook_definitions(raw) -> None:
    frame = to_canonical(raw, sample_spec(), "sample")
    ours = build_features(frame).set_index(frame["id"].to_numpy()).sort_index()
    ref = _reference(raw)
    for column in ref.columns:
        np.testing.assert_allclose(ours[column].to_numpy(), ref[column].to_numpy(), rtol=1e-9, atol=1e-9, err_msg=column)
    night = raw["TX_DATETIME"].dt.hour <= 6
    assert (build_features(frame)["tx_night"].to_numpy() == night.to_numpy()).all()


def test_no_leakage_from_future_rows_or_recent_labels(raw) -> None:
    frame = to_canonical(raw, sample_spec(), "sample")
    base = build_features(frame)
    cut = frame["seconds"].quantile(0.6)
    changed = frame.copy()
    future = changed["seconds"] > cut
    changed.loc[future, "amount"] *= 10
    changed.loc[future, "label"] = 1 - changed.loc[future, "label"]
    # labels younger than the 7-day delay are also flipped: terminal risk must not see them
    recent = (changed["seconds"] > cut - 7 * 86_400) & ~future
    changed.loc[recent, "label"] = 1 - changed.loc[recent, "label"]
    after = build_features(changed)
    past = ~(future | recent)
    pd.testing.assert_frame_equal(base[past], after[past])
    risk = [c for c in base.columns if "risk" in c]
    pd.testing.assert_frame_equal(base.loc[recent, risk], after.loc[recent, risk])


def test_unknown_labels_do_not_count_as_fraud(raw) -> None:
    frame = to_canonical(raw, sample_spec(), "sample")
    unknown = frame.assign(label=np.nan)
    feats = build_features(unknown)
    assert (feats["terminal_risk_30d"] == 0).all()
    assert (feats["terminal_nb_tx_30d"] == build_features(frame)["terminal_nb_tx_30d"]).all()


def test_card_history_matches_slow_reference(raw) -> None:
    """Lagged card baseline over (t - 14 - 30, t - 14] days and days since the card's previous transaction."""
    frame = to_canonical(raw, sample_spec(), "sample")
    ours = build_features(frame, card_history=True, card_history_lag_days=14, card_history_days=30)
    sec, amt, card = frame["seconds"].to_numpy(), frame["amount"].to_numpy(), frame["card"].to_numpy()
    rows = np.random.default_rng(0).choice(len(frame), 300, replace=False)
    for i in rows:
        mine = (card == card[i]) & (np.arange(len(frame)) != i)
        hist = amt[mine & (sec <= sec[i] - 14 * 86_400) & (sec > sec[i] - 44 * 86_400)]
        earlier = np.flatnonzero(mine & ((sec < sec[i]) | ((sec == sec[i]) & (np.arange(len(frame)) < i))))
        expected = {
            "card_hist_nb_tx": len(hist),
            "card_hist_avg_amount": hist.mean() if len(hist) else np.nan,
            "card_hist_std_amount": hist.std(ddof=1) if len(hist) > 1 else np.nan,
            "card_amount_hist_ratio": amt[i] / hist.mean() if len(hist) else np.nan,
            "card_amount_hist_zscore": (amt[i] - hist.mean()) / hist.std(ddof=1) if len(hist) > 1 else np.nan,
            "card_days_since_prev": (sec[i] - sec[earlier].max()) / 86_400 if len(earlier) else np.nan,
        }
        for column, value in expected.items():
            np.testing.assert_allclose(ours[column].iloc[i], value, rtol=1e-6, atol=1e-9, err_msg=f"{column} row {i}")


def test_card_history_has_no_leakage_from_future_rows(raw) -> None:
    frame = to_canonical(raw, sample_spec(), "sample")
    base = build_features(frame, card_history=True)
    cut = frame["seconds"].quantile(0.6)
    changed = frame.copy()
    future = changed["seconds"] > cut
    changed.loc[future, "amount"] *= 10
    changed.loc[future, "label"] = 1 - changed.loc[future, "label"]
    after = build_features(changed, card_history=True)
    pd.testing.assert_frame_equal(base[~future], after[~future])
    # a transaction's baseline ignores the card's last 14 days: a burst of x5 amounts there cannot inflate it
    burst = (frame["seconds"] > cut - 13 * 86_400) & (frame["seconds"] <= cut)
    inflated = frame.copy()
    inflated.loc[burst, "amount"] *= 5
    hist = ["card_hist_nb_tx", "card_hist_avg_amount", "card_hist_std_amount"]
    at_cut = build_features(inflated, card_history=True)[hist]
    rows = (frame["seconds"] > cut) & (frame["seconds"] < cut + 86_400)
    pd.testing.assert_frame_equal(base.loc[rows, hist], at_cut.loc[rows, hist])


def test_terminal_fraud_recency_matches_slow_reference(raw) -> None:
    """Days from the first / last fraud known at (t - 7 - 30, t - 7] at the same terminal; NaN when none."""
    frame = to_canonical(raw, sample_spec(), "sample")
    ours = build_features(frame, terminal_recency=True, terminal_recency_days=30, delay_days=7)
    sec, label, term = frame["seconds"].to_numpy(), frame["label"].to_numpy(), frame["terminal"].to_numpy()
    assert ours["terminal_days_since_last_fraud"].notna().sum() > 20  # the sample has known terminal frauds
    for i in range(len(frame)):
        known = (term == term[i]) & (label == 1) & (sec <= sec[i] - 7 * 86_400) & (sec > sec[i] - 37 * 86_400)
        first = (sec[i] - sec[known].min()) / 86_400 if known.any() else np.nan
        last = (sec[i] - sec[known].max()) / 86_400 if known.any() else np.nan
        np.testing.assert_allclose(ours["terminal_days_since_first_fraud"].iloc[i], first, rtol=1e-9, err_msg=f"row {i}")
        np.testing.assert_allclose(ours["terminal_days_since_last_fraud"].iloc[i], last, rtol=1e-9, err_msg=f"row {i}")


def test_terminal_fraud_recency_uses_only_known_labels(raw) -> None:
    """Flipping labels of the last 7 days (not yet known) or of future rows changes no transaction's recency."""
    frame = to_canonical(raw, sample_spec(), "sample")
    cols = ["terminal_days_since_first_fraud", "terminal_days_since_last_fraud"]
    base = build_features(frame, terminal_recency=True)[cols]
    cut = frame["seconds"].quantile(0.6)
    recent = frame["seconds"] > cut - 7 * 86_400
    flipped = frame.copy()
    flipped.loc[recent, "label"] = 1 - flipped.loc[recent, "label"]
    rows = (frame["seconds"] > cut - 86_400) & (frame["seconds"] <= cut)
    after = build_features(flipped, terminal_recency=True)[cols]
    pd.testing.assert_frame_equal(base[rows], after[rows])
    later = frame["seconds"] > cut + 7 * 86_400  # by then the flipped labels are known, and they do count
    assert not base[later].equals(after[later])


def test_a_huge_amount_leaves_other_cards_features_intact(raw) -> None:
    """One 1e308 amount: window sums restart per card, so only that card's own features change (one running sum over
    all rows would lose every later card's precision, and the squares of card_history would overflow for them)."""
    frame = to_canonical(raw, sample_spec(), "sample")
    kw = dict(amount_ratios=True, card_history=True)
    plain = build_features(frame, **kw)
    outlier = frame.copy()
    row = int(np.flatnonzero(outlier["card"].to_numpy() == outlier["card"].iloc[0])[0])
    outlier.loc[row, "amount"] = 1e308
    huge = build_features(outlier, **kw)
    others = outlier["card"].to_numpy() != outlier["card"].iloc[row]
    for column in [c for c in plain.columns if c.startswith("card_")]:
        np.testing.assert_allclose(huge[column].to_numpy()[others], plain[column].to_numpy()[others], rtol=1e-6, err_msg=column)
    assert not np.allclose(huge["card_avg_amount_30d"].to_numpy()[~others], plain["card_avg_amount_30d"].to_numpy()[~others])
