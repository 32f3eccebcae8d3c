"""Forecast metrics per horizon (torchmetrics accumulators) and the yield NRMSE.

Hand-written as one torchmetrics ``Metric`` because the library has no per-horizon, quantile-aware
forecast metric with a per-series MASE scale; the sums are exact, so batches and devices combine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric

QUANTILES = (0.1, 0.5, 0.9)
FORECAST_METRICS = ("mae", "rmse", "mase", "smape", "pinball", "coverage")


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: Sequence[float]) -> torch.Tensor:
    """Quantile (pinball) loss, ``pred (..., Q)``, ``target (...)``; returns the elementwise mean over Q."""
    q = torch.as_tensor(quantiles, dtype=pred.dtype, device=pred.device)
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(q * diff, (q - 1) * diff).mean(-1)


class ForecastMetrics(Metric):
    """MAE, RMSE, MASE, sMAPE, pinball loss and 10-90 % coverage per horizon, averaged over horizons.

    ``update(preds (B, H, Q), target (B, H), mase_scale (B,))``; the median quantile is the point forecast.
    MASE divides by the series' in-sample one-day naive MAE on the training span, so values above 1 at
    longer horizons are expected. sMAPE = 200 |e| / (|y| + |ŷ|) (unstable for temperatures near 0 °C).
    """

    full_state_update = False

    def __init__(self, horizon: int, quantiles: Sequence[float] = QUANTILES, **kwargs) -> None:
        super().__init__(**kwargs)
        self.horizon, self.quantiles = horizon, tuple(quantiles)
        self.median = self.quantiles.index(0.5)
        for name in ("abs", "sq", "scaled", "smape", "pinball", "covered"):
            self.add_state(f"sum_{name}", default=torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, mase_scale: torch.Tensor | None = None) -> None:
        preds, target = preds.double(), target.double()
        point = preds[..., self.median]
        err = (point - target).abs()
        scale = torch.ones_like(target[:, 0]) if mase_scale is None else mase_scale.double()
        self.sum_abs += err.sum(0)
        self.sum_sq += (err**2).sum(0)
        self.sum_scaled += (err / scale[:, None]).sum(0)
        self.sum_smape += (200 * err / (target.abs() + point.abs()).clamp_min(1e-8)).sum(0)
        self.sum_pinball += pinball_loss(preds, target, self.quantiles).sum(0)
        inside = (target >= preds[..., 0]) & (target <= preds[..., -1])
        self.sum_covered += inside.double().sum(0)
        self.count += target.shape[0]

    def per_horizon(self) -> dict[str, torch.Tensor]:
        """Each metric as a ``(H,)`` tensor."""
        n = self.count.clamp_min(1)
        return {
            "mae": self.sum_abs / n,
            "rmse": (self.sum_sq / n).sqrt(),
            "mase": self.sum_scaled / n,
            "smape": self.sum_smape / n,
            "pinball": self.sum_pinball / n,
            "coverage": self.sum_covered / n,
        }

    def compute(self) -> dict[str, torch.Tensor]:
        return {k: v.mean().float() for k, v in self.per_horizon().items()}


def score_forecasts(
    preds: np.ndarray, target: np.ndarray, mase_scale: np.ndarray, quantiles: Sequence[float] = QUANTILES
) -> dict[str, object]:
    """Averages and per-horizon lists of every forecast metric for arrays ``(N, H, Q)`` / ``(N, H)``."""
    # arrays already whole in this process: no sync with other ranks (after a DDP run only rank 0 scores baselines)
    metric = ForecastMetrics(target.shape[1], quantiles, sync_on_compute=False)
    metric.update(torch.as_tensor(preds), torch.as_tensor(target), torch.as_tensor(mase_scale))
    out: dict[str, object] = {k: float(v) for k, v in metric.compute().items()}
    out["per_horizon"] = {k: v.tolist() for k, v in metric.per_horizon().items()}
    return out


def scores_by_series(
    preds: np.ndarray,
    target: np.ndarray,
    mase_scale: np.ndarray,
    series: np.ndarray,
    names: Sequence[str],
    quantiles: Sequence[float] = QUANTILES,
    per_horizon: Sequence[str] = ("mae", "pinball", "coverage"),
) -> dict[str, dict[str, object]]:
    """:func:`score_forecasts` of each series on its own rows (``series`` indexes ``names``): ``{name: {n_origins,
    mae, ..., per_horizon: {metric: [h1..hH]}}}``, per-horizon lists kept for the ``per_horizon`` metrics only."""
    out: dict[str, dict[str, object]] = {}
    for s in np.unique(series):
        rows = series == s
        scores = score_forecasts(preds[rows], target[rows], mase_scale[rows], quantiles)
        horizons = scores.pop("per_horizon")
        out[str(names[int(s)])] = {
            "n_origins": int(rows.sum()),
            **scores,
            "per_horizon": {k: horizons[k] for k in per_horizon},
        }
    return out


def nrmse(pred: np.ndarray, actual: np.ndarray) -> float:
    """Normalised RMSE in percent: ``100 * RMSE / mean(actual)`` (the CY-Bench yield metric)."""
    pred, actual = np.asarray(pred, float), np.asarray(actual, float)
    return float(100 * np.sqrt(np.mean((pred - actual) ** 2)) / np.mean(actual))


class NRMSE(Metric):
    """Accumulating NRMSE (percent) for yield; also exposes ``rmse`` and ``mae``."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("sq", "abs", "actual", "n"):
            self.add_state(f"sum_{name}", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = preds.double().reshape(-1), target.double().reshape(-1)
        self.sum_sq += ((preds - target) ** 2).sum()
        self.sum_abs += (preds - target).abs().sum()
        self.sum_actual += target.sum()
        self.sum_n += target.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.sum_n.clamp_min(1)
        rmse = (self.sum_sq / n).sqrt()
        return {
            "nrmse": (100 * rmse / (self.sum_actual / n)).float(),
            "rmse": rmse.float(),
            "mae": (self.sum_abs / n).float(),
        }
