"""Split protocols (data.split.method): windows in either order with gaps, explicit ranges, a split column and time-ordered
fractions, each with the leakage rules (test after all labelled rows, a delay between them); and the documented
commands composed and set up on a generated file."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from sectorkit.core.config import compose_config, validate_overrides
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.domains.finance import DOMAIN
from sectorkit.domains.finance.data import FraudDataModule
from sectorkit.domains.finance.splits import Windows, fraction_assignment, resolve_start

DAY = 86_400.0
COLUMNS = dict(time="when", amount="amt", label="fraud", card="card", terminal="shop", numeric=[], categorical=[])
DOC = Path(__file__).resolve().parents[3] / "docs" / "domains" / "finance.md"


def _table(days: int = 60, per_day: int = 40, seed: int = 0, cards: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * per_day
    seconds = np.sort(rng.uniform(0, days * DAY, n))
    return pd.DataFrame({
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(seconds, unit="s"), "amt": rng.gamma(2, 30, n).round(2),
        "fraud": (rng.random(n) < 0.08).astype(int), "card": rng.integers(0, cards, n), "shop": rng.integers(0, 50, n),
        "fold": np.where(seconds < 35 * DAY, "fit", np.where(seconds < 45 * DAY, "dev", "holdout")),
    })


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("protocols") / "tx.csv"
    _table().to_csv(path, index=False)
    return path


def _setup(path: Path, **split) -> FraudDataModule:
    dm = FraudDataModule(str(path), columns=COLUMNS, split=split)
    dm.setup("fit")
    return dm


def _days(dm: FraudDataModule) -> dict[str, np.ndarray]:
    return {name: dm.tables[name]["seconds"].to_numpy() / DAY for name in ("train", "valid", "test")}


def test_default_windows_put_validation_before_training(table_path) -> None:
    days = _days(_setup(table_path, train_start=20, train_days=14, delay_days=7, test_days=7, valid_days=7))
    assert 13 <= days["valid"].min() and days["valid"].max() < 20 <= days["train"].min() and days["train"].max() < 34
    assert 41 <= days["test"].min() and days["test"].max() < 48


def test_train_first_windows_with_a_gap_and_the_delay_after_validation(table_path) -> None:
    dm = _setup(table_path, train_start=10, train_days=20, valid_days=7, gap_days=2, delay_days=5, test_days=10, order="train_first")
    days = _days(dm)
    assert 10 <= days["train"].min() and days["train"].max() < 30  # train | gap | valid | delay | test
    assert 32 <= days["valid"].min() and days["valid"].max() < 39
    assert 44 <= days["test"].min() and days["test"].max() < 54
    assert dm.windows.labelled_end == 39 and dm.windows.test_start == 44


def test_train_first_start_from_the_data_end() -> None:
    seconds = np.array([0.0, 59.5 * DAY])
    w = Windows(0, train_days=20, delay_days=5, test_days=10, valid_days=7, order="train_first", gap_days=2)
    start = resolve_start(None, pd.Series(pd.to_datetime(["2024-01-01", "2024-03-01"])), seconds, w)
    assert start == 60 - 10 - 5 - 7 - 2 - 20


def test_valid_first_windows_with_a_gap(table_path) -> None:
    days = _days(_setup(table_path, train_start=20, train_days=14, valid_days=7, gap_days=3, delay_days=7, test_days=7))
    assert 10 <= days["valid"].min() and days["valid"].max() < 17 and 20 <= days["train"].min()


def test_ranges_in_any_order_with_dates_or_days(table_path) -> None:
    dm = _setup(table_path, method="ranges", train=["2024-01-05", "2024-01-31"], valid=[32, 37], test=["2024-02-14", "2024-02-29"], delay_days=7)
    days = _days(dm)
    assert 4 <= days["train"].min() and days["train"].max() < 30
    assert 32 <= days["valid"].min() and days["valid"].max() < 37
    assert 44 <= days["test"].min() and days["test"].max() < 59


@pytest.mark.parametrize("split, message", [
    (dict(train=[10, 30], valid=[25, 35], test=[45, 55]), r"data\.split\.train=.* and data\.split\.valid=.* overlap"),
    (dict(train=[10, 30], valid=[30, 35], test=[38, 55]), r"data\.split\.test=.*starts 3 day\(s\) after .*data\.split\.delay_days=7"),
    (dict(train=[10, 30], valid=None, test=[45, 55]), r"data\.split\.valid=None: data\.split\.method=ranges needs \[start, end\]"),
    (dict(train=[30, 10], valid=[30, 35], test=[45, 55]), r"data\.split\.train=\[30, 10\]: the start must come before the end"),
])
def test_ranges_refuse_overlaps_missing_windows_and_a_test_inside_the_delay(table_path, split, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _setup(table_path, method="ranges", delay_days=7, **split)


def test_split_column_with_configured_values_and_the_delay(table_path) -> None:
    dm = _setup(table_path, method="column", column="fold", values=dict(train="fit", valid="dev", test="holdout"), delay_days=3,
                drop_known_frauds=False)
    days = _days(dm)
    assert days["train"].max() < 35 <= days["valid"].min()
    assert days["valid"].max() <= days["test"].min() - 3 and days["test"].min() >= 45  # dev rows of the 3 days before the first holdout row left out
    assert len(dm.tables["test"]) == int((_table()["fold"] == "holdout").sum())
    assert "_split" not in dm.tables["train"]


def test_split_column_errors_name_the_column_and_the_value(tmp_path) -> None:
    table = _table()
    table.loc[table.index[-1], "fold"] = "dev"  # a validation row after the first test row: training on the future
    path = tmp_path / "late.csv"
    table.to_csv(path, index=False)
    values = dict(train="fit", valid="dev", test="holdout")
    with pytest.raises(DataError, match=r"late\.csv: 1 valid row\(s\) of column 'fold' come after the first test row"):
        _setup(path, method="column", column="fold", values=values, delay_days=0)
    with pytest.raises(DataError, match=r"late\.csv: column 'fold' \(data\.split\.column\) has no row with value 'valid' for the valid split"):
        _setup(path, method="column", column="fold", values=dict(train="fit", valid="valid", test="holdout"))
    with pytest.raises(DataError, match=r"late\.csv: missing column\(s\) \['folds'\] \(from data\.split\.column\)"):
        _setup(path, method="column", column="folds", values=values)
    with pytest.raises(ConfigError, match=r"data\.split\.column: data\.split\.method=column needs"):
        _setup(path, method="column")


def test_fractions_in_time_order_with_an_optional_gap(table_path) -> None:
    n = len(_table())
    dm = _setup(table_path, method="fractions", fractions=[0.7, 0.15, 0.15], delay_days=0, drop_known_frauds=False)
    sizes = {k: len(v) for k, v in dm.tables.items()}
    assert sizes == {"valid": int(0.15 * n), "train": int(0.7 * n), "test": int(0.15 * n)}
    days = _days(dm)
    assert days["train"].max() <= days["valid"].min() and days["valid"].max() <= days["test"].min()  # train | valid | test
    gapped = _setup(table_path, method="fractions", fractions=[0.7, 0.15, 0.15], delay_days=2, drop_known_frauds=False)
    gap = _days(gapped)
    assert len(gapped.tables["test"]) == sizes["test"] and gap["test"].min() - gap["valid"].max() >= 2  # the gap comes out of validation
    assert len(gapped.tables["valid"]) < sizes["valid"] and len(gapped.tables["train"]) == sizes["train"]
    first = _days(_setup(table_path, method="fractions", fractions=[0.5, 0.2, 0.2], order="valid_first", delay_days=0))
    assert first["valid"].max() <= first["train"].min() and first["valid"].min() > 0.09 * 60  # the first 10 % of rows left out


@pytest.mark.parametrize("fractions", [[0.8, 0.3, 0.1], [0.9, 0.1], [0.9, 0.1, 0.0]])
def test_fractions_must_be_three_positive_shares(fractions) -> None:
    with pytest.raises(ConfigError, match=r"data\.split\.fractions="):
        fraction_assignment(100, fractions, "train_first")


@pytest.mark.parametrize("override, message", [
    ("data.split.method=random", r"data\.split\.method='random': expected one of windows, ranges, column, fractions"),
    ("data.split.order=sideways", r"data\.split\.order='sideways': expected one of valid_first, train_first"),
    ("data.split.gap_days=-1", r"data\.split\.gap_days=-1"),
    ("data.split.values.hold=x", r"data\.split\.values\.hold"),
])
def test_split_settings_are_checked_when_composed(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_overrides(DOMAIN, ["data=csv", "data.path=x.csv", override])


def _documented_split_commands() -> list[list[str]]:
    """The ``sectorkit train`` commands of docs/domains/finance.md that set data.split.method, as override lists."""
    commands = []
    for line in DOC.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("sectorkit train") and "data.split.method=" in line:
            commands.append(shlex.split(line)[2:])
    return commands


def test_documented_split_commands_compose_and_split(tmp_path) -> None:
    commands = _documented_split_commands()
    methods = {re.search(r"data\.split\.method=(\w+)", " ".join(c)).group(1) for c in commands}
    assert methods >= {"windows", "ranges", "column", "fractions"}
    table = _table(cards=5000).rename(columns={"when": "TX_DATETIME", "amt": "TX_AMOUNT", "fraud": "TX_FRAUD", "card": "CUSTOMER_ID", "shop": "TERMINAL_ID"})
    table["split"] = table.pop("fold").map({"fit": "train", "dev": "valid", "holdout": "test"})
    # the IEEE-CIS column names of the documented fractions command
    table = table.assign(TransactionDT=(table["TX_DATETIME"] - pd.Timestamp("2024-01-01")).dt.total_seconds() + 86_400, TransactionAmt=table["TX_AMOUNT"],
                         isFraud=table["TX_FRAUD"], card1=table["CUSTOMER_ID"], TransactionID=np.arange(len(table)),
                         ProductCD=np.where(table.index % 3, "W", "C"), DeviceInfo=np.char.add("dev", (table.index % 700).astype(str)))
    path = tmp_path / "tx.csv"
    table.to_csv(path, index=False)
    small = ["data.simulator.n_customers=300", "data.simulator.n_terminals=600"]  # the built-in simulator, smaller, same dates
    for overrides in commands:
        overrides = [f"data.path={path}" if o.startswith("data.path=") else o for o in overrides if not o.startswith("domain=")]
        on_simulator = not any(o.startswith("data.path=") for o in overrides)
        cfg = compose_config(DOMAIN, [*overrides, *(small if on_simulator else []), f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path}"])
        dm = instantiate(cfg.data)
        dm.setup("fit")
        assert all(len(dm.tables[k]) for k in ("train", "valid", "test")), overrides
        days = _days(dm)
        assert max(days["train"].max(), days["valid"].max()) <= days["test"].min(), overrides
        if on_simulator:  # the handbook's split as ranges: the same rows as the default windows
            default = instantiate(compose_config(DOMAIN, [*small, f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path}"]).data)
            default.setup("fit")
            for name in ("train", "valid", "test"):
                assert default.tables[name]["id"].tolist() == dm.tables[name]["id"].tolist(), name
