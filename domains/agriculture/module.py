"""LightningModules: the quantile weather forecaster and the yield regressor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F
from torchmetrics import MetricCollection

from core.errors import ConfigError
from core.module import SectorModule
from domains.agriculture.metrics import QUANTILES, NRMSE, ForecastMetrics, pinball_loss
from domains.agriculture.models import NETWORKS
from domains.agriculture.models.yield_mlp import YieldMLP

Batch = dict[str, torch.Tensor]


class WeatherForecaster(SectorModule):
    """Direct multi-horizon quantile forecaster around one of :data:`NETWORKS`.

    The network works on per-series scaled values; :meth:`forward` takes the series' ``loc``/``scale`` and
    returns quantiles ``(B, H, Q)`` in the data's units (the full inference path, also what is exported).
    """

    def __init__(self, network: str = "dlinear", lookback: int = 56, horizon: int = 7, n_past: int = 6,
                 n_future: int = 3, quantiles: Sequence[float] = QUANTILES, network_kwargs: dict[str, Any] | None = None,
                 optimizer: dict | None = None, scheduler: dict | None = None, compile: bool = False,
                 channels_last: bool = False) -> None:
        if network not in NETWORKS:
            raise ConfigError(f"model.network={network!r}: expected one of {sorted(NETWORKS)}")
        self.horizon, self.quantiles = int(horizon), tuple(float(q) for q in quantiles)
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        self.net = NETWORKS[network](lookback, horizon, n_past, n_future, self.quantiles, **dict(network_kwargs or {}))

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"forecast": ForecastMetrics(self.horizon, self.quantiles)})

    def batch_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return batch["past"], batch["future"], batch["loc"], batch["scale"]

    def forward(self, past: torch.Tensor, future: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.net(past, future) * scale[:, None, None] + loc[:, None, None]

    def training_loss(self, batch: Batch) -> torch.Tensor:
        z = (batch["target"] - batch["loc"][:, None]) / batch["scale"][:, None]
        return pinball_loss(self.net(batch["past"], batch["future"]), z, self.quantiles).mean()

    def update_metrics(self, metrics: MetricCollection, batch: Batch) -> None:
        metrics.update(self(*self.batch_inputs(batch)), batch["target"], mase_scale=batch["mase_scale"])


class YieldRegressor(SectorModule):
    """Season yield from weather aggregates + trend features; outputs yield in the data's units."""

    def __init__(self, n_features: int = 1, hidden: int = 64, layers: int = 2, dropout: float = 0.1,
                 residual_on_trend: bool = True, y_mean: float = 0.0, y_std: float = 1.0,
                 optimizer: dict | None = None, scheduler: dict | None = None, compile: bool = False,
                 channels_last: bool = False) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        self.net = YieldMLP(n_features, hidden, layers, dropout, residual_on_trend)
        self.register_buffer("y_mean", torch.tensor(float(y_mean)))
        self.register_buffer("y_std", torch.tensor(float(y_std)))

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"yield": NRMSE()})

    def batch_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return batch["features"], batch["trend"]

    def forward(self, features: torch.Tensor, trend: torch.Tensor) -> torch.Tensor:
        """Yield in data units; ``trend`` is the region's trend value in data units."""
        z = self.net(features, (trend - self.y_mean) / self.y_std)
        return z * self.y_std + self.y_mean

    def training_loss(self, batch: Batch) -> torch.Tensor:
        pred = self.net(batch["features"], (batch["trend"] - self.y_mean) / self.y_std)
        return F.mse_loss(pred, (batch["target"] - self.y_mean) / self.y_std)
