"""Forecasting networks and the yield network: shapes, quantile order, learning planted signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.domains.agriculture.baselines import evaluate_weather_baselines, point_forecasts, ridge_ar_scaled_weights
from sectorkit.domains.agriculture.data import WeatherDataModule, YieldDataModule
from sectorkit.domains.agriculture.metrics import nrmse, score_forecasts
from sectorkit.domains.agriculture.models import NETWORKS, PatchTST
from sectorkit.domains.agriculture.models.common import RidgeReference
from sectorkit.domains.agriculture.module import WeatherForecaster, YieldRegressor, conformal_offsets, interval_offsets
from sectorkit.domains.agriculture.sample import synthetic_yield
from sectorkit.domains.agriculture.yield_protocol import expanding_window, fit_predict_yield


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_networks_output_ordered_quantiles(name):
    torch.manual_seed(0)
    net = NETWORKS[name](lookback=32, horizon=5, n_past=4, n_future=3)
    out = net(torch.randn(6, 32, 4), torch.randn(6, 5, 3))
    assert out.shape == (6, 5, 3)
    assert (out[..., 0] <= out[..., 1]).all() and (out[..., 1] <= out[..., 2]).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_lstm_cell_option():
    net = NETWORKS["gru"](lookback=16, horizon=3, n_past=2, n_future=3, cell="lstm")
    assert isinstance(net.encoder, torch.nn.LSTM)
    assert net(torch.randn(4, 16, 2), torch.randn(4, 3, 3)).shape == (4, 3, 3)
    with pytest.raises(ConfigError, match="cell"):
        NETWORKS["gru"](lookback=16, horizon=3, n_past=2, n_future=3, cell="rnn")


def test_patchtst_loads_local_pretrained_encoder(tmp_path):
    net = PatchTST(lookback=32, horizon=5, n_past=4, n_future=3)
    net.encoder.save_pretrained(tmp_path / "encoder")
    again = PatchTST(lookback=32, horizon=5, n_past=4, n_future=3, pretrained_path=str(tmp_path / "encoder"))
    for a, b in zip(net.encoder.parameters(), again.encoder.parameters()):
        assert torch.equal(a, b)


def test_conformal_offsets_reach_nominal_coverage():
    torch.manual_seed(0)
    residuals = torch.randn(4000, 3, 3) * 2.0  # network quantiles all at 0, true spread 2
    series = torch.arange(4000) % 2
    offsets = conformal_offsets(series, residuals, (0.1, 0.5, 0.9), 3)
    assert torch.allclose(offsets[:2, :, 0], torch.full((2, 3), -2.563), atol=0.25)
    assert (offsets[:, :, 1] == 0).all() and (offsets[2] == 0).all()  # median untouched, unseen series untouched


def test_auto_calibration_picks_the_variant_that_wins_held_out():
    """``auto`` chooses per series on the held-out half: raw quantiles that are already right are kept
    (``none``); quantiles whose widths are noise get the median's constant error band (or the blend)."""
    torch.manual_seed(0)
    n, q = 2000, (0.1, 0.5, 0.9)
    noise = torch.randn(n, 3, 1) * 2.0
    good = noise - torch.tensor([-2.563, 0.0, 2.563])  # network quantiles at the true ones: residual = y - q
    narrow = noise - torch.rand(n, 1, 1) * 6 * torch.tensor([-1.0, 0.0, 1.0])
    series = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    calibration, band, weight = interval_offsets(series, torch.cat([good, narrow]), q, 2, "auto")
    assert weight[0] == 0 and calibration[0].abs().sum() == 0  # none: raw network quantiles
    assert weight[1] > 0 and calibration[1].abs().sum() == 0  # band (or the blend) for the noisy widths
    for mode, expected in (("band", 1.0), ("blend", 0.5), ("learned", 0.0)):
        calibration, _, weight = interval_offsets(series, torch.cat([good, narrow]), q, 2, mode)
        assert (weight == expected).all() and (calibration.abs().sum() > 0) == (mode == "learned")


def test_auto_calibration_recentres_a_biased_median():
    """A network whose median is 1.5 too low on every window: ``auto`` picks a recentred band, which moves the
    median by the validation bias; the other variants leave it alone."""
    torch.manual_seed(0)
    q = (0.1, 0.5, 0.9)
    residuals = torch.randn(2000, 3, 1) + 1.5 - torch.tensor([-1.28, 0.0, 1.28])  # widths right, level off
    series = torch.zeros(2000, dtype=torch.long)
    calibration, band, weight = interval_offsets(series, residuals, q, 1, "auto")
    assert weight[0] > 0 and torch.allclose(band[0, :, 1], torch.full((3,), 1.5), atol=0.15)
    for mode in ("band", "blend", "learned"):
        calibration, band, _ = interval_offsets(series, residuals, q, 1, mode)
        assert (band[0, :, 1] == 0).all() and (calibration[0, :, 1] == 0).all()


def test_blend_calibration_averages_network_quantiles_and_band():
    module = WeatherForecaster(network="gru", n_series=1, lookback=16, horizon=3, n_past=6, n_future=3).eval()
    module.band.copy_(torch.tensor([-1.0, 0.0, 1.0]).expand(1, 3, 3))
    past, future = torch.randn(4, 16, 6), torch.randn(4, 3, 3)
    loc, scale, series = torch.zeros(4), torch.ones(4), torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        raw = module(past, future, loc, scale, series)
        module.band_weight.fill_(1.0)
        band = module(past, future, loc, scale, series)
        module.band_weight.fill_(0.5)
        blend = module(past, future, loc, scale, series)
    assert torch.allclose(band, raw[..., 1:2] + torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(blend, (raw + band) / 2) and torch.equal(blend[..., 1], raw[..., 1])


def test_dlinear_beats_naive_baselines_on_planted_ar1():
    torch.manual_seed(0)
    pl.seed_everything(0, verbose=False)
    dm = WeatherDataModule(
        stations=["synthetic"], synthetic={"n_series": 3, "n_days": 1100, "phi": 0.85}, lookback=28, batch_size=64
    )
    dm.setup("fit")
    module = WeatherForecaster(
        network="dlinear",
        **dm.model_kwargs(),
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-3},
    )
    trainer = pl.Trainer(
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, dm)
    preds = torch.cat(trainer.predict(module, dataloaders=dm.test_dataloader())).numpy()
    o = dm.origins["test"]
    target = dm.panel.target[o[:, None] + np.arange(1, 8)]
    scores = score_forecasts(preds, target, dm.stats.mase_scale[dm.panel.series_index[o]])
    base = evaluate_weather_baselines(dm.panel, dm.origins, 7)
    for weak in ("persistence", "climatology", "seasonal_naive"):
        assert scores["mae"] < base[weak]["mae"] and scores["pinball"] < base[weak]["pinball"], weak
    assert 0.6 < scores["coverage"] < 0.95
    assert module.band.abs().sum() > 0  # validation offsets were fitted
    # forward returns data units: the median sits near the series' level, not near 0
    assert abs(np.median(preds[..., 1]) - np.median(target)) < 5


def test_ridge_reference_reproduces_the_ridge_baseline():
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 500}, lookback=28)
    dm.setup("fit")
    reference = RidgeReference(2, 14, 7)
    reference.weight.copy_(torch.as_tensor(ridge_ar_scaled_weights(dm.panel, dm.origins["train"], 7)))
    batch = next(iter(torch.utils.data.DataLoader(dm.dataset("val"), batch_size=10_000)))
    scaled = reference(batch["past"], batch["series"])[..., 0]
    got = scaled * batch["scale"][:, None] + batch["loc"][:, None]
    expected = point_forecasts(dm.panel, dm.origins, 7, stages=("val",))["ridge_ar"]["val"]
    assert np.allclose(got.numpy(), expected, atol=1e-3)


def test_residual_on_ridge_ensemble_trains_and_keeps_reference(tmp_path):
    pl.seed_everything(0, verbose=False)
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 500}, lookback=28, batch_size=64)
    dm.setup("fit")
    module = WeatherForecaster(network="gru", reference="ridge_ar", ensemble=2, **dm.model_kwargs())
    assert len(module.net.members) == 2
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_train_batches=3)
    trainer.fit(module, dm)
    assert module.reference.weight.abs().sum() > 0  # fitted on the training span when training started
    trainer.save_checkpoint(tmp_path / "hybrid.ckpt")
    again = WeatherForecaster.load_from_checkpoint(tmp_path / "hybrid.ckpt", weights_only=True)
    assert torch.equal(again.reference.weight, module.reference.weight)
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        out = again.eval()(*again.batch_inputs(batch))
    assert out.shape == (len(batch["series"]), 7, 3) and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="reference"):
        WeatherForecaster(network="gru", reference="ridge")
    with pytest.raises(ConfigError, match="ensemble"):
        WeatherForecaster(network="gru", ensemble=0)


def test_ridge_combination_moves_the_forecast_not_the_training(tmp_path):
    """Weight 1 forecasts exactly the ridge baseline (whatever the network), while the network still trains on
    its own loss; the ridge is fitted when training starts even without the residual hybrid."""
    pl.seed_everything(0, verbose=False)
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 500}, lookback=28, batch_size=64)
    dm.setup("fit")
    module = WeatherForecaster(network="gru", ridge_combination=1.0, calibrate="none", **dm.model_kwargs())
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_train_batches=3)
    trainer.fit(module, dm)
    assert module.reference.weight.abs().sum() > 0
    batch = next(iter(torch.utils.data.DataLoader(dm.dataset("val"), batch_size=10_000)))
    with torch.no_grad():
        median = module.eval()(*module.batch_inputs(batch))[..., 1]
    expected = point_forecasts(dm.panel, dm.origins, 7, stages=("val",))["ridge_ar"]["val"]
    assert np.allclose(median.numpy(), expected, atol=1e-3)
    module.train().training_loss(batch).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.parameters())
    half = WeatherForecaster(network="gru", ridge_combination=0.5, calibrate="none", **dm.model_kwargs()).eval()
    half.reference.weight.copy_(module.reference.weight)
    half.net.load_state_dict(module.net.state_dict())
    half.local.load_state_dict(module.local.state_dict())
    with torch.no_grad():
        raw = half.network_output(batch["past"], batch["future"], batch["series"], combine=False)
        combined = half.network_output(batch["past"], batch["future"], batch["series"])
    ridge = half.reference(batch["past"], batch["series"])
    assert torch.allclose(combined[..., 1:2], (raw[..., 1:2] + ridge) / 2, atol=1e-5)
    assert torch.allclose(combined[..., 2] - combined[..., 0], raw[..., 2] - raw[..., 0], atol=1e-5)  # same spread
    with pytest.raises(ConfigError, match="ridge_combination"):
        WeatherForecaster(network="gru", ridge_combination=1.5)
    # with bare dataloaders there is no training span to fit the ridge on: an unfitted ridge is refused
    bare = WeatherForecaster(network="gru", ridge_combination=0.25, **dm.model_kwargs())
    fresh = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                       enable_model_summary=False, accelerator="cpu", limit_train_batches=1)
    with pytest.raises(ConfigError, match="WeatherDataModule"):
        fresh.fit(bare, dm.train_dataloader())


def test_weather_datamodule_state_round_trip_and_predict(tmp_path):
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 400}, lookback=28)
    dm.setup("fit")
    frame = dm.load_frame(0)
    frame.groupby("series_id").tail(100).to_csv(tmp_path / "recent.csv", index=False)
    again = WeatherDataModule(path=str(tmp_path / "recent.csv"), lookback=28)
    again.load_state_dict(dm.state_dict())
    again.setup("predict")
    assert np.allclose(again.stats.loc, dm.stats.loc)
    module = WeatherForecaster(network="dlinear", **dm.model_kwargs())
    batch = next(iter(again.predict_dataloader()))
    out = module(*module.batch_inputs(batch))
    table = again.predict_frame([out.detach()], "predict")
    assert len(table) == 2 * 7 and set(table["horizon"]) == set(range(1, 8))
    last = frame.groupby("series_id")["date"].max()
    assert (table.groupby("series_id")["date"].min() == last + pd.Timedelta(days=1)).all()


def test_yield_network_beats_baselines_expanding_window():
    dm = YieldDataModule()
    frame = dm.load_tables()
    pred = expanding_window(frame, dm.feature_names, seed=0, epochs=150, last_years=4)
    model = nrmse(pred["predicted"], pred["yield"])
    for name in ("historical_average", "previous_year", "linear_trend"):
        assert model < nrmse(pred[name], pred["yield"]), name


def test_yield_without_weather_uses_trend_and_covariates(tmp_path):
    yields, _ = synthetic_yield()
    rng = np.random.default_rng(0)
    yields["fertiliser"] = rng.normal(0, 1, len(yields))
    yields["yield"] = yields["yield"] + 1.5 * yields["fertiliser"]
    yields.to_csv(tmp_path / "yields.csv", index=False)
    dm = YieldDataModule(path=str(tmp_path / "yields.csv"), covariates=["fertiliser"])
    dm.setup("fit")
    assert dm.feature_names == ["fertiliser"]
    train = pd.concat([dm.frames["train"], dm.frames["val"]])
    pred = fit_predict_yield(train, dm.frames["test"], dm.feature_names, epochs=200)
    trend_only = dm.frames["test"]["trend"]
    assert nrmse(pred, dm.frames["test"]["yield"]) < nrmse(trend_only, dm.frames["test"]["yield"])
    module = YieldRegressor(**dm.model_kwargs())
    batch = next(iter(dm.test_dataloader()))
    assert module(*module.batch_inputs(batch)).shape == batch["target"].shape


def test_yield_predict_next_season(tmp_path):
    yields, _ = synthetic_yield()
    yields.to_csv(tmp_path / "history.csv", index=False)
    dm = YieldDataModule(path=str(tmp_path / "history.csv"))
    dm.setup("fit")
    module = YieldRegressor(**dm.model_kwargs())
    later = YieldDataModule(path=str(tmp_path / "history.csv"))
    later.load_state_dict(dm.state_dict())
    later.setup("predict")
    batch = next(iter(later.predict_dataloader()))
    table = later.predict_frame([module(*module.batch_inputs(batch)).detach()], "predict")
    assert len(table) == yields["region"].nunique() and (table["year"] == yields["year"].max() + 1).all()
    # explicit next-season rows with a blank yield and a covariate the model was not trained on
    extra = yields.assign(fertiliser=1.0)
    extra.to_csv(tmp_path / "with_cov.csv", index=False)
    bad = YieldDataModule(path=str(tmp_path / "with_cov.csv"), covariates=["fertiliser"])
    bad.load_state_dict(dm.state_dict())
    with pytest.raises(DataError, match="differ from those the model was trained on"):
        bad.setup("predict")


def test_series_embedding_learns_what_the_window_cannot_tell(tmp_path):
    """Two iid series with opposite skew look alike once scaled, from a 14-day window; with a series embedding
    the global network gives each its own quantiles and beats the same network without one."""
    rng = np.random.default_rng(0)
    dates = pd.date_range("2000-01-01", periods=1500)
    frames = []
    for name, sign in (("right", 1.0), ("left", -1.0)):
        tmax = 15 + sign * 3 * rng.exponential(1.0, len(dates))
        frames.append(pd.DataFrame({"series_id": name, "date": dates, "tmax": tmax, "tmin": tmax - 8, "precip": 0.0}))
    pd.concat(frames).to_csv(tmp_path / "skew.csv", index=False)
    pinball = {}
    for size in (0, 2):
        pl.seed_everything(1, verbose=False)
        dm = WeatherDataModule(path=str(tmp_path / "skew.csv"), lookback=14, batch_size=64)
        dm.setup("fit")
        module = WeatherForecaster(
            network="gru", series_embedding=size, calibrate="none", local_lags=0, network_kwargs={"hidden": 16},
            optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-3}, **dm.model_kwargs(),
        )
        trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu")
        trainer.fit(module, dm)
        preds = torch.cat(trainer.predict(module, dataloaders=dm.test_dataloader())).numpy()
        o = dm.origins["test"]
        target = dm.panel.target[o[:, None] + np.arange(1, 8)]
        pinball[size] = score_forecasts(preds, target, dm.stats.mase_scale[dm.panel.series_index[o]])["pinball"]
    assert pinball[2] < 0.98 * pinball[0], pinball
    with pytest.raises(ConfigError, match="series_embedding"):
        WeatherForecaster(network="gru", series_embedding=-1)


def test_local_adapter_reads_the_covariates_it_is_given(tmp_path):
    """Yesterday's wind pushes tomorrow's tmax up at one station and down at the other: scaled, the two series
    look alike to the global network, while the per-series adapter over the wind lags (``local_covariates``)
    learns each station's sign and beats the adapter over the target alone."""
    rng = np.random.default_rng(0)
    dates = pd.date_range("2000-01-01", periods=1500)
    frames = []
    for name, sign in (("windward", 1.0), ("leeward", -1.0)):
        wind = rng.normal(0, 1, len(dates))
        tmax = 15 + 0.5 * rng.normal(0, 1, len(dates))
        tmax[1:] += sign * 3.0 * wind[:-1]
        frames.append(pd.DataFrame({"series_id": name, "date": dates, "tmax": tmax, "tmin": tmax - 8, "wind": wind}))
    pd.concat(frames).to_csv(tmp_path / "wind.csv", index=False)
    mae = {}
    for local in ((), ("wind",)):
        pl.seed_everything(1, verbose=False)
        dm = WeatherDataModule(path=str(tmp_path / "wind.csv"), covariates=["tmin", "wind"], lookback=14, batch_size=64)
        dm.setup("fit")
        module = WeatherForecaster(
            network="gru", local_covariates=list(local), calibrate="none", network_kwargs={"hidden": 8},
            optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2}, **dm.model_kwargs(),
        )
        assert module.local.weight.shape[1] == 14 * (1 + len(local)) + 1
        trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu")
        trainer.fit(module, dm)
        preds = torch.cat(trainer.predict(module, dataloaders=dm.test_dataloader())).numpy()
        o = dm.origins["test"]
        mae[local] = np.abs(preds[:, 0, 1] - dm.panel.target[o + 1]).mean()  # day 1, where the wind tells
    assert mae[("wind",)] < 0.7 * mae[()], mae
    with pytest.raises(ConfigError, match="model.local_covariates"):
        WeatherForecaster(network="gru", covariates=["tmin"], local_covariates=["wind"])
