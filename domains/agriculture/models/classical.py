"""The ridge autoregression baseline as a shippable weather model (``model=ridge_ar``, a ``model=auto`` candidate).

:class:`RidgeAR` learns nothing itself: it forecasts a zero correction, and the weather module adds its
per-series ridge reference (``reference: ridge_ar``), which the module fits in closed form on the training span
with the baseline's own code (``weather.baselines.fit_ridge_ar`` through ``ridge_ar_scaled_weights``) and keeps as
a buffer. So the run's forecast before calibration is the ``ridge_ar`` baseline's point forecast (every quantile
equal), the run takes one epoch without gradient steps, and validation fits the module's interval calibration
(per series, the rule with the lowest cross-fitted validation pinball: e.g. the median plus the quantiles of its
validation errors, the baselines' own intervals). The checkpoint and the exported graph carry the ridge weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sectorkit.domains.agriculture.models.common import WindowForecaster


class FixedForecaster(WindowForecaster):
    """A weather baseline as a network: nothing trained by gradient steps (``memory_bank``), every quantile of its
    ``(B, H, Q)`` forecast equal; the sizes the module builds every weather network with, of which it keeps two."""

    memory_bank = True

    def __init__(self, lookback: int, horizon: int, n_past: int, n_future: int, quantiles: Sequence[float] = (0.1, 0.5, 0.9)) -> None:
        super().__init__()
        self.horizon, self.n_q = int(horizon), len(quantiles)


class RidgeAR(FixedForecaster):
    """A zero correction ``(B, H, Q)`` to the module's ridge reference: use with ``reference: ridge_ar`` (the model
    config ``ridge_ar.yaml`` sets it), ``local_lags: 0`` and ``ridge_combination: 0``."""

    known_ahead = False

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return past.new_zeros(past.shape[0], self.horizon, self.n_q)


class Persistence(FixedForecaster):
    """The ``persistence`` baseline as a model: every forecast day is the origin day's value (channel 0 of the last
    past row), every quantile equal; intervals from the module's validation calibration. Nothing to fit; use with
    ``reference: none``, ``local_lags: 0`` and ``ridge_combination: 0`` (the model config ``persistence.yaml``)."""

    known_ahead = False

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return past[:, -1, 0][:, None, None].expand(-1, self.horizon, self.n_q)


class Climatology(FixedForecaster):
    """The ``climatology`` baseline as a model: every forecast day is its day-of-year climatology (fitted per series
    on the training span by the data module; the first known-ahead input). Nothing to fit here."""

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return future[:, :, 0:1].expand(-1, -1, self.n_q)


class DampedAnomaly(FixedForecaster):
    """The ``damped_anomaly`` baseline as a model: climatology plus the origin day's departure from it, decaying as
    an AR(1) with each series' lag-1 autocorrelation ``phi`` (``clim_{t+h} + phi^h (y_t - clim_t)``, in the scaled
    units the module uses, where it is the same formula). ``phi`` is fitted on the training span with the
    baseline's own code (``weather.baselines._anomaly_phi``) when the module hands the span over
    (``takes_series``: the module passes each window's series index)."""

    takes_series = True

    def __init__(
        self, lookback: int, horizon: int, n_past: int, n_future: int, quantiles: Sequence[float] = (0.1, 0.5, 0.9), n_series: int = 1
    ) -> None:
        super().__init__(lookback, horizon, n_past, n_future, quantiles)
        self.register_buffer("phi", torch.zeros(int(n_series)))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, panel: Any, train_origins: Any) -> None:
        """Each series' ``phi`` from its training span, once (a loaded checkpoint keeps its own)."""
        if bool(self.fitted):
            return
        from sectorkit.domains.agriculture.weather.baselines import _anomaly_phi, _baseline_train_rows

        phi = _anomaly_phi(panel, _baseline_train_rows(panel, train_origins))
        self.phi.copy_(torch.as_tensor(phi, dtype=self.phi.dtype))
        self.fitted.fill_(True)

    def forward(self, past: torch.Tensor, future: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        anomaly = past[:, -1, 0] - past[:, -1, -3]  # target and climatology of the origin day (past: ..., clim, sin, cos)
        steps = torch.arange(1, self.horizon + 1, device=past.device, dtype=past.dtype)
        decay = self.phi[series][:, None] ** steps[None, :]
        return (future[:, :, 0] + decay * anomaly[:, None]).unsqueeze(-1).expand(-1, -1, self.n_q)
