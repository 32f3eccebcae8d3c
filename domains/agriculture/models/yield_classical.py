"""Closed-form yield models as shippable networks (``model=yield_trend``, ``model=yield_ridge``; ``model=auto``
candidates with ``experiment=yield``).

Both work in the yield module's units: each fold's standardised yield, with the region's linear trend (fitted by
the data module on the fold's training and validation years with the ``linear_trend`` baseline's own code,
``crop_yield.baselines.trend_predictions``) as an input. Neither has trainable weights: a run takes one epoch
without gradient steps, and one network per fold sits in the module as usual.

- :class:`YieldTrend` forecasts the trend itself, so on the test years it is the ``linear_trend`` baseline.
- :class:`YieldRidge` is a ridge regression of the departure from the trend on the season features (weather
  aggregates, covariates, centred year) and the trend, fitted in closed form on the fold's training rows before
  training (``prepare_fit``), its penalty chosen among ``alphas`` by the RMSE on the fold's validation rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sectorkit.core.network import Network


class YieldTrend(Network):
    """``forward(features (B, F), trend (B,)) -> trend``: the region's linear trend, nothing fitted here."""

    input_type = "season_features"
    memory_bank = True  # nothing trained by gradient steps

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = int(n_features)

    def forward(self, features: torch.Tensor, trend: torch.Tensor) -> torch.Tensor:
        return trend + 0.0 * features[:, 0]  # the features stay inputs of the exported graph


class YieldRidge(Network):
    """``forward(features (B, F), trend (B,)) -> trend + [features, trend] @ weight + bias`` (standardised units)."""

    input_type = "season_features"
    memory_bank = True  # fitted in closed form (``fit``), no optimizer

    def __init__(self, n_features: int, alphas: Sequence[float] = (0.1, 1.0, 10.0, 100.0)) -> None:
        super().__init__()
        self.alphas = [float(a) for a in alphas]
        self.register_buffer("weight", torch.zeros(int(n_features) + 1))
        self.register_buffer("bias", torch.zeros(()))
        self.register_buffer("alpha", torch.zeros(()))  # the penalty chosen on validation (0: not fitted yet)

    def forward(self, features: torch.Tensor, trend: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, trend.unsqueeze(1)], dim=1)
        return trend + x @ self.weight + self.bias

    def fit(self, train: tuple[torch.Tensor, torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        """``train``/``val``: (features (n, F), trend (n,), target (n,)) of the fold's rows in standardised units.
        Ridge on the departure from the trend (intercept not penalised) for each penalty; the one with the lowest
        validation RMSE is kept (the first on a tie; the smallest when the fold has no validation rows)."""
        if bool(self.alpha > 0):  # a loaded checkpoint keeps its own fit
            return
        x, trend, y = (t.double() for t in train)
        design = torch.cat([x, trend.unsqueeze(1)], dim=1)
        mean_x, residual = design.mean(0), y - trend
        mean_r = residual.mean()
        xc, rc = design - mean_x, residual - mean_r
        vx, vtrend, vy = (t.double() for t in val)
        best: tuple[float, float, torch.Tensor, torch.Tensor] | None = None
        for alpha in self.alphas:
            weight = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(xc.shape[1], dtype=xc.dtype), xc.T @ rc)
            bias = mean_r - mean_x @ weight
            if len(vy):
                pred = vtrend + torch.cat([vx, vtrend.unsqueeze(1)], dim=1) @ weight + bias
                score = float(torch.sqrt(torch.mean((pred - vy) ** 2)))
            else:
                score = 0.0
            if best is None or score < best[1]:
                best = (alpha, score, weight, bias)
        assert best is not None
        self.alpha.fill_(best[0])
        self.weight.copy_(best[2].to(self.weight.dtype))
        self.bias.fill_(float(best[3]))
