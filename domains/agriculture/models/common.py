"""The quantile output head shared by the forecasting networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sectorkit.core.errors import ConfigError


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
    """A per-series linear correction on the last ``lags`` values of the input ``channels`` (the target alone by
    default, optionally covariates too) plus a bias, added to every quantile of a global network's forecast: the
    "global + local" pattern, giving each station its own short-range autoregressive adjustment.
    Zero-initialised, so training starts from the global model."""

    def __init__(self, n_series: int, lags: int, horizon: int, channels: Sequence[int] = (0,)) -> None:
        super().__init__()
        self.lags, self.channels = lags, list(channels)
        self.weight = nn.Parameter(torch.zeros(n_series, lags * len(self.channels) + 1, horizon))

    def forward(self, past: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        """``past (B, L, C)`` scaled inputs (target first), ``series (B,)`` -> shift ``(B, H, 1)``."""
        recent = past[:, -self.lags :, self.channels].transpose(1, 2).flatten(1)  # channel by channel
        x = torch.cat([recent, torch.ones_like(recent[:, :1])], dim=1)
        return torch.einsum("bl,blh->bh", x, self.weight[series]).unsqueeze(-1)


class RidgeReference(nn.Module):
    """A fixed per-series linear forecast from the last ``lags`` scaled target values and the origin's day-of-year
    harmonics (sin a, cos a, sin 2a, cos 2a, read from the last two calendar columns of the window): the
    in-sample ridge autoregression fitted on the training span (``baselines.ridge_ar_scaled_weights``), held
    as a buffer so checkpoints and ONNX exports carry it. The network forecasts the correction to it
    (``reference=ridge_ar``) and/or its median is combined with it (``ridge_combination``)."""

    def __init__(self, n_series: int, lags: int, horizon: int) -> None:
        super().__init__()
        self.lags = lags
        self.register_buffer("weight", torch.zeros(n_series, lags + 5, horizon))

    def forward(self, past: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        """``past (B, L, C)`` (target first, doy sin/cos last), ``series (B,)`` -> forecast ``(B, H, 1)``."""
        sin, cos = past[:, -1, -2:-1], past[:, -1, -1:]
        x = torch.cat(
            [past[:, -self.lags :, 0], sin, cos, 2 * sin * cos, cos * cos - sin * sin, torch.ones_like(sin)], dim=1
        )
        return torch.einsum("bl,blh->bh", x, self.weight[series]).unsqueeze(-1)


class MemberMean(nn.Module):
    """``n`` independently initialised copies of a network; the forecast is the mean of their quantiles (still
    non-crossing), and :meth:`members_output` gives each one for training them on their own losses."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def members_output(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """``(n, B, H, Q)``."""
        return torch.stack([m(past, future) for m in self.members])

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return self.members_output(past, future).mean(0)
