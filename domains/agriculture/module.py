"""LightningModules: the quantile weather forecaster and the yield regressor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F
from torchmetrics import MetricCollection

from sectorkit.core.errors import ConfigError
from sectorkit.core.module import SectorModule, plain_container
from sectorkit.domains.agriculture.baselines import AR_LAGS, ridge_ar_scaled_weights
from sectorkit.domains.agriculture.metrics import NRMSE, QUANTILES, ForecastMetrics, pinball_loss
from sectorkit.domains.agriculture.models import NETWORKS
from sectorkit.domains.agriculture.models.common import MemberMean, RidgeReference, SeriesAdapter
from sectorkit.domains.agriculture.models.yield_mlp import YieldMLP

Batch = dict[str, torch.Tensor]
# the per-series interval variants: (network quantiles shifted by the learned offsets?, weight of the band,
# band centred on the median's median validation error rather than on the median?)
VARIANTS = {
    "none": (False, 0.0, False),
    "learned": (True, 0.0, False),
    "band": (False, 1.0, False),
    "blend": (False, 0.5, False),
    "band_recentred": (False, 1.0, True),
    "blend_recentred": (False, 0.5, True),
}
CALIBRATIONS = ("auto", *VARIANTS)
REFERENCES = ("none", "ridge_ar")


class WeatherForecaster(SectorModule):
    """Direct multi-horizon quantile forecaster around one of :data:`NETWORKS`.

    The network works on per-series scaled values; :meth:`forward` takes the series' ``loc``/``scale`` and
    index and returns quantiles ``(B, H, Q)`` in the data's units (the full inference path, also what is
    exported). Interval calibration on the validation span (recomputed at every validation epoch, so each
    checkpoint carries the offsets of its own weights; the median moves only with the recentred variants):

    * ``learned``: the network's outer quantiles shifted per series and horizon by the quantiles of their
      validation residuals (split-conformal style);
    * ``band``: median + per-horizon quantiles of the median's validation errors (exactly how the point
      baselines get their intervals);
    * ``blend``: the mean, quantile by quantile, of the raw network quantiles and the band (quantile averaging
      of two interval forecasts);
    * ``none``: the raw network quantiles;
    * ``band_recentred`` / ``blend_recentred``: the same with the band centred on the median + the median of its
      validation errors (a per-series, per-horizon bias correction from the most recent span; the only
      variants that move the median: by that error, or by half of it in the blend);
    * ``auto`` (default): per series, whichever of these variants has the lowest
      validation pinball loss *cross-fitted* on the two chronological halves of the series' validation origins
      (fitted on one half, scored on the other, both ways), then refitted on the whole validation span. An
      in-sample comparison would favour the variants fitted on the very errors they are scored on.

    ``series_embedding=E``: a learned E-dimensional embedding of the series index is fed to the network with
    the known-ahead calendar features (DeepAR-style static covariate). ``reference="ridge_ar"``: the network
    forecasts the correction to the per-series ridge autoregression of the baselines (last 14 days +
    day-of-year harmonics), fitted on the training span when training starts
    and stored as a buffer (a hybrid "residual on ridge AR" model). ``ridge_combination=w`` (0..1): every
    quantile is moved by ``w`` times the gap between that ridge autoregression and the network's median, a
    combination of the two point forecasts that keeps the network's interval shape; the network trains on its
    own loss, the combination is the forecast (validation metrics and calibration included). ``ensemble=n``:
    ``n`` independently initialised networks trained side by side on their own losses, forecasts averaged
    quantile by quantile.
    ``local_lags=k``: a per-series linear adapter on the last k days of the target and of the
    ``local_covariates`` (names among the data's ``covariates``, which the data module passes), added to every
    quantile: each station gets its own linear response to its own recent weather and sensors.
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
        local_covariates: Sequence[str] = (),
        covariates: Sequence[str] = (),
        reference: str = "none",
        ridge_combination: float = 0.0,
        ensemble: int = 1,
        series_embedding: int = 0,
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
        covariates, local_covariates = [str(c) for c in covariates], [str(c) for c in local_covariates]
        optimizer, scheduler = plain_container(optimizer), plain_container(scheduler)
        self.horizon, self.quantiles = int(horizon), tuple(float(q) for q in quantiles)
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        if reference not in REFERENCES:
            raise ConfigError(f"model.reference={reference!r}: expected one of {REFERENCES}")
        if not 0.0 <= float(ridge_combination) <= 1.0:
            raise ConfigError(f"model.ridge_combination={ridge_combination!r}: expected a weight in [0, 1] (0: off)")
        if int(ensemble) < 1:
            raise ConfigError(f"model.ensemble={ensemble!r}: expected a number of networks >= 1")
        if int(series_embedding) < 0:
            raise ConfigError(f"model.series_embedding={series_embedding!r}: expected a size >= 0 (0: off)")
        self.embedding = torch.nn.Embedding(int(n_series), int(series_embedding)) if series_embedding else None
        n_known = n_future + int(series_embedding)

        def build() -> torch.nn.Module:
            return NETWORKS[network](lookback, horizon, n_past, n_known, self.quantiles, **dict(network_kwargs or {}))

        self.net = build() if int(ensemble) == 1 else MemberMean([build() for _ in range(int(ensemble))])
        # the ridge autoregression, for the residual hybrid and/or the combination
        self.residual_on_reference, self.ridge_combination = reference == "ridge_ar", float(ridge_combination)
        uses_ridge = self.residual_on_reference or self.ridge_combination > 0
        self.reference = RidgeReference(int(n_series), AR_LAGS, self.horizon) if uses_ridge else None
        if calibrate not in CALIBRATIONS:
            raise ConfigError(f"model.calibrate={calibrate!r}: expected one of {CALIBRATIONS}")
        self.calibrate = calibrate
        unknown = sorted(set(local_covariates) - set(covariates))
        if unknown:
            raise ConfigError(
                f"model.local_covariates: {unknown} are not inputs of the data (its covariates: {covariates}); "
                "add them to data.covariates or data.optional_covariates, or set model.local_covariates=[]"
            )
        channels = [0, *(1 + covariates.index(name) for name in local_covariates)]  # past: target, covariates, ...
        self.local = SeriesAdapter(int(n_series), int(local_lags), self.horizon, channels) if local_lags else None
        shape = (int(n_series), self.horizon, len(self.quantiles))
        self.register_buffer("calibration", torch.zeros(shape))  # added to the network's quantiles
        self.register_buffer("band", torch.zeros(shape))  # added to the network's median
        self.register_buffer("band_weight", torch.zeros(int(n_series)))  # 0: network quantiles, 1: band
        self._val_residuals: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"forecast": ForecastMetrics(self.horizon, self.quantiles)})

    def batch_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return batch["past"], batch["future"], batch["loc"], batch["scale"], batch["series"]

    def forward(
        self, past: torch.Tensor, future: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, series: torch.Tensor
    ) -> torch.Tensor:
        z = self.network_output(past, future, series)
        z = with_intervals(z, self.calibration[series], self.band[series], self.band_weight[series], self.quantiles)
        return z * scale[:, None, None] + loc[:, None, None]

    def setup(self, stage: str) -> None:
        """Fit the ridge reference on the datamodule's training span (a checkpoint being resumed overwrites it
        with the saved buffer afterwards). Without a weather data module there is nothing to fit it on: training
        goes on only if it was fitted before (a copy of a trained model) or a checkpoint is being resumed."""
        super().setup(stage)
        if self.reference is None or stage != "fit" or self._trainer is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "panel", None) is not None:
            weights = ridge_ar_scaled_weights(datamodule.panel, datamodule.origins["train"], self.horizon)
            self.reference.weight.copy_(torch.as_tensor(weights, dtype=self.reference.weight.dtype))
        elif not self.reference.weight.any() and self.trainer.ckpt_path is None:
            raise ConfigError(
                "model.reference=ridge_ar / model.ridge_combination > 0 fit the ridge autoregression on the training "
                "span of a WeatherDataModule; train with one (trainer.fit(model, datamodule=...)), or set "
                "model.reference=none and model.ridge_combination=0"
            )

    def training_loss(self, batch: Batch) -> torch.Tensor:
        z = (batch["target"] - batch["loc"][:, None]) / batch["scale"][:, None]
        # every ensemble member trains on its own loss: an ensemble, not one wider model
        members = isinstance(self.net, MemberMean)
        pred = self.network_output(batch["past"], batch["future"], batch["series"], members=members, combine=False)
        return pinball_loss(pred, z.expand(pred.shape[:-1]), self.quantiles).mean()

    def shift(self, past: torch.Tensor, series: torch.Tensor) -> torch.Tensor | float:
        """What is added to every quantile of the network: the ridge reference and the per-series adapter."""
        out: torch.Tensor | float = 0.0
        if self.residual_on_reference:
            out = out + self.reference(past, series)
        if self.local is not None:
            out = out + self.local(past, series)
        return out

    def known_ahead(self, future: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        """The network's known-ahead inputs ``(B, H, F [+ E])``: the calendar features, plus the series'
        learned embedding repeated over the horizon when ``series_embedding > 0`` (a static covariate that lets
        one global network give each series its own level, spread and seasonal shape)."""
        if self.embedding is None:
            return future
        return torch.cat([future, self.embedding(series)[:, None, :].expand(-1, future.shape[1], -1)], dim=-1)

    def network_output(
        self,
        past: torch.Tensor,
        future: torch.Tensor,
        series: torch.Tensor,
        members: bool = False,
        combine: bool = True,
    ) -> torch.Tensor:
        """Scaled quantiles before calibration: the global network plus the ridge reference and the per-series
        adapter (when on), combined with the ridge forecast when ``ridge_combination > 0`` and ``combine``
        (training leaves it out); ``members=True`` gives each ensemble member's ``(n, B, H, Q)`` instead of
        their mean."""
        known = self.known_ahead(future, series)
        out = self.net.members_output(past, known) if members else self.net(past, known)
        out = out + self.shift(past, series)
        if combine and self.ridge_combination > 0:
            median = out[..., self.quantiles.index(0.5)].unsqueeze(-1)
            out = out + self.ridge_combination * (self.reference(past, series) - median)
        return out

    def update_metrics(self, metrics: MetricCollection, batch: Batch) -> None:
        metrics.update(self(*self.batch_inputs(batch)), batch["target"], mase_scale=batch["mase_scale"])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Validation metrics use the uncalibrated network (the median, hence MAE, is the same either way)."""
        z = self.network_output(batch["past"], batch["future"], batch["series"])
        metrics_input = z * batch["scale"][:, None, None] + batch["loc"][:, None, None]
        self.val_metrics.update(metrics_input, batch["target"], mase_scale=batch["mase_scale"])
        target_z = (batch["target"] - batch["loc"][:, None]) / batch["scale"][:, None]
        self._val_residuals.append((batch["series"], batch["origin"], target_z.unsqueeze(-1) - z))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        """Checkpoints written before ``band_weight`` held a boolean ``use_band`` (band or learned per series)."""
        use_band = state_dict.pop(prefix + "use_band", None)
        if use_band is not None and prefix + "band_weight" not in state_dict:
            state_dict[prefix + "band_weight"] = use_band.float()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.calibrate != "none" and self._val_residuals and not self.trainer.sanity_checking:
            series = torch.cat([s for s, _, _ in self._val_residuals])
            origins = torch.cat([o for _, o, _ in self._val_residuals])
            residuals = torch.cat([r for _, _, r in self._val_residuals]).float()
            calibration, band, band_weight = interval_offsets(
                series, residuals, self.quantiles, self.calibration.shape[0], self.calibrate, origins
            )
            self.calibration.copy_(calibration)
            self.band.copy_(band)
            self.band_weight.copy_(band_weight)
        self._val_residuals = []


def with_intervals(
    z: torch.Tensor, calibration: torch.Tensor, band: torch.Tensor, band_weight: torch.Tensor, quantiles: Sequence[float]
) -> torch.Tensor:
    """The calibrated forecast ``(1 - w) (z + calibration) + w (median + band)`` for network quantiles
    ``z (B, H, Q)`` and each window's offsets ``calibration``/``band (B, H, Q)`` and weight ``w (B,)``."""
    median = z[..., list(quantiles).index(0.5)].unsqueeze(-1)
    weight = band_weight[:, None, None]
    return (1 - weight) * (z + calibration) + weight * (median + band)


def conformal_offsets(
    series: torch.Tensor,
    residuals: torch.Tensor,
    quantiles: Sequence[float],
    n_series: int,
    keep_median: bool = False,
) -> torch.Tensor:
    """Per series and horizon, the q-quantile of ``target - prediction_q`` for each outer quantile q (0 for the
    median unless ``keep_median``, and for series without validation windows). ``residuals (N, H, Q)``, returns
    ``(S, H, Q)``."""
    out = torch.zeros(n_series, residuals.shape[1], residuals.shape[2], device=residuals.device)
    q = torch.as_tensor(quantiles, device=residuals.device)
    median = list(quantiles).index(0.5)
    for s in torch.unique(series).tolist():
        r = residuals[series == s]  # (n, H, Q)
        offsets = torch.stack([torch.quantile(r[..., j], q[j], dim=0) for j in range(len(quantiles))], dim=-1)
        if not keep_median:
            offsets[..., median] = 0.0
        out[s] = offsets
    return out


def interval_offsets(
    series: torch.Tensor,
    residuals: torch.Tensor,
    quantiles: Sequence[float],
    n_series: int,
    mode: str = "auto",
    origins: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validation-fitted intervals per series: ``(calibration (S, H, Q), band (S, H, Q), band_weight (S,))``;
    the forecast is ``(1 - w) (network + calibration) + w (median + band)``.

    ``residuals (N, H, Q)`` = scaled target minus each scaled quantile; ``origins (N,)`` orders each series'
    windows in time (default: the given order) for the cross-fit of ``mode="auto"``, which picks per series
    the variant of :data:`VARIANTS` with the lowest pinball on the held-out half (see :class:`WeatherForecaster`).
    """
    median = list(quantiles).index(0.5)
    learned = conformal_offsets(series, residuals, quantiles, n_series)
    band = median_band(series, residuals, quantiles, n_series, median)
    choice = [mode] * n_series
    if mode == "auto":
        order = torch.arange(len(series), device=residuals.device) if origins is None else origins
        choice = ["learned"] * n_series
        for s in torch.unique(series).tolist():
            rows = torch.nonzero(series == s).flatten()
            rows = rows[torch.argsort(order[rows], stable=True)]
            choice[s] = cross_fitted_variant(residuals[rows], quantiles, median)
    calibration = torch.zeros_like(learned)
    band_weight = torch.zeros(n_series, device=residuals.device)
    for s, name in enumerate(choice):
        shifted, band_weight[s], recentred = VARIANTS[name]
        if shifted:
            calibration[s] = learned[s]
        band[s] = variant_band(band[s], recentred, median)
    return calibration, band, band_weight


def variant_band(band: torch.Tensor, recentred: bool, median: int) -> torch.Tensor:
    """A series' band ``(H, Q)`` as a variant uses it: centred on the median's median validation error when
    ``recentred``, else on the median itself (its median offset zeroed)."""
    if recentred:
        return band
    band = band.clone()
    band[..., median] = 0.0
    return band


def median_band(
    series: torch.Tensor, residuals: torch.Tensor, quantiles: Sequence[float], n_series: int, median: int
) -> torch.Tensor:
    """Per series and horizon, the quantiles of the median's residuals ``(S, H, Q)`` (their median included)."""
    median_residuals = residuals[..., median : median + 1].expand_as(residuals).contiguous()
    return conformal_offsets(series, median_residuals, quantiles, n_series, keep_median=True)


def variant_pinball(residuals: torch.Tensor, learned: torch.Tensor, band: torch.Tensor, variant: str,
                    quantiles: Sequence[float], median: int) -> float:
    """Mean pinball loss (scaled units) of one interval variant on windows with ``residuals (N, H, Q)``, given
    offsets ``learned``/``band (H, Q)`` of one series (``band`` with its median offset, zeroed unless recentred)."""
    shifted, weight, recentred = VARIANTS[variant]
    diff = (1 - weight) * (residuals - (learned if shifted else 0.0)) + weight * (
        residuals[..., median : median + 1] - variant_band(band, recentred, median)
    )
    return pinball_loss(-diff, diff.new_zeros(diff.shape[:-1]), quantiles).mean().item()  # diff = target - forecast


def cross_fitted_variant(residuals: torch.Tensor, quantiles: Sequence[float], median: int) -> str:
    """The variant with the lowest pinball when fitted on one chronological half of a series' validation windows
    and scored on the other (both ways); ``learned`` when there are too few windows to split."""
    half = len(residuals) // 2
    if half < 2:
        return "learned"
    folds = ((residuals[:half], residuals[half:]), (residuals[half:], residuals[:half]))
    scores = dict.fromkeys(VARIANTS, 0.0)
    for fit, held_out in folds:
        one = torch.zeros(len(fit), dtype=torch.long, device=fit.device)
        learned = conformal_offsets(one, fit, quantiles, 1)[0]
        band = median_band(one, fit, quantiles, 1, median)[0]
        for name in VARIANTS:
            scores[name] += variant_pinball(held_out, learned, band, name, quantiles, median)
    return min(scores, key=scores.get)


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
