"""The crop-yield LightningModule: the yield network between the yield's standardisation statistics, so
``forward`` maps raw features and the region's trend to a yield in the data's units."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F
from torchmetrics import MetricCollection

from sectorkit.core.module import SectorModule, plain_container
from sectorkit.core.network import build_network
from sectorkit.domains.agriculture.metrics import NRMSE

Batch = dict[str, torch.Tensor]


class YieldRegressor(SectorModule):
    """Season yield from weather aggregates + trend features with the network ``net`` names (e.g.
    :class:`~sectorkit.domains.agriculture.models.yield_mlp.YieldMLP`); outputs yield in the data's units."""

    def __init__(
        self,
        net: dict[str, Any],
        n_features: int = 1,
        y_mean: float = 0.0,
        y_std: float = 1.0,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        net, optimizer, scheduler = plain_container(net), plain_container(optimizer), plain_container(scheduler)
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        self.net = build_network(net, n_features=int(n_features))
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
