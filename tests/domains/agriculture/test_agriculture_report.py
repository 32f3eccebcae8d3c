"""Report sections and forecast plots are produced from a (briefly) trained model."""

from __future__ import annotations

from omegaconf import OmegaConf

from sectorkit.core.io import save_figure
from sectorkit.core.reporting import RunContext
from sectorkit.domains.agriculture import DOMAIN, run_baselines
from sectorkit.domains.agriculture.data import WeatherDataModule, YieldDataModule
from sectorkit.domains.agriculture.module import WeatherForecaster, YieldRegressor
from sectorkit.domains.agriculture.report import forecast_figure, yield_forecast_figure


def test_weather_report_and_forecast_plot(tmp_path):
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 500}, lookback=28)
    dm.setup("fit")
    module = WeatherForecaster(network="dlinear", **dm.model_kwargs())
    ctx = RunContext(run_dir=tmp_path, cfg=OmegaConf.create({}), datamodule=dm, module=module, metrics={})
    sections = DOMAIN.report(ctx)
    assert [s.title for s in sections] == [
        "Per-horizon errors vs baselines",
        "Fan charts (10-90 % band, median, actual)",
    ]
    assert all(p.is_file() for s in sections for p in s.images)
    assert "| ridge_ar | mae |" in sections[0].body and "h7" in sections[0].body
    baselines = run_baselines(dm, None)
    assert set(baselines) == {"persistence", "climatology", "seasonal_naive", "damped_anomaly", "ridge_ar"}
    assert set(baselines["ridge_ar"]) == {"mae", "rmse", "mase", "smape", "pinball", "coverage"}
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    frame = dm.predict_frame([module(*module.batch_inputs(batch)).detach()], "predict")
    assert save_figure(forecast_figure(dm, frame), tmp_path / "forecast.png").is_file()


def test_yield_report(tmp_path):
    dm = YieldDataModule()
    dm.setup("fit")
    module = YieldRegressor(**dm.model_kwargs())
    ctx = RunContext(run_dir=tmp_path, cfg=OmegaConf.create({}), datamodule=dm, module=module, metrics={})
    sections = DOMAIN.report(ctx)
    assert sections[0].images[0].is_file() and "| year |" in sections[0].body
    assert set(run_baselines(dm, None)) == {"historical_average", "previous_year", "linear_trend"}
    forecast = dm.frames["test"].assign(predicted_yield=dm.frames["test"]["trend"])
    assert save_figure(yield_forecast_figure(dm.frames["train"], forecast), tmp_path / "y.png").is_file()
