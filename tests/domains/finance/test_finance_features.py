"""Window features: equal to the handbook's pandas rolling definitions, and free of leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domains.finance.features import build_features
from domains.finance.readers import sample_spec, to_canonical
from domains.finance.sample import SimulatorConfig, simulate


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
