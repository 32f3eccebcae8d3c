"""End to end from the Hydra configs: train, test, baselines, report, checkpoint, predict on a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from sectorkit.core.config import compose_config
from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint, restore_datamodule_state
from sectorkit.core.errors import DataError
from sectorkit.core.reporting import RunContext
from sectorkit.core.trainer import build_trainer
from sectorkit.domains.agriculture import DOMAIN


@pytest.mark.parametrize("experiment", DOMAIN.options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_config(DOMAIN, [f"experiment={experiment}"])
    if experiment.startswith("yield"):
        assert cfg.monitor.metric == "nrmse" and cfg.model._target_.endswith("YieldRegressor")
    else:
        assert cfg.monitor.metric == "mae" and cfg.model._target_.endswith("WeatherForecaster")
    assert cfg.monitor.mode == "min"


@pytest.mark.parametrize("model", ["gru", "dlinear", "nhits", "patchtst"])
def test_every_weather_model_composes_and_builds(model):
    cfg = compose_config(DOMAIN, [f"model={model}", "data=synthetic"])
    covariates = [*cfg.data.covariates, *cfg.data.optional_covariates]
    module = instantiate(cfg.model, lookback=28, horizon=7, n_past=4 + len(covariates), n_future=3, n_series=2,
                         covariates=covariates, optimizer=cfg.optimizer, _recursive_=False)
    assert module.hparams.network == model


def _fit(tmp_path: Path, experiment: str, overrides: list[str] = ()):
    cfg = compose_config(DOMAIN, [f"experiment={experiment}", f"paths.output_dir={tmp_path}", "~logger",
                               "callbacks.progress_bar=null", "callbacks.model_summary=null", *overrides])
    pl.seed_everything(0, verbose=False)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    model = instantiate(cfg.model, **dm.model_kwargs(), optimizer=cfg.optimizer, _recursive_=False)
    trainer = build_trainer(cfg, enable_progress_bar=False)
    trainer.fit(model, dm)
    test = {k.removeprefix("test/"): v for k, v in trainer.test(model, dm, ckpt_path="best", verbose=False)[0].items()}
    return cfg, dm, model, trainer, test


def _predict(model, datamodule):
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return trainer.predict(model, datamodule=datamodule)


def test_quick_weather_pipeline(tmp_path):
    cfg, dm, model, trainer, test = _fit(tmp_path, "quick")
    baselines = DOMAIN.baselines(dm, cfg)
    assert set(baselines["ridge_ar"]) == set(test) == {"mae", "rmse", "mase", "smape", "pinball", "coverage"}
    for weak in ("persistence", "climatology", "seasonal_naive"):  # planted AR(1) anomalies: a fair expectation
        assert test["mae"] < baselines[weak]["mae"] and test["pinball"] < baselines[weak]["pinball"], weak
    metrics = {"domain": "agriculture", "model_name": "gru", "primary_metric": "mae", "mode": "min", "test": test,
               "baselines": baselines}
    sections = DOMAIN.report(RunContext(tmp_path, cfg, dm, model, metrics, trainer))
    assert all(Path(img).is_file() for s in sections for img in s.images)

    checkpoint = load_checkpoint(trainer.checkpoint_callback.best_model_path)
    restored = model_from_checkpoint(checkpoint)
    recent = tmp_path / "recent.csv"
    dm.load_frame(0).groupby("series_id").tail(60).to_csv(recent, index=False)
    predict_dm = instantiate(cfg.data, path=str(recent))
    restore_datamodule_state(predict_dm, checkpoint)
    table = predict_dm.predict_frame(_predict(restored, predict_dm), "predict")
    assert len(table) == 3 * 7 and (table["q0.1"] <= table["q0.5"]).all() and (table["q0.5"] <= table["q0.9"]).all()
    assert table["q0.5"].between(-40, 50).all()

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
    baselines = DOMAIN.baselines(dm, cfg)
    assert set(baselines["linear_trend"]) == set(test) == {"nrmse", "rmse", "mae"}
    for name in ("historical_average", "previous_year", "linear_trend"):
        assert test["nrmse"] < baselines[name]["nrmse"], name
    metrics = {"domain": "agriculture", "model_name": "yield_mlp", "primary_metric": "nrmse", "mode": "min",
               "test": test, "baselines": baselines}
    sections = DOMAIN.report(RunContext(tmp_path, cfg, dm, model, metrics, trainer))
    assert Path(sections[0].images[0]).is_file()
    preds = torch.cat(_predict(model, dm)).numpy()
    assert np.isfinite(preds).all() and len(preds) == len(dm.frames["test"])
