"""Weather and yield baselines, forecast metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sectorkit.domains.agriculture.crop_yield.baselines import yield_baseline_predictions, yield_baselines
from sectorkit.domains.agriculture.metrics import ForecastMetrics, nrmse, score_forecasts
from sectorkit.domains.agriculture.readers import validate_series
from sectorkit.domains.agriculture.sample import synthetic_weather, synthetic_yield
from sectorkit.domains.agriculture.weather.baselines import (
    fit_ridge_ar,
    point_forecasts,
    predict_ridge_ar,
    weather_baseline_forecasts,
    weather_baselines,
)
from sectorkit.domains.agriculture.weather.windows import build_panel, fit_stats, stage_origins, train_end_rows


@pytest.fixture(scope="module")
def panel_and_origins():
    frame = validate_series(synthetic_weather(n_series=2, n_days=4 * 365, seed=3, phi=0.85), "s", "tmax", ["tmin"])
    lengths = frame.groupby("series_id", sort=False).size().to_numpy()
    cuts = train_end_rows(lengths, [0.6, 0.15])
    stats = fit_stats(frame, "tmax", ["tmin"], cuts[:, 0])
    panel = build_panel(frame, stats, "tmax", ["tmin"])
    return panel, stage_origins(panel, 28, 7, cuts)


def test_ridge_with_input_lags_finds_a_leading_covariate():
    """A covariate that leads the target by two days lowers the ridge's error once its lags are inputs; the
    default ridge (no inputs) is the baseline's own forecast."""
    frame = synthetic_weather(n_series=1, n_days=3 * 365, seed=5)
    rng = np.random.default_rng(0)
    frame["lead"] = frame["tmax"].shift(-2).bfill().ffill() + rng.normal(0, 0.3, len(frame))
    frame = validate_series(frame, "s", "tmax", ["lead"])
    cuts = train_end_rows(np.array([len(frame)]), [0.6, 0.15])
    panel = build_panel(frame, fit_stats(frame, "tmax", ["lead"], cuts[:, 0]), "tmax", ["lead"])
    origins = stage_origins(panel, 28, 7, cuts)
    val = origins["val"]
    target = panel.target[val[:, None] + np.arange(1, 8)]
    plain = predict_ridge_ar(panel, fit_ridge_ar(panel, origins["train"], 7), val, 7)
    with_lead = predict_ridge_ar(panel, fit_ridge_ar(panel, origins["train"], 7, [1]), val, 7, [1])
    assert np.allclose(plain, point_forecasts(panel, origins, 7, stages=("val",))["ridge_ar"]["val"])
    plain_mae, lead_mae = np.abs(target - plain).mean(axis=0), np.abs(target - with_lead).mean(axis=0)
    assert lead_mae[:2].mean() < 0.5 * plain_mae[:2].mean()  # days 1-2 are known from the covariate


def test_point_baselines_follow_their_definitions(panel_and_origins):
    panel, origins = panel_and_origins
    points = point_forecasts(panel, origins, 7, stages=("test",))
    o = origins["test"]
    assert np.allclose(points["persistence"]["test"], panel.target[o][:, None])
    assert np.allclose(points["climatology"]["test"], panel.clim[o[:, None] + np.arange(1, 8)])
    assert np.allclose(points["seasonal_naive"]["test"], panel.target[o[:, None] + np.arange(1, 8) - 365])
    damped = points["damped_anomaly"]["test"] - panel.clim[o[:, None] + np.arange(1, 8)]
    ratio = damped[:, 1] / damped[:, 0]
    for s in np.unique(panel.series_index[o]):  # one AR(1) coefficient per series, close to the planted 0.85
        r = ratio[(panel.series_index[o] == s) & (np.abs(damped[:, 0]) > 1e-3)]
        assert np.allclose(r, r[0]) and 0.75 < r[0] < 0.95


def test_anomaly_baselines_beat_naive_ones_on_planted_ar1(panel_and_origins):
    panel, origins = panel_and_origins
    results = weather_baselines(panel, origins, 7)
    res = {name: result.metrics for name, result in results.items()}
    for strong in ("damped_anomaly", "ridge_ar"):
        for weak in ("climatology", "persistence", "seasonal_naive"):
            assert res[strong]["mae"] < res[weak]["mae"], (strong, weak)
            assert res[strong]["pinball"] < res[weak]["pinball"]
    assert 0.7 < res["ridge_ar"]["coverage"] < 0.9
    # each result carries the test-span forecasts its metrics were computed from
    o = origins["test"]
    target, scale = panel.target[o[:, None] + np.arange(1, 8)], panel.stats.mase_scale[panel.series_index[o]]
    forecasts = weather_baseline_forecasts(panel, origins, 7)
    for name, result in results.items():
        assert result.predictions.shape == (len(o), 7, 3) and np.array_equal(result.predictions, forecasts[name])
        scores = score_forecasts(result.predictions, target, scale)
        assert scores.pop("per_horizon") and scores == result.metrics
    persistence = score_forecasts(results["persistence"].predictions, target, scale)["per_horizon"]["mae"]
    assert len(persistence) == 7 and persistence[0] < persistence[-1]


def test_forecast_metrics_match_hand_computation():
    rng = np.random.default_rng(0)
    target = rng.normal(10, 3, (50, 4))
    point = target + rng.normal(0, 1, (50, 4))
    preds = np.stack([point - 1.0, point, point + 1.0], -1)
    scale = np.full(50, 2.0)
    s = score_forecasts(preds, target, scale)
    err = np.abs(point - target)
    assert s["mae"] == pytest.approx(err.mean(), rel=1e-5)
    assert s["mase"] == pytest.approx(err.mean() / 2.0, rel=1e-5)
    assert s["rmse"] == pytest.approx(np.sqrt((err**2).mean(0)).mean(), rel=1e-5)
    assert s["coverage"] == pytest.approx(((target >= point - 1) & (target <= point + 1)).mean(), rel=1e-5)
    # batches accumulate to the same values
    m = ForecastMetrics(4)
    for sl in (slice(0, 20), slice(20, 50)):
        m.update(torch.tensor(preds[sl]), torch.tensor(target[sl]), torch.tensor(scale[sl]))
    assert float(m.compute()["pinball"]) == pytest.approx(s["pinball"], rel=1e-5)


def test_yield_baselines():
    train = pd.DataFrame(
        {"region": ["a"] * 4 + ["b"] * 4, "year": [1, 2, 3, 4] * 2, "yield": [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0]}
    )
    test = pd.DataFrame({"region": ["a", "b", "a"], "year": [5, 5, 6], "yield": [5.0, 5.0, 6.0]})
    p = yield_baseline_predictions(train, test)
    assert np.allclose(p["historical_average"], [2.5, 5.0, 2.5])
    assert np.allclose(p["previous_year"], [4.0, 5.0, 4.0])
    assert np.allclose(p["linear_trend"], [5.0, 5.0, 6.0])
    results = yield_baselines(train, test)
    assert results["linear_trend"].metrics["nrmse"] == pytest.approx(0.0, abs=1e-9)
    assert np.array_equal(results["previous_year"].predictions, p["previous_year"])
    assert nrmse(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == pytest.approx(50.0)


def test_trend_beats_average_on_trending_yield_sample():
    yields, _ = synthetic_yield()
    train, test = yields[yields["year"] < 2010], yields[yields["year"] >= 2010]
    res = yield_baselines(train, test)
    assert res["linear_trend"].metrics["nrmse"] < res["historical_average"].metrics["nrmse"]
