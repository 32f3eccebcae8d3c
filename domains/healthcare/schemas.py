"""Typed configs of the healthcare ``data`` and ``model`` groups, stored in Hydra's ConfigStore.

Every data and model YAML lists ``_schema_healthcare`` first in its defaults, so a misspelt key
(``data.batch_sise=3``) or a wrongly typed value (``data.batch_size=abc``) fails when the config is composed,
naming the key; a number outside its range (``bounded``) or a word outside its choices (``one_of``) fails before
a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from sectorkit.core.schema import DataConfig, ModelConfig, bounded, one_of

SCHEMA_NAME = "_schema_healthcare"


@dataclass
class SampleConfig:
    """Split sizes of the built-in phantom sample (val and test are half abnormal)."""

    n_train: int = bounded(64, 1)
    n_val: int = bounded(32, 1)
    n_test: int = bounded(64, 1)


@dataclass
class HealthcareDataConfig(DataConfig):
    """:class:`~sectorkit.domains.healthcare.data.HealthcareDataModule`: the phantom sample (``path: null``) or a
    folder / MedMNIST .npz / CSV manifest (presets ``phantom`` and ``folder``)."""

    _target_: str = "sectorkit.domains.healthcare.data.HealthcareDataModule"
    layout: str = one_of("auto", "auto", "folder", "medmnist", "manifest")
    normal_label: int = 0
    image_size: int = bounded(64, 8)
    spatial_dims: int = bounded(2, 2, 3)
    channels: int = bounded(1, 1)
    cache: str = one_of("memory", "memory", "disk", "none")
    augment: bool = False
    nan_policy: str = one_of("error", "error", "zero")
    sample: SampleConfig = field(default_factory=SampleConfig)
    batch_size: int = bounded(32, 1)
    allowed_root: Optional[str] = None  # a CSV manifest's files must lie in its folder, or under this folder when set
    max_heatmaps: Optional[int] = bounded(100, 0)  # per-image overlays after a test or predict (highest scores); null: every image


@dataclass
class AnomalyDetectorConfig(ModelConfig):
    """:class:`~sectorkit.domains.healthcare.module.AnomalyDetector` with its network under ``net`` (every model preset)."""

    _target_: str = "sectorkit.domains.healthcare.module.AnomalyDetector"
    net: Dict[str, Any] = MISSING  # _target_: sectorkit.domains.healthcare.models.<file>.<Class> + its arguments
    threshold: str = one_of("f1", "f1", "fpr")
    fpr: float = bounded(0.05, 0.0, 1.0, low_open=True)  # the normal-image false-positive rate of the fpr rule (and the fallback)
    top_fraction: float = bounded(0.01, 0.0, 1.0, low_open=True)  # image score = mean of this top share of the map


def register() -> None:
    """Store the schemas as ``_schema_healthcare`` in the ``data`` and ``model`` groups."""
    cs = ConfigStore.instance()
    cs.store(group="data", name=SCHEMA_NAME, node=HealthcareDataConfig)
    cs.store(group="model", name=SCHEMA_NAME, node=AnomalyDetectorConfig)
