"""LightningModules: the quantile weather forecaster and the yield regressor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F
from torchmetrics import MetricCollection

from core.errors import ConfigError
from core.module import SectorModule, plain_container
from domains.agriculture.baselines import AR_LAGS, ridge_ar_scaled_weights
from domains.agriculture.metrics import NRMSE, QUANTILES, ForecastMetrics, pinball_loss
from domains.agriculture.models import NETWORKS
from domains.agriculture.models.common import MemberMean, RidgeReference, SeriesAdapter
from domains.agriculture.models.yield_mlp import YieldMLP

Batch = dict[str, torch.Tensor]
CALIBRATIONS = ("auto", "learned", "band", "none")
REFERENCES = ("none", "ridge_ar")


class WeatherForecaster(SectorModule):
    """Direct multi-horizon quantile forecaster around one of :data:`NETWORKS`.

    The network works on per-series scaled values; :meth:`forward` takes the series' ``loc``/``scale`` and
    index and returns quantiles ``(B, H, Q)`` in the data's units (the full inference path, also what is
    exported). Interval calibration on the validation span (recomputed at every validation epoch, so each
    checkpoint carries the offsets of its own weights; the median is never shifted):

    * ``learned``: the network's outer quantiles shifted per series and horizon by the quantiles of their
      validation residuals (split-conformal style);
    * ``band``: median + per-horizon quantiles of the median's validation errors (exactly how the point
      baselines get their intervals);
    * ``auto`` (default): per series, whichever of the two has the lower validation pinball loss (the
      learned widths help where the spread is strongly seasonal, the constant band where it is not);
    * ``none``: the raw network quantiles.

    ``reference="ridge_ar"``: the network forecasts the correction to the per-series ridge autoregression
    of the baselines (last 14 days + day-of-year harmonics), fitted on the training span when training starts
    and stored as a buffer (a hybrid "residual on ridge AR" model). ``ensemble=n``: ``n`` independently
    initialised networks trained side by side on their own losses, forecasts averaged quantile by quantile.
    """

    def __init__(
        self,
        network: str = "dlinear",
        lookback: int = 56,
        horizon: int = 7,
        n_past: int = 6,
        n_future: int = 3,
        n_series: int = 1,
        quantiles: Sequence[float] = QUANTILES,
        calibrate: str = "auto",
        local_lags: int = 14,
        reference: str = "none",
        ensemble: int = 1,
        network_kwargs: dict[str, Any] | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        if network not in NETWORKS:
            raise ConfigError(f"model.network={network!r}: expected one of {sorted(NETWORKS)}")
        # plain containers, so save_hyperparameters stores nothing that weights_only loading would refuse
        network_kwargs, quantiles = plain_container(network_kwargs or {}), [float(q) for q in quantiles]
        optimizer, scheduler = plain_container(optimizer), plain_container(scheduler)
        self.horizon, self.quantiles = int(horizon), tuple(float(q) for q in quantiles)
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        if reference not in REFERENCES:
            raise ConfigError(f"model.reference={reference!r}: expected one of {REFERENCES}")
        if int(ensemble) < 1:
            raise ConfigError(f"model.ensemble={ensemble!r}: expected a number of networks >= 1")

        def build() -> torch.nn.Module:
            return NETWORKS[network](lookback, horizon, n_past, n_future, self.quantiles, **dict(network_kwargs or {}))

        self.net = build() if int(ensemble) == 1 else MemberMean([build() for _ in range(int(ensemble))])
        self.reference = RidgeReference(int(n_series), AR_LAGS, self.horizon) if reference == "ridge_ar" else None
        if calibrate not in CALIBRATIONS:
            raise ConfigError(f"model.calibrate={calibrate!r}: expected one of {CALIBRATIONS}")
        self.calibrate = calibrate
        self.local = SeriesAdapter(int(n_series), int(local_lags), self.horizon) if local_lags else None
        shape = (int(n_series), self.horizon, len(self.quantiles))
        self.register_buffer("calibration", torch.zeros(shape))  # added to the network's quantiles
        self.register_buffer("band", torch.zeros(shape))  # added to the network's median
        self.register_buffer("use_band", torch.zeros(int(n_series), dtype=torch.bool))
        self._val_residuals: list[tuple[torch.Tensor, torch.Tensor]] = []

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"forecast": ForecastMetrics(self.horizon, self.quantiles)})

    def batch_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return batch["past"], batch["future"], batch["loc"], batch["scale"], batch["series"]

    def forward(
        self, past: torch.Tensor, future: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, series: torch.Tensor
    ) -> torch.Tensor:
        z = self.network_output(past, future, series)
        median = z[..., self.quantiles.index(0.5)].unsqueeze(-1)
        z = torch.where(self.use_band[series][:, None, None], median + self.band[series], z + self.calibration[series])
        return z * scale[:, None, None] + loc[:, None, None]

    def setup(self, stage: str) -> None:
        """Fit the ridge reference on the datamodule's training span (a checkpoint being resumed overwrites it
        with the saved buffer afterwards)."""
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.reference is not None and stage == "fit" and getattr(datamodule, "panel", None) is not None:
            weights = ridge_ar_scaled_weights(datamodule.panel, datamodule.origins["train"], self.horizon)
            self.reference.weight.copy_(torch.as_tensor(weights, dtype=self.reference.weight.dtype))

    def training_loss(self, batch: Batch) -> torch.Tensor:
        z = (batch["target"] - batch["loc"][:, None]) / batch["scale"][:, None]
        past, future, series = batch["past"], batch["future"], batch["series"]
        if isinstance(self.net, MemberMean):  # every member on its own loss: an ensemble, not one wider model
            pred = self.net.members_output(past, future) + self.shift(past, series)
            return pinball_loss(pred, z.expand(pred.shape[:-1]), self.quantiles).mean()
        pred = self.network_output(past, future, series)
        return pinball_loss(pred, z, self.quantiles).mean()

    def shift(self, past: torch.Tensor, series: torch.Tensor) -> torch.Tensor | float:
        """What is added to every quantile of the network: the ridge reference and the per-series adapter."""
        out: torch.Tensor | float = 0.0
        if self.reference is not None:
            out = out + self.reference(past, series)
        if self.local is not None:
            out = out + self.local(past[..., 0], series)
        return out

    def network_output(self, past: torch.Tensor, future: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        """Scaled quantiles: the global network plus the ridge reference and the per-series adapter (when on)."""
        return self.net(past, future) + self.shift(past, series)

    def update_metrics(self, metrics: MetricCollection, batch: Batch) -> None:
        metrics.update(self(*self.batch_inputs(batch)), batch["target"], mase_scale=batch["mase_scale"])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Validation metrics use the uncalibrated network (the median, hence MAE, is the same either way)."""
        z = self.network_output(batch["past"], batch["future"], batch["series"])
        metrics_input = z * batch["scale"][:, None, None] + batch["loc"][:, None, None]
        self.val_metrics.update(metrics_input, batch["target"], mase_scale=batch["mase_scale"])
        target_z = (batch["target"] - batch["loc"][:, None]) / batch["scale"][:, None]
        self._val_residuals.append((batch["series"], target_z.unsqueeze(-1) - z))

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.calibrate != "none" and self._val_residuals and not self.trainer.sanity_checking:
            series = torch.cat([s for s, _ in self._val_residuals])
            residuals = torch.cat([r for _, r in self._val_residuals]).float()
            learned, band, use_band = interval_offsets(
                series, residuals, self.quantiles, self.calibration.shape[0], self.calibrate
            )
            self.calibration.copy_(learned)
            self.band.copy_(band)
            self.use_band.copy_(use_band)
        self._val_residuals = []


def conformal_offsets(
    series: torch.Tensor, residuals: torch.Tensor, quantiles: Sequence[float], n_series: int
) -> torch.Tensor:
    """Per series and horizon, the q-quantile of ``target - prediction_q`` for each outer quantile q (0 for the
    median and for series without validation windows). ``residuals (N, H, Q)``, returns ``(S, H, Q)``."""
    out = torch.zeros(n_series, residuals.shape[1], residuals.shape[2], device=residuals.device)
    q = torch.as_tensor(quantiles, device=residuals.device)
    median = list(quantiles).index(0.5)
    for s in torch.unique(series).tolist():
        r = residuals[series == s]  # (n, H, Q)
        offsets = torch.stack([torch.quantile(r[..., j], q[j], dim=0) for j in range(len(quantiles))], dim=-1)
        offsets[..., median] = 0.0
        out[s] = offsets
    return out




def interval_offsets(
    series: torch.Tensor, residuals: torch.Tensor, quantiles: Sequence[float], n_series: int, mode: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validation-fitted interval offsets per series: ``(learned (S, H, Q), band (S, H, Q), use_band (S,))``.

    ``residuals (N, H, Q)`` = scaled target minus each scaled quantile. ``band`` holds the quantiles of the
    median's residuals; ``use_band`` says which variant a series uses (by validation pinball for ``auto``).
    """
    median = list(quantiles).index(0.5)
    learned = conformal_offsets(series, residuals, quantiles, n_series)
    band = conformal_offsets(
        series, residuals[..., median : median + 1].expand_as(residuals).contiguous(), quantiles, n_series
    )
    use_band = torch.zeros(n_series, dtype=torch.bool, device=residuals.device)
    if mode == "band":
        use_band[:] = True
    elif mode == "auto":
        q = torch.as_tensor(quantiles, device=residuals.device)

        def pinball(diff: torch.Tensor) -> torch.Tensor:
            return torch.maximum(q * diff, (q - 1) * diff).mean(dim=(1, 2))

        per_learned = pinball(residuals - learned[series])
        per_band = pinball(residuals[..., median : median + 1] - band[series])
        counts = torch.bincount(series, minlength=n_series).clamp_min(1)
        mean_learned = torch.zeros(n_series, device=residuals.device).index_add_(0, series, per_learned) / counts
        mean_band = torch.zeros(n_series, device=residuals.device).index_add_(0, series, per_band) / counts
        use_band = mean_band < mean_learned
    return learned, band, use_band


class YieldRegressor(SectorModule):
    """Season yield from weather aggregates + trend features; outputs yield in the data's units."""

    def __init__(
        self,
        n_features: int = 1,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.1,
        residual_on_trend: bool = True,
        y_mean: float = 0.0,
        y_std: float = 1.0,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        optimizer, scheduler = plain_container(optimizer), plain_container(scheduler)
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
