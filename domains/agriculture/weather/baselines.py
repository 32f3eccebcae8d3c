"""Weather baselines, evaluated on the same windows as the networks.

Point forecasts, all fitted per series on the training span only: persistence, day-of-year climatology,
seasonal naive (same day one year earlier), damped anomaly persistence (departure from climatology decaying as
an AR(1)) and a ridge autoregression on the last 14 days plus day-of-year terms. Each gets a 10-90 % interval
from the per-horizon quantiles of its validation errors, so pinball loss and coverage compare like with like.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV

from sectorkit.core.baselines import BaselineResult
from sectorkit.domains.agriculture.metrics import QUANTILES, score_forecasts
from sectorkit.domains.agriculture.weather.windows import Panel

if TYPE_CHECKING:
    from sectorkit.domains.agriculture.weather.data import WeatherDataModule

WEATHER_BASELINES = ("persistence", "climatology", "seasonal_naive", "damped_anomaly", "ridge_ar")
AR_LAGS = 14
YEAR_DAYS = 365


def _future_rows(origins: np.ndarray, horizon: int) -> np.ndarray:
    return origins[:, None] + np.arange(1, horizon + 1)[None, :]


def _anomaly_phi(panel: Panel, train_origins: np.ndarray) -> np.ndarray:
    """Per-series lag-1 autocorrelation of the departure from climatology on training rows."""
    anom = panel.target - panel.clim
    s = panel.series_index[train_origins]
    a0, a1 = anom[train_origins - 1], anom[train_origins]
    num = np.bincount(s, a0 * a1, minlength=len(panel.starts))
    den = np.bincount(s, a0 * a0, minlength=len(panel.starts))
    return np.clip(num / np.maximum(den, 1e-9), 0.0, 0.999)


def _ridge_design(panel: Panel, origins: np.ndarray, inputs: Sequence[int] = ()) -> np.ndarray:
    """The last ``AR_LAGS`` targets (plus the last ``AR_LAGS`` values of the ``inputs`` columns of ``panel.past``)
    and two day-of-year harmonics of each origin."""
    rows = origins[:, None] - np.arange(AR_LAGS)[None, :]
    lags = [panel.target[rows], *(panel.past[rows, c] for c in inputs)]
    doy = pd.DatetimeIndex(panel.dates[origins]).day_of_year.to_numpy()
    angle = 2 * np.pi * (doy - 1) / 365.25
    return np.column_stack([*lags, np.sin(angle), np.cos(angle), np.sin(2 * angle), np.cos(2 * angle)])


def _baseline_train_rows(panel: Panel, train_origins: np.ndarray) -> np.ndarray:
    """Every training-span origin with ``AR_LAGS`` days of history, whatever the network's lookback, so the
    baselines do not depend on the model's window length."""
    series = panel.series_index[train_origins]
    last = np.full(len(panel.starts), -1)
    np.maximum.at(last, series, train_origins)
    first = panel.starts + AR_LAGS - 1
    keep = last >= first
    return np.concatenate([np.arange(lo, hi + 1) for lo, hi in zip(first[keep], last[keep])]).astype(np.int64)


def fit_ridge_ar(
    panel: Panel, train_origins: np.ndarray, horizon: int, inputs: Sequence[int] = ()
) -> dict[int, RidgeCV]:
    """The ridge autoregression baseline, one direct multi-output model per series fitted on its training span:
    the last ``AR_LAGS`` days + two day-of-year harmonics of the origin -> days 1..``horizon``. ``inputs``
    (columns of ``panel.past``) add the last ``AR_LAGS`` days of covariates: not part of the baseline, a check
    of whether a covariate carries signal a linear model can use."""
    train = _baseline_train_rows(panel, train_origins)
    models: dict[int, RidgeCV] = {}
    for s in np.unique(panel.series_index[train]):
        rows = train[panel.series_index[train] == s]
        models[int(s)] = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(
            _ridge_design(panel, rows, inputs), panel.target[_future_rows(rows, horizon)]
        )
    return models


def predict_ridge_ar(
    panel: Panel, models: dict[int, RidgeCV], origins: np.ndarray, horizon: int, inputs: Sequence[int] = ()
) -> np.ndarray:
    """``(n, horizon)`` forecasts of :func:`fit_ridge_ar`'s models; NaN for series without a model."""
    series = panel.series_index[origins]
    out = np.full((len(origins), horizon), np.nan)
    for s, model in models.items():
        mask = series == s
        if mask.any():
            out[mask] = model.predict(_ridge_design(panel, origins[mask], inputs))
    return out


def ridge_ar_scaled_weights(panel: Panel, train_origins: np.ndarray, horizon: int) -> np.ndarray:
    """:func:`fit_ridge_ar` rewritten for the networks' scaled inputs, shape ``(S, AR_LAGS + 5, H)``.

    Rows: the scaled target at lags ``AR_LAGS-1 .. 0`` (oldest first, as in a lookback window), then
    sin a, cos a, sin 2a, cos 2a of the origin's day-of-year angle, then a bias; the product gives the ridge
    forecast in scaled units ``(y - loc) / scale``. Series without training rows get zeros.
    """
    stats = panel.stats
    weights = np.zeros((len(stats.series), AR_LAGS + 5, horizon))
    for s, model in fit_ridge_ar(panel, train_origins, horizon).items():
        loc, scale = float(stats.loc[s, 0]), float(stats.scale[s, 0])
        coef, intercept = np.asarray(model.coef_).reshape(horizon, -1), np.asarray(model.intercept_).reshape(horizon)
        lags = coef[:, :AR_LAGS]  # lag 0 (the origin day) first
        weights[s, :AR_LAGS] = lags[:, ::-1].T
        weights[s, AR_LAGS : AR_LAGS + 4] = coef[:, AR_LAGS:].T / scale
        weights[s, -1] = (intercept + loc * lags.sum(axis=1) - loc) / scale
    return weights


def point_forecasts(
    panel: Panel, origins: dict[str, np.ndarray], horizon: int, stages: Sequence[str] = ("val", "test")
) -> dict[str, dict[str, np.ndarray]]:
    """``{baseline: {stage: (n, H) point forecasts}}`` for the requested stages."""
    train = _baseline_train_rows(panel, origins["train"])
    phi = _anomaly_phi(panel, train)
    models = fit_ridge_ar(panel, origins["train"], horizon)
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in WEATHER_BASELINES}
    for stage in stages:
        o = origins[stage]
        fut = _future_rows(o, horizon)
        y_t = panel.target[o][:, None]
        clim_f = panel.clim[fut]
        s = panel.series_index[o]
        out["persistence"][stage] = np.repeat(y_t, horizon, axis=1)
        out["climatology"][stage] = clim_f
        back = fut - YEAR_DAYS
        has_year = back >= panel.starts[s][:, None]
        out["seasonal_naive"][stage] = np.where(has_year, panel.target[np.maximum(back, 0)], clim_f)
        anom = (panel.target[o] - panel.clim[o])[:, None]
        out["damped_anomaly"][stage] = clim_f + phi[s][:, None] ** np.arange(1, horizon + 1)[None, :] * anom
        ridge = predict_ridge_ar(panel, models, o, horizon)
        missing = ~np.isin(s, list(models))
        ridge[missing] = out["damped_anomaly"][stage][missing]
        out["ridge_ar"][stage] = ridge
    return out


def add_intervals(
    point: np.ndarray, val_point: np.ndarray, val_target: np.ndarray, quantiles: Sequence[float] = QUANTILES
) -> np.ndarray:
    """Quantile forecasts ``(n, H, Q)`` = point + per-horizon quantiles of validation errors (median = point)."""
    err = val_target - val_point
    offsets = np.stack(
        [np.zeros(point.shape[1]) if q == 0.5 else np.quantile(err, q, axis=0) for q in quantiles], axis=-1
    )
    return point[..., None] + offsets[None]


def weather_baseline_forecasts(
    panel: Panel, origins: dict[str, np.ndarray], horizon: int, quantiles: Sequence[float] = QUANTILES
) -> dict[str, np.ndarray]:
    """Test-span quantile forecasts ``(n_test, H, Q)`` of every weather baseline."""
    points = point_forecasts(panel, origins, horizon)
    val_target = panel.target[_future_rows(origins["val"], horizon)]
    return {name: add_intervals(p["test"], p["val"], val_target, quantiles) for name, p in points.items()}


def weather_baselines(
    panel: Panel, origins: dict[str, np.ndarray], horizon: int, quantiles: Sequence[float] = QUANTILES
) -> dict[str, BaselineResult]:
    """Every weather baseline's test metrics (named as the model's) and test-span quantile forecasts
    ``(n_test, H, Q)``."""
    target = panel.target[_future_rows(origins["test"], horizon)]
    scale = panel.stats.mase_scale[panel.series_index[origins["test"]]]
    results = {}
    for name, preds in weather_baseline_forecasts(panel, origins, horizon, quantiles).items():
        scores = score_forecasts(preds, target, scale, quantiles)
        scores.pop("per_horizon")
        results[name] = BaselineResult(scores, predictions=preds)
    return results


def baseline_results(datamodule: WeatherDataModule) -> dict[str, BaselineResult]:
    """The baselines hook of the weather problem: :func:`weather_baselines` on the run's splits."""
    return weather_baselines(datamodule.panel, datamodule.origins, datamodule.horizon, datamodule.quantiles)
