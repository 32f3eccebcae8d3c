"""The weather LightningModule: a pooled quantile network with per-series terms, interval calibration and
unscaling in one ``forward``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import MetricCollection

from sectorkit.core.errors import ConfigError
from sectorkit.core.module import SectorModule, plain_container
from sectorkit.core.network import MemberEnsemble, build_network, network_class
from sectorkit.domains.agriculture.metrics import QUANTILES, ForecastMetrics, pinball_loss
from sectorkit.domains.agriculture.models.common import RidgeReference, SeriesAdapter, WindowForecaster
from sectorkit.domains.agriculture.weather.baselines import AR_LAGS, ridge_ar_scaled_weights
from sectorkit.domains.agriculture.weather.intervals import CANDIDATES, KEEP_MEDIAN, fit_intervals, with_intervals

Batch = dict[str, torch.Tensor]


class WeatherForecaster(SectorModule):
    """Direct multi-horizon quantile forecaster around the network ``net`` names (a
    :class:`~sectorkit.domains.agriculture.models.common.WindowForecaster`).

    The network works on per-series scaled values; :meth:`forward` takes the series' ``loc``/``scale`` and
    index and returns quantiles ``(B, H, Q)`` in the data's units (the full inference path, also what is
    exported). ``ensemble=n``: ``n`` independently initialised networks trained side by side on their own
    losses, forecasts averaged quantile by quantile.

    ``calibrate``: per series, the interval rule of :mod:`~sectorkit.domains.agriculture.weather.intervals`
    with the lowest cross-fitted validation pinball, refitted at every validation epoch (so each checkpoint
    carries the intervals of its own weights); False keeps the raw network quantiles. Validation metrics (and
    so the checkpoint choice) score the forecast before calibration. The calibration keeps the median where the
    network put it (it widens, narrows or reshapes the intervals only); ``recentre=True`` also lets a series
    get the recentred rules, which shift its median by the validation span's bias.

    ``series_embedding=E``: a learned E-dimensional embedding of the series index is fed to the network with
    the known-ahead calendar features (DeepAR-style static covariate). ``reference="ridge_ar"``: the network
    forecasts the correction to the per-series ridge autoregression of the baselines (last 14 days +
    day-of-year harmonics), fitted on the training span in :meth:`prepare_fit` and stored as a buffer.
    ``ridge_combination=w`` (0..1): every quantile is moved by ``w`` times the gap between that ridge
    autoregression and the network's median, a combination of the two point forecasts that keeps the network's
    interval shape; the network trains on its own loss, the combination is the forecast (validation metrics
    and calibration included). ``local_lags=k``: a per-series linear adapter on the last k days of the target
    and of the ``local_covariates`` (names among the data's ``covariates``, which the data module passes),
    added to every quantile: each station gets its own linear response to its own recent weather and sensors.
    """

    export_outputs = ("quantiles",)  # (batch, horizon, quantiles) in the target's units

    def __init__(
        self,
        net: dict[str, Any],
        lookback: int = 56,
        horizon: int = 7,
        n_past: int = 6,
        n_future: int = 3,
        n_series: int = 1,
        quantiles: Sequence[float] = QUANTILES,
        calibrate: bool = True,
        local_lags: int = 14,
        local_covariates: Sequence[str] = (),
        covariates: Sequence[str] = (),
        reference: str = "none",
        ridge_combination: float = 0.0,
        ensemble: int = 1,
        series_embedding: int = 0,
        recentre: bool = False,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        # plain containers, so save_hyperparameters stores nothing that weights_only loading would refuse
        net, optimizer, scheduler = plain_container(net), plain_container(optimizer), plain_container(scheduler)
        quantiles = [float(q) for q in quantiles]
        covariates, local_covariates = [str(c) for c in covariates], [str(c) for c in local_covariates]
        self.horizon, self.quantiles = int(horizon), tuple(quantiles)
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        network = network_class(net)
        self.net_takes_series = bool(getattr(network, "takes_series", False))  # per-series fitted state (classical.py)
        if not issubclass(network, WindowForecaster):
            raise ConfigError(f"model.net._target_={net['_target_']!r}: not a weather network (expected a WindowForecaster)")
        if series_embedding and not network.known_ahead:
            raise ConfigError(f"model.series_embedding={series_embedding}: {network.__name__} does not read known-ahead inputs, "
                              "where the embedding is fed; set model.series_embedding=0")
        unknown = sorted(set(local_covariates) - set(covariates))
        if unknown:
            raise ConfigError(
                f"model.local_covariates: {unknown} are not inputs of the data (its covariates: {covariates}); "
                "add them to data.covariates or data.optional_covariates, or set model.local_covariates=[]"
            )
        self.embedding = torch.nn.Embedding(int(n_series), int(series_embedding)) if series_embedding else None
        sizes = {"lookback": int(lookback), "horizon": self.horizon, "n_past": int(n_past),
                 "n_future": int(n_future) + int(series_embedding), "quantiles": quantiles,
                 **({"n_series": int(n_series)} if self.net_takes_series else {})}
        self.net = MemberEnsemble(lambda: build_network(net, **sizes), ensemble)
        # the ridge autoregression, for the residual hybrid and/or the combination
        self.residual_on_reference, self.ridge_combination = reference == "ridge_ar", float(ridge_combination)
        uses_ridge = self.residual_on_reference or self.ridge_combination > 0
        self.reference = RidgeReference(int(n_series), AR_LAGS, self.horizon) if uses_ridge else None
        self.calibrate_intervals = bool(calibrate)
        self.calibration_rules = tuple(CANDIDATES) if recentre else KEEP_MEDIAN  # rules a series may get
        channels = [0, *(1 + covariates.index(name) for name in local_covariates)]  # past: target, covariates, ...
        self.local = SeriesAdapter(int(n_series), int(local_lags), self.horizon, channels) if local_lags else None
        shape = (int(n_series), self.horizon, len(self.quantiles))
        self.register_buffer("calibration", torch.zeros(shape))  # added to the network's quantiles
        self.register_buffer("band", torch.zeros(shape))  # added to the network's median
        self.register_buffer("band_weight", torch.zeros(int(n_series)))  # 0: network quantiles, 1: band
        # nothing to train (a pretrained network used zero-shot, no adapter): one pass, no optimizer, no gradient
        # steps; validation still calibrates the intervals (as healthcare's memory banks fit without an optimizer)
        self.gradient_free = not any(p.requires_grad for p in self.parameters())

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

    def prepare_fit(self, state: dict[str, Any]) -> None:
        """Fit the ridge autoregression (for ``reference=ridge_ar`` or ``ridge_combination > 0``) on the training
        span the data module hands over: ``panel`` and its ``train_origins``."""
        if self.reference is not None:
            weights = state.get("reference_weights")  # given when the data is sharded by rank: every series', fitted once
            if weights is None:
                weights = ridge_ar_scaled_weights(state["panel"], state["train_origins"], self.horizon)
            self.reference.weight.copy_(torch.as_tensor(weights, dtype=self.reference.weight.dtype))
        for member in self.net.members:  # a network fitted in closed form on the training span (classical.py)
            if hasattr(member, "fit"):
                member.fit(state["panel"], state["train_origins"])

    def on_fit_start(self) -> None:
        """Refuse to train around a ridge that was never fitted (a resumed checkpoint has restored it by now)."""
        if self.reference is not None and not self.reference.weight.any():
            raise ConfigError(
                "model.reference=ridge_ar / model.ridge_combination > 0 need the ridge autoregression fitted on the "
                "training span: call model.prepare_fit(datamodule.training_state()) before fitting, or set "
                "model.reference=none and model.ridge_combination=0"
            )

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        return None if self.gradient_free else super().training_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.gradient_free:
            self.trainer.should_stop = True  # one validation pass calibrates the intervals; nothing else to fit

    def training_loss(self, batch: Batch) -> torch.Tensor:
        z = (batch["target"] - batch["loc"][:, None]) / batch["scale"][:, None]
        # every ensemble member trains on its own loss: an ensemble, not one wider model
        pred = self.network_output(batch["past"], batch["future"], batch["series"], members=True, combine=False)
        return pinball_loss(pred, z.expand(pred.shape[:-1]), self.quantiles).mean()

    def shift(self, past: torch.Tensor, series: torch.Tensor) -> torch.Tensor | float:
        """What is added to every quantile of the network: the ridge reference and the per-series adapter."""
        out: torch.Tensor | float = 0.0
        if self.residual_on_reference:
            out = out + self.reference(past, series)
        if self.local is not None:
            out = out + self.local(past, series)
        return out

    def known_inputs(self, future: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
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
        out = self.net(past, self.known_inputs(future, series), *((series,) if self.net_takes_series else ()))
        out = out if members else out.mean(0)
        out = out + self.shift(past, series)
        if combine and self.ridge_combination > 0:
            median = out[..., self.quantiles.index(0.5)].unsqueeze(-1)
            out = out + self.ridge_combination * (self.reference(past, series) - median)
        return out

    def update_metrics(self, metrics: MetricCollection, batch: Batch) -> None:
        """Test metrics score the full forecast; validation metrics the forecast before calibration, which is
        what calibration is fitted on (the median, hence MAE, moves only with the recentred rules of ``recentre``)."""
        if metrics is self.val_metrics:
            z = self.network_output(batch["past"], batch["future"], batch["series"])
            forecast = z * batch["scale"][:, None, None] + batch["loc"][:, None, None]
        else:
            forecast = self(*self.batch_inputs(batch))
        metrics.update(forecast, batch["target"], mase_scale=batch["mase_scale"])

    def validation_outputs(self, batch: Batch) -> dict[str, torch.Tensor] | None:
        """The scaled residuals of every quantile before calibration, with each window's series and origin."""
        if not self.calibrate_intervals:
            return None
        z = self.network_output(batch["past"], batch["future"], batch["series"])
        target_z = (batch["target"] - batch["loc"][:, None]) / batch["scale"][:, None]
        return {"series": batch["series"], "origin": batch["origin"], "residuals": target_z.unsqueeze(-1) - z}

    def calibrate(self, outputs: dict[str, torch.Tensor]) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            # each rank holds its own validation windows (its series, with data.shard_by_rank): fit on all of them
            parts: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, outputs)
            outputs = {key: torch.cat([part[key] for part in parts]) for key in outputs}
        calibration, band, band_weight = fit_intervals(
            outputs["series"], outputs["residuals"].float(), outputs["origin"], self.quantiles, self.calibration.shape[0],
            self.calibration_rules,
        )
        self.calibration.copy_(calibration)
        self.band.copy_(band)
        self.band_weight.copy_(band_weight)
