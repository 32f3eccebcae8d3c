"""Typed configs of the retail ``data`` and ``model`` groups, registered in Hydra's ConfigStore.

Every data preset (``sample``, ``file``, ``ml100k``) and every model config lists its schema first in its
defaults, so a misspelt key or a wrongly typed value fails when the config is composed, naming the key;
fields declared with :func:`~sectorkit.core.schema.bounded` are checked against their range as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore

from sectorkit.core.schema import DataConfig, ModelConfig, bounded, one_of


@dataclass
class SampleConfig:
    """The built-in synthetic log (``sectorkit.domains.retail.sample.generate_interactions``; its seed is ``data.seed``)."""

    n_users: int = bounded(500, 1)
    n_items: int = bounded(400, 2)
    n_factors: int = bounded(8, 1)
    mean_length: float = bounded(25.0, 0.0, low_open=True)
    min_length: int = bounded(5, 1)
    max_length: int = bounded(80, 1)
    popularity_exponent: float = bounded(0.5, 0.0)
    taste_strength: float = bounded(6.0, 0.0)
    sequential_prob: float = bounded(0.3, 0.0, 1.0)
    drift: float = bounded(0.5, 0.0)


@dataclass
class SplitConfig:
    """How interactions are split: ``method`` ratio | recbole | leave_one_out | temporal | cold_items; ``order``
    random | temporal (ratio and recbole; for recbole these are RecBole's RO and TO orderings, seeded by
    ``data.seed``). ``cold_items`` splits the items by ``ratios`` (validation and test items are never trained on)."""

    method: str = one_of("ratio", "ratio", "recbole", "leave_one_out", "temporal", "cold_items")
    ratios: List[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    order: str = one_of("random", "random", "temporal")


@dataclass
class SegmentConfig:
    """Test users grouped by activity (their number of training interactions) for per-segment test metrics:
    users with at most ``very_light_max`` form the very-light segment, the others are cut at the ``quantiles``
    of their activity."""

    very_light_max: int = bounded(5, 0)
    quantiles: List[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])


@dataclass
class RetailDataConfig(DataConfig):
    """``RetailDataModule``: an interaction log (``path``) or the built-in sample (``path: null``)."""

    _target_: str = "sectorkit.domains.retail.data.RetailDataModule"
    format: str = one_of("auto", "auto", "udata", "movielens_csv", "inter", "csv", "parquet")
    user_column: str = "user_id"
    item_column: str = "item_id"
    rating_column: Optional[str] = "rating"
    timestamp_column: Optional[str] = "timestamp"
    separator: Optional[str] = None
    rating_threshold: Optional[float] = None
    duplicates: str = one_of("last", "last", "first", "keep", "error")
    missing_timestamps: str = one_of("auto", "auto", "error", "row_order", "drop")
    min_user_interactions: int = bounded(0, 0)
    min_item_interactions: int = bounded(0, 0)
    split: SplitConfig = field(default_factory=SplitConfig)
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    items_path: Optional[str] = None
    item_id_column: str = "item_id"
    item_text_columns: List[str] = field(default_factory=lambda: ["title", "genre"])
    item_genre_column: Optional[str] = "genre"
    text_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    text_max_length: int = bounded(64, 1)
    text_batch_size: int = bounded(64, 1)
    max_seq_len: int = bounded(50, 1)
    top_k: int = bounded(10, 1)
    batch_size: int = bounded(2048, 1)
    eval_batch_size: int = bounded(512, 1)


@dataclass
class RecommenderModelConfig(ModelConfig):
    """``RecommenderModule``: the network (``net``, its ``_target_`` and constructor arguments) and module options."""

    _target_: str = "sectorkit.domains.retail.module.RecommenderModule"
    n_negatives: int = bounded(1, 1)
    ks: List[int] = field(default_factory=lambda: [5, 10, 20])
    top_k: int = bounded(10, 1)
    eval_chunk: int = bounded(1024, 1)  # users scored at once in validation/test: eval_chunk x catalogue floats


def register() -> None:
    """Store the schemas as ``data/_schema_retail`` and ``model/_schema_retail``."""
    cs = ConfigStore.instance()
    cs.store(group="data", name="_schema_retail", node=RetailDataConfig)
    cs.store(group="model", name="_schema_retail", node=RecommenderModelConfig)
