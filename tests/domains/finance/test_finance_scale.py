"""Finance at scale: the chunked simulator and the out-of-core features against the in-memory paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sectorkit.core.errors import ConfigError
from sectorkit.core.sharding import read_shard
from sectorkit.domains.finance import scale
from sectorkit.domains.finance.features import build_features
from sectorkit.domains.finance.readers import sample_spec, to_canonical
from sectorkit.domains.finance.sample import SimulatorConfig, simulate, summary

SMALL = SimulatorConfig(n_customers=300, n_terminals=600, n_days=60, grid_size=24.5, seed=1)
FEATURES = {"windows": (1, 7, 30), "delay_days": 7, "amount_ratios": True, "card_history": True, "terminal_recency": True}
# running sums differ in rounding: the in-memory path sums over the whole table, the out-of-core one per bucket
LOOSE = ("card_hist_std_amount", "card_amount_hist_zscore")


def write_parts(frame: pd.DataFrame, folder, n_files: int) -> None:
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), n_files)):
        pq.write_table(pa.Table.from_pandas(frame.iloc[rows], preserve_index=False), folder / f"part-{i}.parquet")


def test_out_of_core_features_equal_in_memory(tmp_path):
    raw = simulate(SMALL)
    write_parts(raw, tmp_path / "source", 3)
    expected = to_canonical(raw, sample_spec(), "sample")
    expected = pd.concat([expected, build_features(expected, **FEATURES)], axis=1)
    # small batches and buckets: many files, cards and terminals spread over several buckets
    folder = scale.build_features_out_of_core(tmp_path / "source", tmp_path / "oc", sample_spec(), FEATURES, batch_rows=5_000, bucket_rows=4_000)
    assert len(list(folder.glob("*.parquet"))) == -(-len(raw) // 5_000)  # batches run across the 3 source files
    got = pd.read_parquet(folder)
    assert list(got.drop(columns=[scale.ROW_ID]).columns) == list(expected.columns)
    np.testing.assert_array_equal(got[scale.ROW_ID].to_numpy(), np.arange(len(raw)))
    for column in expected.columns:
        a, b = expected[column].to_numpy(), got[column].to_numpy()
        if "nb_tx" in column or a.dtype.kind != "f":
            np.testing.assert_array_equal(a, b, err_msg=column)  # counts, ids, times and labels exactly
        else:
            tol = {"rtol": 1e-6, "atol": 1e-3} if column in LOOSE else {"rtol": 1e-7, "atol": 1e-9}
            np.testing.assert_allclose(b, a, equal_nan=True, err_msg=column, **tol)


def test_chunked_simulator_is_deterministic_and_statistically_the_same(tmp_path):
    cfg = SimulatorConfig(n_customers=1_000, n_terminals=2_000, n_days=60, grid_size=44.7, seed=3)
    weekly = pd.read_parquet(scale.simulate_to_parquet(cfg, tmp_path / "weekly", days_per_file=7))
    daily = pd.read_parquet(scale.simulate_to_parquet(cfg, tmp_path / "daily", days_per_file=1, row_group_size=500))
    pd.testing.assert_frame_equal(weekly, daily)  # the table does not depend on the file size
    assert len(list((tmp_path / "daily").glob("*.parquet"))) == 60
    assert (np.diff(weekly["TX_TIME_SECONDS"]) >= 0).all() and (weekly["TRANSACTION_ID"] == np.arange(len(weekly))).all()
    memory = simulate(cfg)
    assert list(weekly.columns) == list(memory.columns)
    a, b = summary(memory), summary(weekly)
    assert abs(b["n_transactions"] / a["n_transactions"] - 1) < 0.03
    assert abs(weekly["TX_AMOUNT"].median() / memory["TX_AMOUNT"].median() - 1) < 0.05
    assert 0.5 < b["fraud_rate"] / a["fraud_rate"] < 2.0
    for k in (1, 2, 3):  # every scenario is planted
        assert b[f"scenario_{k}_share"] > 0
    # scenario 3 multiplies amounts by 5: its frauds are far above the card's usual amounts in both tables
    for table in (memory, weekly):
        s3 = table[table["TX_FRAUD_SCENARIO"] == 3]["TX_AMOUNT"].median()
        assert s3 > 3 * table[table["TX_FRAUD"] == 0]["TX_AMOUNT"].median()
    # same profiles as the in-memory simulator: each card pays only at terminals it can reach
    pairs = memory.groupby("CUSTOMER_ID")["TERMINAL_ID"].agg(set)
    sample_cards = weekly["CUSTOMER_ID"].drop_duplicates().head(50)
    for card in sample_cards:
        if card in pairs.index and len(pairs[card]) > 20:
            used = set(weekly.loc[weekly["CUSTOMER_ID"] == card, "TERMINAL_ID"])
            assert len(used & pairs[card]) > 0
    # a finished folder is reused, not regenerated
    marker = (tmp_path / "weekly" / scale.DONE).stat().st_mtime_ns
    scale.simulate_to_parquet(cfg, tmp_path / "weekly", days_per_file=7)
    assert (tmp_path / "weekly" / scale.DONE).stat().st_mtime_ns == marker


def test_engine_choice_and_rank_shares_of_features(tmp_path):
    assert scale.resolve_engine("auto", 10) == "pandas"
    assert scale.resolve_engine("auto", scale.AUTO_ROWS) == "pyarrow"
    assert scale.resolve_engine("pandas", 10**9) == "pandas"
    with pytest.raises(ConfigError, match="data.engine"):
        scale.resolve_engine("duck", 1)
    folder = scale.simulate_to_parquet(SMALL, tmp_path / "sim", days_per_file=10, row_group_size=2_000)
    assert scale.table_rows(folder) == len(pd.read_parquet(folder))
    features = scale.build_features_out_of_core(folder, tmp_path / "oc", sample_spec(), FEATURES, batch_rows=7_000)
    shares = [read_shard(features, rank, 2) for rank in (0, 1)]
    ids = [set(s["id"]) for s in shares]
    assert ids[0].isdisjoint(ids[1]) and ids[0] | ids[1] == set(pd.read_parquet(features)["id"])


def test_data_module_engines_agree_and_shard_by_rank(tmp_path, monkeypatch):
    from sectorkit.domains.finance.data import FraudDataModule

    cfg = SimulatorConfig(n_customers=300, n_terminals=600, n_days=40, grid_size=24.5, n_compromised_customers=1, n_compromised_terminals=1)
    path = tmp_path / "tx.parquet"
    simulate(cfg).to_parquet(path, index=False)
    split = {"train_days": 7, "valid_days": 7, "test_days": 7}
    modules = {e: FraudDataModule(path=str(path), split=split, engine=e, cache_dir=str(tmp_path / "cache"), numeric_bins=0) for e in ("pandas", "pyarrow")}
    assert modules["pandas"].resolved_engine() == "pandas" and modules["pyarrow"].resolved_engine() == "pyarrow"
    for dm in modules.values():
        dm.setup("fit")
    assert modules["pandas"].fitted["numeric"] == modules["pyarrow"].fitted["numeric"]
    for name in ("train", "valid", "test"):
        a, b = (modules[e].datasets[name].tensors for e in ("pandas", "pyarrow"))
        np.testing.assert_array_equal(a["target"].numpy(), b["target"].numpy())
        np.testing.assert_allclose(b["numeric"].numpy(), a["numeric"].numpy(), rtol=1e-5, atol=1e-3)
    assert any(p.name.startswith("finance_features_") for p in (tmp_path / "cache").iterdir())
    assert not any(".tmp-" in p.name for p in (tmp_path / "cache").iterdir())  # built privately, then renamed
    # two ranks: disjoint training rows whose union is the single-process training window
    monkeypatch.setenv("WORLD_SIZE", "2")
    ids = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        dm = FraudDataModule(path=str(path), split={**split, "train_start": 7}, engine="pyarrow", shard_by_rank=True,
                             cache_dir=str(tmp_path / "cache"), numeric_bins=0)
        dm.setup("fit")
        ids.append(set(dm.tables["train"]["id"]))
    whole = FraudDataModule(path=str(path), split={**split, "train_start": 7}, engine="pyarrow", cache_dir=str(tmp_path / "cache"), numeric_bins=0)
    whole.setup("fit")
    assert ids[0] and ids[1] and ids[0].isdisjoint(ids[1]) and ids[0] | ids[1] == set(whole.tables["train"]["id"])
