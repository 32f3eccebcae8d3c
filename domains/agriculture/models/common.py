"""The quantile output head shared by the forecasting networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from core.errors import ConfigError


class MonotoneQuantiles(nn.Module):
    """Map raw outputs ``(..., Q)`` to non-crossing quantiles: the median is free, the others are reached by
    cumulative softplus steps outward from it (so q0.1 <= q0.5 <= q0.9 always)."""

    def __init__(self, quantiles: Sequence[float]) -> None:
        super().__init__()
        self.quantiles = tuple(float(q) for q in quantiles)
        if list(self.quantiles) != sorted(self.quantiles) or 0.5 not in self.quantiles:
            raise ConfigError(f"model.quantiles={list(quantiles)}: expected increasing values including 0.5")
        self.median = self.quantiles.index(0.5)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        m = self.median
        centre = raw[..., m : m + 1]
        below = centre - torch.flip(torch.cumsum(torch.flip(F.softplus(raw[..., :m]), [-1]), -1), [-1])
        above = centre + torch.cumsum(F.softplus(raw[..., m + 1 :]), -1)
        return torch.cat([below, centre, above], dim=-1)


class SeriesAdapter(nn.Module):
    """A per-series linear correction on the last ``lags`` target values (plus a bias), added to every
    quantile of a global network's forecast: the "global + local" pattern, giving each station its own
    short-range autoregressive adjustment. Zero-initialised, so training starts from the global model."""

    def __init__(self, n_series: int, lags: int, horizon: int) -> None:
        super().__init__()
        self.lags = lags
        self.weight = nn.Parameter(torch.zeros(n_series, lags + 1, horizon))

    def forward(self, history: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        """``history (B, L)`` scaled target, ``series (B,)`` -> shift ``(B, H, 1)``."""
        x = torch.cat([history[:, -self.lags :], torch.ones_like(history[:, :1])], dim=1)
        return torch.einsum("bl,blh->bh", x, self.weight[series]).unsqueeze(-1)
