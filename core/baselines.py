"""The classical models a domain fits in the same run as its network, and how a run keeps their results.

A domain's baselines hook returns one :class:`BaselineResult` per baseline: its test metrics (named as the
model's) and its test-split predictions, so the report draws them without fitting anything again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from sectorkit.core.datamodule import SectorDataModule


@dataclass
class BaselineResult:
    """One baseline's test metrics and its predictions on the test split (aligned with the model's rows)."""

    metrics: dict[str, float]
    predictions: Any = None


BaselinesFn = Callable[["SectorDataModule", "DictConfig"], dict[str, BaselineResult]]
