"""Report sections and forecast plots come from the run's outputs and baseline results, for each problem."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from omegaconf import OmegaConf

from agriculture_nets import net
from sectorkit.core.errors import ConfigError
from sectorkit.core.pipeline import collect_predictions
from sectorkit.core.reporting import RunContext
from sectorkit.domains.agriculture import DOMAIN
from sectorkit.domains.agriculture.crop_yield.data import YieldDataModule
from sectorkit.domains.agriculture.crop_yield.module import YieldRegressor
from sectorkit.domains.agriculture.metrics import score_forecasts
from sectorkit.domains.agriculture.crop_yield.report import yield_figure, yield_label
from sectorkit.domains.agriculture.weather.data import WeatherDataModule
from sectorkit.domains.agriculture.weather.report import fan_figure, target_label
from sectorkit.domains.agriculture.weather.module import WeatherForecaster

WEATHER = OmegaConf.create({"data": {"problem": "weather"}})
YIELD = OmegaConf.create({"data": {"problem": "yield"}})


def test_weather_report_and_forecast_plot(tmp_path):
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 500}, lookback=28)
    dm.setup("fit")
    module = WeatherForecaster(net=net("dlinear"), **dm.model_kwargs())
    baselines = DOMAIN.baselines(dm, WEATHER)
    assert set(baselines) == {"persistence", "climatology", "seasonal_naive", "damped_anomaly", "ridge_ar"}
    assert set(baselines["ridge_ar"].metrics) == {"mae", "rmse", "mase", "smape", "pinball", "coverage"}
    assert baselines["ridge_ar"].predictions.shape == (len(dm.origins["test"]), 7, 3)
    outputs, table = collect_predictions(module, dm, "test")
    ctx = RunContext(tmp_path, WEATHER, dm, module, {}, predictions=table, outputs=outputs, baselines=baselines)
    sections = DOMAIN.report(ctx)
    assert [s.title for s in sections] == [
        "Per-horizon errors vs baselines",
        "Per-station test metrics",
        "Fan charts (10-90 % band, median, actual)",
        "Per-quantile coverage (nominal vs observed)",
        "PIT histogram",
    ]
    assert all(p.is_file() for s in sections for p in s.images)
    assert "| ridge_ar | mae |" in sections[0].body and "h7" in sections[0].body
    mean_mae = f"| {baselines['ridge_ar'].metrics['mae']:.3f} |"
    assert any(line.startswith("| ridge_ar | mae |") and line.endswith(mean_mae) for line in sections[0].body.splitlines())

    # per station: the model and every baseline on that station's own test origins (metrics.json: breakdowns)
    by_series = sections[1].metrics["test_by_series"]
    assert list(by_series) == dm.stats.series
    origins = dm.origins["test"]
    series = dm.panel.series_index[origins]
    target = dm.panel.target[origins[:, None] + np.arange(1, 8)]
    preds = np.concatenate([np.asarray(o) for o in outputs])
    counts = np.array([by_series[name]["n_origins"] for name in dm.stats.series])
    pooled = {name: np.average([by_series[s][name]["mae"] for s in dm.stats.series], weights=counts) for name in ("model",)}
    assert counts.sum() == len(origins) and np.isclose(pooled["model"], np.abs(preds[..., 1] - target).mean(), rtol=1e-5)
    for s, name in enumerate(dm.stats.series):
        rows = series == s
        ridge = baselines["ridge_ar"].predictions[rows]
        expected = score_forecasts(ridge, target[rows], dm.stats.mase_scale[series[rows]])
        entry = by_series[name]["baselines"]["ridge_ar"]
        assert np.isclose(entry["pinball"], expected["pinball"]) and np.isclose(entry["coverage"], expected["coverage"])
        assert entry["per_horizon"]["mae"] == pytest.approx(expected["per_horizon"]["mae"])
        assert set(by_series[name]["model"]["per_horizon"]) == {"mae", "pinball", "coverage"}
        model_mae = by_series[name]["model"]["mae"]
        assert f"| {name} | {rows.sum()} | **model** | {model_mae:.3f} |" in sections[1].body
        assert set(by_series[name]["baselines"]) == set(baselines)

    # calibration of the quantiles: share of actuals below each quantile forecast, and where they fall among them
    coverage = sections[3].metrics["quantile_coverage"]
    assert coverage["quantiles"] == [0.1, 0.5, 0.9] and set(coverage) == {"quantiles", "model", *baselines}
    for name, forecasts in {"model": preds, **{n: r.predictions for n, r in baselines.items()}}.items():
        assert all(0 <= v <= 1 for v in coverage[name])
        assert coverage[name] == pytest.approx([np.mean(target <= forecasts[..., j]) for j in range(3)])
        pit = sections[4].metrics["pit"][name]
        assert len(pit) == 4 and sum(pit) == pytest.approx(1) and all(0 <= v <= 1 for v in pit)
        low, high = np.mean(target < np.sort(forecasts, axis=-1)[..., 0]), np.mean(target > np.sort(forecasts, axis=-1)[..., -1])
        assert pit[0] == pytest.approx(low) and pit[-1] == pytest.approx(high)
    assert f"| model | {coverage['model'][0]:.3f} | {coverage['model'][1]:.3f} |" in sections[3].body
    assert [p.name for p in sections[3].images + sections[4].images] == ["quantile_coverage.png", "pit_histogram.png"]

    # the fan chart carries the baselines' forecasts beside the model's, and the target's units on its axis
    fig = fan_figure(dm, preds, baselines={n: r.predictions for n, r in baselines.items()})
    assert fig.axes[0].get_ylabel() == "tmax (degC)" == target_label(dm)
    assert {f"{n} (median)" for n in baselines} <= set(fig.axes[0].get_legend_handles_labels()[1])
    plt.close(fig)

    # the data the run used: forecast origins and dates of each split, as the data module holds them
    summary = dm.data_summary()
    assert list(summary["splits"]) == ["train", "val", "test"]
    for name, facts in summary["splits"].items():
        origins = dm.origins[name]
        assert facts["forecast origins"] == len(origins) and facts["series"] == 2
        assert facts["forecast dates from"] == str(dm.panel.dates[origins + 1].min())[:10]
        assert facts["to"] == str(dm.panel.dates[origins + 7].max())[:10]
    assert summary["splits"]["train"]["to"] < summary["splits"]["test"]["forecast dates from"]

    dm.setup("predict")
    outputs, table = collect_predictions(module, dm, "predict")
    plots = tmp_path / "forecast_plots"
    ctx = RunContext(tmp_path, WEATHER, dm, module, {}, stage="predict", predictions=table, outputs=outputs, plots_dir=plots)
    assert DOMAIN.report(ctx) == [] and (plots / "forecast.png").is_file()


def test_yield_report(tmp_path):
    dm = YieldDataModule()
    dm.setup("fit")
    module = YieldRegressor(net={"_target_": "sectorkit.domains.agriculture.models.yield_mlp.YieldMLP"}, **dm.model_kwargs())
    baselines = DOMAIN.baselines(dm, YIELD)
    assert set(baselines) == {"historical_average", "previous_year", "linear_trend"}
    outputs, table = collect_predictions(module, dm, "test")
    ctx = RunContext(tmp_path, YIELD, dm, module, {}, predictions=table, outputs=outputs, baselines=baselines)
    sections = DOMAIN.report(ctx)
    assert sections[0].images[0].is_file() and "| year |" in sections[0].body
    (fold,) = sections[1].metrics["test_by_fold"]  # last_years: one fold, the last five years
    assert fold["test_years"] == list(range(2014, 2019)) and fold["n"] == len(dm.frames["test"])
    assert fold["linear_trend"] == pytest.approx(baselines["linear_trend"].metrics)
    assert "| 0 | 2014-2018 | 40 |" in sections[1].body
    fig = yield_figure(dm.frames["test"], baselines["linear_trend"].predictions, {}, yield_label(dm))  # units on the axes
    assert yield_label(dm) == "yield (t/ha)" and fig.axes[0].get_xlabel() == "actual yield (t/ha)"
    assert fig.axes[1].get_ylabel() == "mean yield (t/ha) over regions"
    plt.close(fig)
    summary = dm.data_summary()
    for name in ("train", "val", "test"):
        frame = dm.frames[name]
        facts = summary["splits"][name]
        assert facts["region-years"] == len(frame) and (facts["from year"], facts["to year"]) == (frame["year"].min(), frame["year"].max())
    assert (summary["splits"]["test"]["from year"], summary["splits"]["test"]["to year"]) == (2014, 2018)
    for name, result in baselines.items():  # the per-year table shows each baseline's own test predictions
        by_year = dm.frames["test"].assign(pred=result.predictions).groupby("year")["pred"].mean().round(3)
        assert name in sections[0].body and f"| {by_year.index[0]} |" in sections[0].body
        assert str(by_year.iloc[0]) in sections[0].body

    history = tmp_path / "history.csv"
    dm.frames["train"][["region", "year", "yield"]].to_csv(history, index=False)
    later = YieldDataModule(path=str(history), use_weather=False)
    later.setup("fit")
    later.setup("predict")
    outputs, table = collect_predictions(YieldRegressor(net=module.hparams.net, **later.model_kwargs()), later, "predict")
    plots = tmp_path / "yield_plots"
    ctx = RunContext(tmp_path, YIELD, later, module, {}, stage="predict", predictions=table, outputs=outputs, plots_dir=plots)
    assert DOMAIN.report(ctx) == [] and (plots / "forecast.png").is_file()
    assert np.isfinite(table["predicted_yield"]).all()


def test_the_hooks_dispatch_on_the_data_modules_problem():
    """``evaluate`` and ``predict`` may rebuild the data a checkpoint recorded while the composed config still holds
    the default weather preset: the hooks follow the data module."""
    dm = YieldDataModule()
    dm.setup("fit")
    assert set(DOMAIN.baselines(dm, WEATHER)) == {"historical_average", "previous_year", "linear_trend"}
    dm.problem = "rice"
    with pytest.raises(ConfigError, match="data.problem='rice': expected one of weather, yield"):
        DOMAIN.baselines(dm, YIELD)
