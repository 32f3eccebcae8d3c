"""Typed configs of the finance data and model groups, stored in Hydra's ConfigStore.

Each YAML of ``conf/data`` and ``conf/model`` lists its schema first in ``defaults``, so a misspelt key or a
wrongly typed value fails when the config is composed, naming the key. Defaults are those of the Python
classes they configure; the YAML presets set the chosen values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore

from sectorkit.core.schema import DataConfig, ModelConfig, bounded, one_of


@dataclass
class SimulatorSection:
    """The built-in transaction simulator (``sample.SimulatorConfig``; the handbook's design)."""

    n_customers: int = bounded(5_000, 1)
    n_terminals: int = bounded(10_000, 1)
    n_days: int = bounded(183, 1)
    start_date: str = "2018-04-01"
    radius: float = bounded(5.0, 0.0, low_open=True)
    grid_size: float = bounded(100.0, 0.0, low_open=True)
    amount_threshold: float = 220.0
    n_compromised_terminals: int = 2
    terminal_days: int = 28
    n_compromised_customers: int = 3
    customer_days: int = 14
    customer_fraud_share: float = 1 / 3
    customer_amount_factor: float = 5.0
    seed: int = 0


@dataclass
class ColumnsSection:
    """Which columns of a user's file (``data.path``) hold what (``readers.ColumnSpec``); null: no such column."""

    time: str = "TX_DATETIME"
    amount: str = "TX_AMOUNT"
    label: Optional[str] = "TX_FRAUD"
    card: Optional[str] = "CUSTOMER_ID"
    terminal: Optional[str] = "TERMINAL_ID"
    id: Optional[str] = None
    numeric: List[str] = field(default_factory=list)
    categorical: List[str] = field(default_factory=list)
    time_unit: str = one_of("auto", "auto", "datetime", "seconds")
    time_origin: str = "2018-04-01"


@dataclass
class FeaturesSection:
    """The engineered features (arguments of ``features.build_features``); windows and delays in days."""

    windows: List[float] = field(default_factory=lambda: [1.0, 7.0, 30.0])
    delay_days: float = bounded(7.0, 0.0)
    card_features: bool = True
    terminal_features: bool = True
    calendar: bool = True
    amount_ratios: bool = False
    card_history: bool = False
    card_history_lag_days: float = 14.0
    card_history_days: float = bounded(90.0, 0.0, low_open=True)
    terminal_recency: bool = False
    terminal_recency_days: float = 30.0


@dataclass
class SplitValues:
    """``data.split.method=column``: the value of ``data.split.column`` that puts a row in each split."""

    train: str = "train"
    valid: str = "valid"
    test: str = "test"


@dataclass
class SplitSection:
    """Where the training, validation and test rows come from (``splits.py``); ``method``:

    * ``windows``: windows in days from ``train_start`` (a date, a number of days or null: test ends at the data end),
      ``order`` valid_first (``valid | train | delay | test``) or train_first (``train | valid | delay | test``),
      ``gap_days`` between validation and training;
    * ``ranges``: ``train``, ``valid``, ``test`` as [start, end] (dates or day numbers), any order and gaps, test last;
    * ``column``: the file's column ``column`` names each row's split (its values: ``values``);
    * ``fractions``: shares (train, valid, test) of the rows in time order, test last.

    ``delay_days``: unlabelled days between the labelled history and the test window, for every method.
    """

    method: str = one_of("windows", "windows", "ranges", "column", "fractions")
    train_start: Any = None
    train_days: float = bounded(7.0, 0.0, low_open=True)
    delay_days: float = bounded(7.0, 0.0)
    test_days: float = bounded(7.0, 0.0, low_open=True)
    valid_days: float = bounded(7.0, 0.0, low_open=True)
    order: Optional[str] = one_of(None, "valid_first", "train_first")  # null: valid_first for windows, train_first for fractions
    gap_days: float = bounded(0.0, 0.0)
    train: Optional[List[Any]] = None
    valid: Optional[List[Any]] = None
    test: Optional[List[Any]] = None
    column: Optional[str] = None
    values: SplitValues = field(default_factory=SplitValues)
    fractions: List[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    drop_known_frauds: bool = True


@dataclass
class FraudDataConfig(DataConfig):
    """``FraudDataModule``'s arguments."""

    _target_: str = "sectorkit.domains.finance.data.FraudDataModule"
    columns: ColumnsSection = field(default_factory=ColumnsSection)
    history: Optional[str] = None  # predict: earlier transactions in data.path's layout whose card/terminal windows the rows see
    simulator: SimulatorSection = field(default_factory=SimulatorSection)
    features: FeaturesSection = field(default_factory=FeaturesSection)
    split: SplitSection = field(default_factory=SplitSection)
    numeric_bins: int = bounded(8, 0)
    max_levels: int = bounded(1000, 1)
    min_level_count: int = bounded(5, 1)
    sampler: str = one_of("none", "none", "balanced")
    batch_size: int = bounded(512, 1)
    eval_batch_size: Optional[int] = bounded(4096, 1)
    engine: str = one_of("auto", "auto", "pandas", "pyarrow")  # features in memory or out-of-core (domains/finance/scale.py)
    engine_min_rows: int = bounded(20_000_000, 1)  # engine=auto: out-of-core from this many transactions (or a Parquet folder)
    shard_by_rank: bool = False  # out-of-core: each global rank reads only its row groups of the feature table


@dataclass
class FraudModelConfig(ModelConfig):
    """``FraudModule``'s arguments: the network node and the module's loss, threshold and metric options."""

    _target_: str = "sectorkit.domains.finance.module.FraudModule"
    ensemble: int = bounded(1, 1)
    loss: str = one_of("bce", "bce", "focal")
    pos_weight: Any = None  # null, a number, or auto (the legit/fraud ratio of the training window)
    focal_gamma: float = bounded(2.0, 0.0)
    focal_alpha: Optional[float] = 0.25
    threshold_policy: str = one_of("f1", "f1", "cost", "fpr")
    cost_missed_fraud: float = bounded(100.0, 0.0)
    cost_alert: float = bounded(1.0, 0.0)
    top_k: int = bounded(100, 1)
    fpr: float = bounded(0.01, 0.0, 1.0, low_open=True)


def register() -> None:
    """Store the schemas under the names the YAML files' defaults lists use."""
    store = ConfigStore.instance()
    store.store(group="data", name="_schema_finance", node=FraudDataConfig)
    store.store(group="model", name="_schema_finance", node=FraudModelConfig)
