"""What the weather networks share (their base class and quantile head) and the per-series terms the weather
module adds around a pooled network (the linear adapter and the ridge reference)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from sectorkit.core.errors import ConfigError
from sectorkit.core.network import Network


class WindowForecaster(Network):
    """Base class of the weather networks: ``forward(past (B, L, C), future (B, H, F)) -> (B, H, Q)`` in scaled
    units, channel 0 of ``past`` being the target; built with ``lookback, horizon, n_past, n_future, quantiles``
    plus the network's own options.

    ``input_type = "windows"``: trained on lookback/horizon windows (the weather data module's batches).
    ``known_ahead``: reads ``future``, the known-ahead inputs of the forecast days (climatology, day-of-year
    harmonics and, when the module has one, the series embedding); a network that does not cannot take a
    series embedding.
    """

    input_type: ClassVar[str] = "windows"
    known_ahead: ClassVar[bool] = True


class MonotoneQuantiles(nn.Module):
    """Map raw outputs ``(..., Q)`` to non-crossing quantiles: the median is free, the others are reached by
    cumulative softplus steps outward from it (so q0.1 <= q0.5 <= q0.9 always)."""

    def __init__(self, quantiles: Sequence[float]) -> None:
        super().__init__()
        self.quantiles = tuple(float(q) for q in quantiles)
        if list(self.quantiles) != sorted(self.quantiles) or 0.5 not in self.quantiles:
            raise ConfigError(f"data.quantiles={list(quantiles)}: expected increasing values including 0.5")
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
    in-sample ridge autoregression fitted on the training span (``weather.baselines.ridge_ar_scaled_weights``),
    held as a buffer so checkpoints and ONNX exports carry it. The network forecasts the correction to it
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
