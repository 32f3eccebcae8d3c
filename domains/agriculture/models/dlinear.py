"""DLinear (Zeng et al., 2023): moving-average trend/seasonal split, one linear map each, plus linear maps of
the recent past covariates and of the known-ahead calendar features; quantile outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sectorkit.domains.agriculture.models.common import MonotoneQuantiles, WindowForecaster


class DLinear(WindowForecaster):
    """``forward(past (B, L, C), future (B, H, F)) -> (B, H, Q)``; channel 0 of ``past`` is the target."""

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_past: int,
        n_future: int,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        kernel_size: int = 25,
        covariate_window: int | None = 7,
    ) -> None:
        super().__init__()
        self.horizon, self.n_q, self.kernel_size = horizon, len(quantiles), kernel_size
        out = horizon * self.n_q
        self.trend = nn.Linear(lookback, out)
        self.seasonal = nn.Linear(lookback, out)
        # past covariates enter through their last ``covariate_window`` days only (fewer weights to overfit)
        self.covariate_window = min(covariate_window or lookback, lookback)
        self.covariates = nn.Linear(self.covariate_window * (n_past - 1), out) if n_past > 1 else None
        self.calendar = nn.Linear(horizon * n_future, out)
        self.head = MonotoneQuantiles(quantiles)

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        x = past[..., 0]
        pad = (self.kernel_size - 1) // 2
        padded = F.pad(x.unsqueeze(1), (pad, self.kernel_size - 1 - pad), mode="replicate")
        trend = F.avg_pool1d(padded, self.kernel_size, stride=1).squeeze(1)
        raw = self.trend(trend) + self.seasonal(x - trend) + self.calendar(future.flatten(1))
        if self.covariates is not None:
            raw = raw + self.covariates(past[:, -self.covariate_window :, 1:].flatten(1))
        return self.head(raw.view(-1, self.horizon, self.n_q))
