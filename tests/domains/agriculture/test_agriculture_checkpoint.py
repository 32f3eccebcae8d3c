"""Checkpoints load with weights_only=True and restore the model, its calibration and the fitted scalers."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from agriculture_nets import net
from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint, restore_datamodule_state
from sectorkit.domains.agriculture.crop_yield.data import YieldDataModule
from sectorkit.domains.agriculture.crop_yield.module import YieldRegressor
from sectorkit.domains.agriculture.weather.data import WeatherDataModule
from sectorkit.domains.agriculture.weather.module import WeatherForecaster


def _fit(module, dm, tmp_path, epochs=2):
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        callbacks=[ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, dm)
    return tmp_path / "last.ckpt"


def test_weather_checkpoint_round_trip(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 500}, lookback=28)
    dm.setup("fit")
    module = WeatherForecaster(net=net("gru"), series_embedding=2, ridge_combination=0.25, **dm.model_kwargs())
    module.prepare_fit(dm.training_state())
    path = _fit(module, dm, tmp_path)
    checkpoint = load_checkpoint(path)  # weights_only=True
    rebuilt = model_from_checkpoint(checkpoint)
    fresh = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 500}, lookback=28)
    restore_datamodule_state(fresh, checkpoint)
    assert np.allclose(fresh.stats.clim, dm.stats.clim) and fresh.stats.series == dm.stats.series
    fresh.setup("test")
    batch = next(iter(fresh.test_dataloader()))
    module.eval()
    assert torch.allclose(rebuilt(*rebuilt.batch_inputs(batch)), module(*module.batch_inputs(batch)), atol=1e-5)
    assert torch.equal(rebuilt.band_weight, module.band_weight) and rebuilt.band.abs().sum() > 0
    assert torch.equal(rebuilt.reference.weight, module.reference.weight) and rebuilt.hparams.net == net("gru")


def test_yield_checkpoint_round_trip(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = YieldDataModule()
    dm.setup("fit")
    module = YieldRegressor(net={"_target_": "sectorkit.domains.agriculture.models.yield_mlp.YieldMLP"}, **dm.model_kwargs())
    checkpoint = load_checkpoint(_fit(module, dm, tmp_path, epochs=3))
    rebuilt = model_from_checkpoint(checkpoint)
    fresh = YieldDataModule()
    restore_datamodule_state(fresh, checkpoint)
    assert fresh.feature_names == dm.feature_names and np.allclose(fresh.feature_mean, dm.feature_mean)
    batch = next(iter(dm.test_dataloader()))
    module.eval()
    assert torch.allclose(rebuilt(*rebuilt.batch_inputs(batch)), module(*module.batch_inputs(batch)), atol=1e-5)

