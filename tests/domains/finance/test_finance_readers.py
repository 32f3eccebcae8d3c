"""User files through config: presets, schema errors naming file and column, the issue's bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from sectorkit.core.config import compose_config, validate_overrides
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.domains.finance import DOMAIN
from sectorkit.domains.finance.data import FraudDataModule
from sectorkit.domains.finance.readers import ColumnSpec, read_transactions
from sectorkit.domains.finance.sample import SimulatorConfig, simulate

SPEC = ColumnSpec(time="when", amount="amt", label="fraud", card="card", terminal="shop", numeric=["score"], categorical=["mcc"])


def _table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 20 * 86_400, n)), unit="s"),
        "amt": rng.gamma(2, 30, n).round(2), "fraud": (rng.random(n) < 0.1).astype(int),
        "card": rng.integers(0, 30, n), "shop": rng.integers(0, 20, n), "score": rng.normal(size=n), "mcc": rng.choice(["a", "b", "c"], n),
    })


def _write(frame: pd.DataFrame, path, kind: str = "csv"):
    if kind == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_reads_csv_and_parquet(tmp_path, kind) -> None:
    frame = read_transactions(_write(_table(), tmp_path / f"t.{kind}", kind), SPEC)
    assert {"seconds", "datetime", "day", "amount", "card", "terminal", "label", "score", "mcc"} <= set(frame.columns)
    assert frame["seconds"].is_monotonic_increasing and len(frame) == 200


def test_missing_column_names_file_and_column(tmp_path) -> None:
    path = _write(_table().drop(columns="amt"), tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"t\.csv.*missing column\(s\) \['amt'\]"):
        read_transactions(path, SPEC)


def test_non_numeric_amount(tmp_path) -> None:
    table = _table().astype({"amt": object})
    table.loc[5, "amt"] = "12,50 EUR"
    with pytest.raises(DataError, match=r"t\.csv: column 'amt' must be numeric; row 5 holds '12,50 EUR'"):
        read_transactions(_write(table, tmp_path / "t.csv"), SPEC)


@pytest.mark.parametrize("column, value", [("amt", np.inf), ("score", -np.inf), ("amt", "inf")])
def test_infinite_values_are_refused_naming_file_column_and_row(tmp_path, column, value) -> None:
    table = _table().astype({column: object})
    table.loc[7, column] = value
    with pytest.raises(DataError, match=rf"t\.csv: column '{column}' must hold finite numbers; row 7 holds .*inf"):
        read_transactions(_write(table, tmp_path / "t.csv"), SPEC)


def test_missing_values_in_extra_numeric_columns_stay_allowed(tmp_path) -> None:
    table = _table()
    table.loc[[3, 9], "score"] = np.nan
    frame = read_transactions(_write(table, tmp_path / "t.csv"), SPEC)
    assert frame["score"].isna().sum() == 2


def test_a_wide_table_builds_without_fragmentation_warnings(tmp_path) -> None:
    table = _table()
    extra = pd.DataFrame({f"x{i:03d}": np.random.default_rng(i).normal(size=len(table)) for i in range(120)})
    path = _write(pd.concat([table, extra], axis=1), tmp_path / "wide.parquet", "parquet")
    spec = ColumnSpec(**{**SPEC.__dict__, "numeric": ["score", *extra.columns]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        frame = read_transactions(path, spec)
    assert frame.shape[1] == 7 + 2 + 120  # seconds, datetime, amount, day, card, terminal, label; score, mcc; the 120 extra columns


def test_unsorted_and_duplicated_times_are_sorted_and_kept(tmp_path) -> None:
    table = _table()
    table.loc[10, "when"] = table.loc[11, "when"]  # a duplicated time
    shuffled = table.sample(frac=1.0, random_state=0)
    frame = read_transactions(_write(shuffled, tmp_path / "t.csv"), SPEC)
    assert frame["seconds"].is_monotonic_increasing and len(frame) == len(table)


def test_duplicated_transaction_ids(tmp_path) -> None:
    table = _table().assign(tx=np.arange(200))
    table.loc[3, "tx"] = 2
    spec = ColumnSpec(**{**SPEC.__dict__, "id": "tx"})
    with pytest.raises(DataError, match=r"column 'tx' \(transaction id\) has duplicates"):
        read_transactions(_write(table, tmp_path / "t.csv"), spec)


def test_empty_and_header_only_files(tmp_path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        read_transactions(tmp_path / "empty.csv", SPEC)
    (tmp_path / "header.csv").write_text("when,amt,fraud,card,shop,score,mcc\n")
    with pytest.raises(DataError, match=r"header\.csv: has a header but no rows"):
        read_transactions(tmp_path / "header.csv", SPEC)


def test_all_nan_column(tmp_path) -> None:
    with pytest.raises(DataError, match=r"column 'score' is entirely empty"):
        read_transactions(_write(_table().assign(score=np.nan), tmp_path / "t.csv"), SPEC)


def test_non_binary_label(tmp_path) -> None:
    with pytest.raises(DataError, match=r"column 'fraud' \(label\) must hold 0/1"):
        read_transactions(_write(_table().assign(fraud=2), tmp_path / "t.csv"), SPEC)


def test_unknown_column_key_or_bad_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.columns\.amount_col' \(did you mean 'data\.columns\.amount'"):
        validate_overrides(DOMAIN, ["data=csv", "data.path=x.csv", "data.columns.amount_col=x"])
    with pytest.raises(ConfigError, match=r"data\.columns\.time_unit='hours': expected one of auto, datetime, seconds"):
        validate_overrides(DOMAIN, ["data=csv", "data.path=x.csv", "data.columns.time_unit=hours"])


def test_training_window_without_fraud(tmp_path) -> None:
    table = _table()
    table.loc[table["when"] < pd.Timestamp("2024-01-10"), "fraud"] = 0
    path = _write(table, tmp_path / "t.csv")
    dm = FraudDataModule(str(path), columns=SPEC.__dict__, split=dict(train_start="2024-01-05", train_days=3, delay_days=2, test_days=3, valid_days=3))
    with pytest.raises(DataError, match=r"t\.csv: the training window \[4, 7\) days has no fraud"):
        dm.setup("fit")


def test_empty_window_names_the_split_keys(tmp_path) -> None:
    path = _write(_table(), tmp_path / "t.csv")
    dm = FraudDataModule(str(path), columns=SPEC.__dict__, split=dict(train_start=40))
    with pytest.raises(DataError, match=r"the valid window \[33, 40\) days has no transactions.*data\.split\.train_start"):
        dm.setup("fit")


def test_kaggle_preset_and_unseen_categories(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 3000
    table = pd.DataFrame({"Time": np.sort(rng.uniform(0, 172_800, n)).round()})
    for i in range(1, 29):
        table[f"V{i}"] = rng.normal(size=n)
    table["Amount"] = rng.gamma(2, 40, n).round(2)
    table["Class"] = (rng.random(n) < 0.05).astype(int)
    path = _write(table, tmp_path / "creditcard.csv")
    split = ["data.split.train_start=0.25", "data.split.train_days=0.75", "data.split.delay_days=0.25", "data.split.test_days=0.75", "data.split.valid_days=0.25"]
    cfg = compose_config(DOMAIN, ["data=kaggle_creditcard", f"data.path={path}", f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path}", *split])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert dm.fitted["numeric"] == ["amount", *[f"V{i}" for i in range(1, 29)]]
    assert dm.model_kwargs()["with_cards"] is False
    # unseen category at predict time -> code 0
    custom = FraudDataModule("x.csv", columns=SPEC.__dict__)
    custom.fit_preprocessing(read_transactions(_write(_table(), tmp_path / "u.csv"), SPEC).assign(**{f: 0.0 for f in []}).pipe(lambda f: f))
    codes = custom.encode(read_transactions(tmp_path / "u.csv", SPEC).assign(mcc="zzz"))["categorical"]
    assert (codes == 0).all()


def test_simulator_frame_through_datamodule(tmp_path) -> None:
    dm = FraudDataModule(simulator=dict(n_customers=200, n_terminals=400, n_days=40), cache_dir=str(tmp_path))
    dm.setup("fit")
    w = dm.windows
    days = {k: dm.tables[k]["seconds"].to_numpy() / 86_400 for k in ("valid", "train", "test")}
    assert days["valid"].max() < w.train_start <= days["train"].min()
    assert days["train"].max() < w.train_start + w.train_days
    assert days["test"].min() >= w.test_start  # delay window left out
    # handbook protocol: cards with a known fraud are dropped from the test window
    sim = simulate(SimulatorConfig(n_customers=200, n_terminals=400, n_days=40))
    assert len(dm.tables["test"]) < ((sim["TX_TIME_DAYS"] >= w.test_start) & (sim["TX_TIME_DAYS"] < w.test_start + 7)).sum()
