"""Forecasting networks and the yield network: shapes, quantile order, learning planted signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from agriculture_nets import net
from sectorkit.core.config import validate_overrides
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.domains.agriculture import DOMAIN
from sectorkit.domains.agriculture.crop_yield.data import YieldDataModule
from sectorkit.domains.agriculture.crop_yield.module import YieldRegressor
from sectorkit.domains.agriculture.crop_yield.protocols import expanding_window, fit_predict_yield
from sectorkit.domains.agriculture.metrics import nrmse, score_forecasts
from sectorkit.domains.agriculture.models.common import RidgeReference, WindowForecaster
from sectorkit.domains.agriculture.models.dlinear import DLinear
from sectorkit.domains.agriculture.models.gru import GRUForecaster
from sectorkit.domains.agriculture.models.nhits import NHiTS
from sectorkit.domains.agriculture.models.patchtst import PatchTST
from sectorkit.domains.agriculture.models.yield_mlp import YieldMLP
from sectorkit.domains.agriculture.sample import synthetic_yield
from sectorkit.domains.agriculture.weather.baselines import point_forecasts, ridge_ar_scaled_weights, weather_baselines
from sectorkit.domains.agriculture.weather.data import WeatherDataModule
from sectorkit.domains.agriculture.weather.intervals import conformal_offsets, fit_intervals, rule_offsets
from sectorkit.domains.agriculture.weather.module import WeatherForecaster

YIELD_NET = {"_target_": "sectorkit.domains.agriculture.models.yield_mlp.YieldMLP"}


@pytest.mark.parametrize("network", [GRUForecaster, DLinear, NHiTS, PatchTST])
def test_networks_output_ordered_quantiles(network):
    torch.manual_seed(0)
    assert issubclass(network, WindowForecaster) and network.input_type == "windows" and network.known_ahead
    model = network(lookback=32, horizon=5, n_past=4, n_future=3)
    out = model(torch.randn(6, 32, 4), torch.randn(6, 5, 3))
    assert out.shape == (6, 5, 3)
    assert (out[..., 0] <= out[..., 1]).all() and (out[..., 1] <= out[..., 2]).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_lstm_cell_option():
    model = GRUForecaster(lookback=16, horizon=3, n_past=2, n_future=3, cell="lstm")
    assert isinstance(model.encoder, torch.nn.LSTM)
    assert model(torch.randn(4, 16, 2), torch.randn(4, 3, 3)).shape == (4, 3, 3)
    with pytest.raises(ConfigError, match="model.net.cell"):
        GRUForecaster(lookback=16, horizon=3, n_past=2, n_future=3, cell="rnn")


class _NoCalendar(WindowForecaster):
    """A network that ignores the known-ahead inputs (declares ``known_ahead = False``)."""

    known_ahead = False

    def __init__(self, lookback: int, horizon: int, n_past: int, n_future: int, quantiles=(0.1, 0.5, 0.9)) -> None:
        super().__init__()
        self.horizon, self.n_q = horizon, len(quantiles)
        self.linear = torch.nn.Linear(lookback, horizon * self.n_q)

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return self.linear(past[..., 0]).view(-1, self.horizon, self.n_q).sort(-1).values


def test_the_module_and_data_modules_read_what_a_network_declares():
    """The module builds the network from ``net`` with the data's sizes, refuses a series embedding for a
    network that declares it ignores known-ahead inputs, and refuses a yield network; each data module refuses
    a network that trains on the other problem's batches."""
    module = WeatherForecaster(net=net("gru", hidden=8), lookback=16, horizon=3, n_past=5, n_future=3, ensemble=2)
    assert [type(m) for m in module.net.members] == [GRUForecaster, GRUForecaster]
    assert module.net.members[0].encoder.hidden_size == 8 and module.hparams.net["hidden"] == 8
    plain = {"_target_": f"{__name__}._NoCalendar"}
    assert WeatherForecaster(net=plain, lookback=16, horizon=3, n_past=5, n_future=3).net.members[0].linear.in_features == 16
    with pytest.raises(ConfigError, match="model.series_embedding=2: _NoCalendar does not read known-ahead inputs"):
        WeatherForecaster(net=plain, lookback=16, series_embedding=2)
    with pytest.raises(ConfigError, match="not a weather network"):
        WeatherForecaster(net=YIELD_NET)
    with pytest.raises(ConfigError, match="model.net: cannot build GRUForecaster"):
        WeatherForecaster(net=net("gru", hiden=8))
    with pytest.raises(ConfigError, match="model=yield_mlp"):
        YieldDataModule(network=GRUForecaster)
    with pytest.raises(ConfigError, match="model=gru"):
        WeatherDataModule(network=YieldMLP)
    with pytest.raises(ConfigError, match="data.problem='yield'"):
        WeatherDataModule(problem="yield")


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


def test_calibration_picks_the_rule_that_wins_held_out():
    """Each series gets the rule that wins on the held-out half: raw quantiles that are already right are kept
    (``none``); quantiles whose widths are noise get the median's constant error band (or the blend)."""
    torch.manual_seed(0)
    n, q = 2000, (0.1, 0.5, 0.9)
    noise = torch.randn(n, 3, 1) * 2.0
    good = noise - torch.tensor([-2.563, 0.0, 2.563])  # network quantiles at the true ones: residual = y - q
    narrow = noise - torch.rand(n, 1, 1) * 6 * torch.tensor([-1.0, 0.0, 1.0])
    series = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    residuals, origins = torch.cat([good, narrow]), torch.arange(2 * n)
    calibration, band, weight = fit_intervals(series, residuals, origins, q, 2)
    assert weight[0] == 0 and calibration[0].abs().sum() == 0  # none: raw network quantiles
    assert weight[1] > 0 and calibration[1].abs().sum() == 0  # band (or the blend) for the noisy widths
    for rule, expected in (("band", 1.0), ("blend", 0.5), ("learned", 0.0)):
        calibration, _, weight = rule_offsets([rule, rule], series, residuals, q)
        assert (weight == expected).all() and (calibration.abs().sum() > 0) == (rule == "learned")


def test_calibration_recentres_a_biased_median():
    """A network whose median is 1.5 too low on every window gets a recentred band, which moves the median by
    the validation bias; the other rules leave it alone."""
    torch.manual_seed(0)
    q = (0.1, 0.5, 0.9)
    residuals = torch.randn(2000, 3, 1) + 1.5 - torch.tensor([-1.28, 0.0, 1.28])  # widths right, level off
    series = torch.zeros(2000, dtype=torch.long)
    calibration, band, weight = fit_intervals(series, residuals, torch.arange(2000), q, 1)
    assert weight[0] > 0 and torch.allclose(band[0, :, 1], torch.full((3,), 1.5), atol=0.15)
    for rule in ("band", "blend", "learned"):
        calibration, band, _ = rule_offsets([rule], series, residuals, q)
        assert (band[0, :, 1] == 0).all() and (calibration[0, :, 1] == 0).all()


def test_blend_calibration_averages_network_quantiles_and_band():
    module = WeatherForecaster(net=net("gru"), n_series=1, lookback=16, horizon=3, n_past=6, n_future=3).eval()
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
        net=net("dlinear"),
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
    base = {name: result.metrics for name, result in weather_baselines(dm.panel, dm.origins, 7).items()}
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
    module = WeatherForecaster(net=net("gru"), reference="ridge_ar", ensemble=2, **dm.model_kwargs())
    assert len(module.net.members) == 2
    module.prepare_fit(dm.training_state())
    assert module.reference.weight.abs().sum() > 0  # fitted on the training span the data module handed over
    fitted = module.reference.weight.clone()
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_train_batches=3)
    trainer.fit(module, dm)
    assert torch.equal(module.reference.weight, fitted)  # a buffer: training leaves it alone
    trainer.save_checkpoint(tmp_path / "hybrid.ckpt")
    again = WeatherForecaster.load_from_checkpoint(tmp_path / "hybrid.ckpt", weights_only=True)
    assert torch.equal(again.reference.weight, module.reference.weight)
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        out = again.eval()(*again.batch_inputs(batch))
    assert out.shape == (len(batch["series"]), 7, 3) and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="model.reference='ridge': expected one of none, ridge_ar"):
        validate_overrides(DOMAIN, ["domain=agriculture", "model.reference=ridge"])
    with pytest.raises(ConfigError, match="ensemble"):
        WeatherForecaster(net=net("gru"), ensemble=0)


def test_ridge_combination_moves_the_forecast_not_the_training(tmp_path):
    """Weight 1 forecasts exactly the ridge baseline (whatever the network), while the network still trains on
    its own loss; the ridge is fitted on the handed-over training span even without the residual hybrid."""
    pl.seed_everything(0, verbose=False)
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 500}, lookback=28, batch_size=64)
    dm.setup("fit")
    module = WeatherForecaster(net=net("gru"), ridge_combination=1.0, calibrate=False, **dm.model_kwargs())
    module.prepare_fit(dm.training_state())
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
    half = WeatherForecaster(net=net("gru"), ridge_combination=0.5, calibrate=False, **dm.model_kwargs()).eval()
    half.reference.weight.copy_(module.reference.weight)
    half.net.load_state_dict(module.net.state_dict())
    half.local.load_state_dict(module.local.state_dict())
    with torch.no_grad():
        raw = half.network_output(batch["past"], batch["future"], batch["series"], combine=False)
        combined = half.network_output(batch["past"], batch["future"], batch["series"])
    ridge = half.reference(batch["past"], batch["series"])
    assert torch.allclose(combined[..., 1:2], (raw[..., 1:2] + ridge) / 2, atol=1e-5)
    assert torch.allclose(combined[..., 2] - combined[..., 0], raw[..., 2] - raw[..., 0], atol=1e-5)  # same spread
    with pytest.raises(ConfigError, match=r"model.ridge_combination=1.5: expected a value >= 0 and <= 1"):
        validate_overrides(DOMAIN, ["domain=agriculture", "model.ridge_combination=1.5"])
    # without the training span handed over (prepare_fit) the ridge is unfitted: training around it is refused
    bare = WeatherForecaster(net=net("gru"), ridge_combination=0.25, **dm.model_kwargs())
    fresh = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                       enable_model_summary=False, accelerator="cpu", limit_train_batches=1)
    with pytest.raises(ConfigError, match=r"model.ridge_combination > 0 need .* model.prepare_fit\(datamodule.training_state\(\)\)"):
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
    module = WeatherForecaster(net=net("dlinear"), **dm.model_kwargs())
    assert again.predict_split() == "predict"
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
    module = YieldRegressor(net=YIELD_NET, **dm.model_kwargs())
    batch = next(iter(dm.test_dataloader()))
    assert module(*module.batch_inputs(batch)).shape == batch["target"].shape


def test_yield_predict_next_season(tmp_path):
    yields, _ = synthetic_yield()
    yields.to_csv(tmp_path / "history.csv", index=False)
    dm = YieldDataModule(path=str(tmp_path / "history.csv"))
    dm.setup("fit")
    module = YieldRegressor(net=YIELD_NET, **dm.model_kwargs())
    later = YieldDataModule(path=str(tmp_path / "history.csv"))
    later.load_state_dict(dm.state_dict())
    later.setup("predict")
    assert later.predict_split() == "predict" and dm.predict_split() == "test"
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
            net=net("gru", hidden=16), series_embedding=size, calibrate=False, local_lags=0,
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
    with pytest.raises(ConfigError, match="model.series_embedding=-1: expected a value >= 0"):
        validate_overrides(DOMAIN, ["domain=agriculture", "model.series_embedding=-1"])


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
            net=net("gru", hidden=8), local_covariates=list(local), calibrate=False,
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
        WeatherForecaster(net=net("gru"), covariates=["tmin"], local_covariates=["wind"])
