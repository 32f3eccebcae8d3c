"""End to end from the Hydra configs: train, test, baselines, report, checkpoint, predict on a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint, restore_datamodule_state
from sectorkit.core.config import compose_config, validate_overrides
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.pipeline import build_datamodule, build_model, collect_predictions
from sectorkit.core.reporting import RunContext
from sectorkit.core.trainer import build_trainer
from sectorkit.domains.agriculture import DOMAIN


@pytest.mark.parametrize("experiment", DOMAIN.options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_config(DOMAIN, [f"experiment={experiment}"])
    if cfg.data.problem == "yield":  # yield, yield_quick and demo (the demo runs yield_quick)
        assert cfg.monitor.metric == "nrmse" and cfg.model._target_.endswith("YieldRegressor")
        assert cfg.data.problem == "yield" and cfg.model.net._target_.endswith("YieldMLP")
    else:
        assert cfg.monitor.metric == "mae" and cfg.model._target_.endswith("WeatherForecaster")
        assert cfg.data.problem == "weather" and cfg.model.net._target_.endswith("GRUForecaster")
    assert cfg.monitor.mode == "min"


@pytest.mark.parametrize("model", ["gru", "dlinear", "nhits", "patchtst"])
def test_every_weather_model_composes_and_builds(model):
    cfg = compose_config(DOMAIN, [f"model={model}", "data=synthetic"])
    covariates = [*cfg.data.covariates, *cfg.data.optional_covariates]
    module = instantiate(cfg.model, lookback=28, horizon=7, n_past=4 + len(covariates), n_future=3, n_series=2,
                         covariates=covariates, optimizer=cfg.optimizer, _recursive_=False)
    assert module.hparams.net == OmegaConf.to_container(cfg.model.net)
    assert all(type(member).__name__ == cfg.model.net._target_.rsplit(".", 1)[-1] for member in module.net.members)
    assert len(module.net.members) == cfg.model.ensemble


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.batch_sise=3"], "unknown config key 'data.batch_sise' (did you mean 'data.batch_size'"),
        (["data.batch_size=abc"], "data.batch_size=abc: Value 'abc' of type 'str' could not be converted to Integer"),
        (["model.net.hidden=64", "model.ensembl=2"], "unknown config key 'model.ensembl' (did you mean 'model.ensemble'"),
        (["model.calibrate=auto"], "model.calibrate=auto: Value 'auto' is not a valid bool"),
        (["experiment=yield", "data.synthetic.nois=0.1"], "unknown config key 'data.synthetic.nois'"),
        (["experiment=yield", "data.lookback=28"], "unknown config key 'data.lookback'"),
        (["data.lookback=7"], "data.lookback=7: expected a value >= 14"),
        (["model.ridge_combination=1.5"], "model.ridge_combination=1.5: expected a value >= 0 and <= 1"),
        (["model.ensemble=0"], "model.ensemble=0: expected a value >= 1"),
        (["experiment=yield", "data.test_years=0"], "data.test_years=0: expected a value >= 1"),
        (["experiment=yield", "data.protocol=loyo"],
         "data.protocol='loyo': expected one of last_years, leave_one_year_out, expanding_window"),
    ],
)
def test_typed_configs_refuse_typos_wrong_types_and_values_out_of_range(overrides, message):
    with pytest.raises(ConfigError) as caught:
        validate_overrides(DOMAIN, overrides)
    assert message in str(caught.value)


def test_protocol_and_date_format_options_compose():
    cfg = compose_config(DOMAIN, ["experiment=yield", "data.protocol=leave_one_year_out", "data.date_format=%d/%m/%Y"])
    assert (cfg.data.protocol, cfg.data.date_format) == ("leave_one_year_out", "%d/%m/%Y")
    validate_overrides(DOMAIN, ["data.date_format=%d.%m.%Y"])  # the weather data's option
    assert compose_config(DOMAIN, ["experiment=yield"]).data.protocol == "last_years"


def test_a_network_of_the_other_problem_is_refused_by_the_data_module():
    refused = (ConfigError, InstantiationException)  # Hydra's instantiate wraps the data module's ConfigError
    cfg = compose_config(DOMAIN, ["data=yield"])  # model=gru: a weather network
    with pytest.raises(refused, match="GRUForecaster trains on 'windows' batches.*model=yield_mlp"):
        build_datamodule(cfg)
    cfg = compose_config(DOMAIN, ["model=yield_mlp"])
    with pytest.raises(refused, match="YieldMLP trains on 'season_features' batches.*model=gru"):
        build_datamodule(cfg)


def _fit(tmp_path: Path, experiment: str, overrides: list[str] = ()):
    cfg = compose_config(DOMAIN, [f"experiment={experiment}", f"paths.output_dir={tmp_path}", "~logger",
                               "callbacks.progress_bar=null", "callbacks.model_summary=null", *overrides])
    pl.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    model = build_model(cfg, dm)  # hands the model the data module's training state
    trainer = build_trainer(cfg, enable_progress_bar=False)
    trainer.fit(model, dm)
    test = {k.removeprefix("test/"): v for k, v in trainer.test(model, dm, ckpt_path="best", verbose=False)[0].items()}
    return cfg, dm, model, trainer, test


def _predict(model, datamodule):
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return trainer.predict(model, datamodule=datamodule)


def test_quick_weather_pipeline(tmp_path):
    cfg, dm, model, trainer, test = _fit(tmp_path, "quick")
    assert model.reference.weight.abs().sum() > 0  # the GRU's ridge combination, fitted on the training span
    results = DOMAIN.baselines(dm, cfg)
    baselines = {name: result.metrics for name, result in results.items()}
    assert set(baselines["ridge_ar"]) == set(test) == {"mae", "rmse", "mase", "smape", "pinball", "coverage"}
    for weak in ("persistence", "climatology", "seasonal_naive"):  # planted AR(1) anomalies: a fair expectation
        assert test["mae"] < baselines[weak]["mae"] and test["pinball"] < baselines[weak]["pinball"], weak
    metrics = {"domain": "agriculture", "model_name": "gru", "primary_metric": "mae", "mode": "min", "test": test,
               "baselines": baselines}
    outputs, table = collect_predictions(model, dm, "test")
    assert len(table) == len(dm.origins["test"]) * 7 and "actual" in table
    ctx = RunContext(tmp_path, cfg, dm, model, metrics, trainer, predictions=table, outputs=outputs, baselines=results)
    sections = DOMAIN.report(ctx)
    assert all(Path(img).is_file() for s in sections for img in s.images)

    checkpoint = load_checkpoint(trainer.checkpoint_callback.best_model_path)
    restored = model_from_checkpoint(checkpoint)
    recent = tmp_path / "recent.csv"
    dm.load_frame(0).groupby("series_id").tail(60).to_csv(recent, index=False)
    predict_dm = instantiate(cfg.data, path=str(recent))
    restore_datamodule_state(predict_dm, checkpoint)
    predict_dm.setup("predict")
    outputs = _predict(restored, predict_dm)
    table = predict_dm.predict_frame(outputs, "predict")
    assert len(table) == 3 * 7 and (table["q0.1"] <= table["q0.5"]).all() and (table["q0.5"] <= table["q0.9"]).all()
    assert table["q0.5"].between(-40, 50).all()
    # the forecast plot is drawn by the report hook, beside the predictions file
    plots = tmp_path / "predicted_plots"
    ctx = RunContext(tmp_path, cfg, predict_dm, restored, {}, stage="predict", predictions=table, outputs=outputs, plots_dir=plots)
    assert DOMAIN.report(ctx) == [] and (plots / "forecast.png").is_file()

    # bad input at predict time: clear errors naming the file
    frame = pd.read_csv(recent)
    pd.concat([frame, frame.iloc[[3]]]).to_csv(tmp_path / "dup.csv", index=False)
    frame[frame["series_id"] == frame["series_id"].iloc[0]].assign(series_id="elsewhere").to_csv(
        tmp_path / "unknown.csv", index=False
    )
    frame.groupby("series_id").tail(10).to_csv(tmp_path / "short.csv", index=False)
    for name, message in (("dup.csv", "duplicated"), ("unknown.csv", "not seen when the scalers were fitted"),
                          ("short.csv", "fewer than lookback")):
        bad = instantiate(cfg.data, path=str(tmp_path / name))
        restore_datamodule_state(bad, checkpoint)
        with pytest.raises(DataError, match=message):
            bad.setup("predict")


def test_quick_yield_pipeline(tmp_path):
    cfg, dm, model, trainer, test = _fit(tmp_path, "yield_quick")
    results = DOMAIN.baselines(dm, cfg)
    baselines = {name: result.metrics for name, result in results.items()}
    assert set(baselines["linear_trend"]) == set(test) == {"nrmse", "rmse", "mae"}
    for name in ("historical_average", "previous_year", "linear_trend"):
        assert test["nrmse"] < baselines[name]["nrmse"], name
        assert len(results[name].predictions) == len(dm.frames["test"])
    metrics = {"domain": "agriculture", "model_name": "yield_mlp", "primary_metric": "nrmse", "mode": "min",
               "test": test, "baselines": baselines}
    outputs, table = collect_predictions(model, dm, "test")
    ctx = RunContext(tmp_path, cfg, dm, model, metrics, trainer, predictions=table, outputs=outputs, baselines=results)
    sections = DOMAIN.report(ctx)
    assert Path(sections[0].images[0]).is_file()
    preds = torch.cat(_predict(model, dm)).numpy()  # no file read for predict: the test years
    assert np.isfinite(preds).all() and len(preds) == len(dm.frames["test"])
    assert np.allclose(preds, table["predicted_yield"], atol=1e-5) and "actual" in table
