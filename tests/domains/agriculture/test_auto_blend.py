"""Agriculture ``model=auto``: the weather blend of the two best candidates (quantiles averaged with the weight chosen
on validation, shipped, evaluated, predicted and exported from the run folder alone) and the crop-yield candidates
(the linear trend and a closed-form ridge as networks, then the yield MLP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

TINY_WEATHER = ["experiment=quick", "data.synthetic.n_series=2", "data.synthetic.n_days=500", "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def weather_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """A tiny weather ``model=auto`` run: persistence and climatology (closed form, one epoch each) and their blend."""
    import sectorkit

    root = tmp_path_factory.mktemp("agri_auto")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SECTORKIT_ROOT", str(root))
        run = sectorkit.train("agriculture", "model=auto", "auto.candidates=[persistence,climatology]", "auto.blend=true", *TINY_WEATHER,
                              run_dir=root / "auto")
    return run, root


def test_weather_blend_averages_the_two_best_candidates_and_ships_from_the_run_folder(weather_run: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blend's weight is the one with the best validation MAE, its raw forecast is that mix of the members' own raw
    forecasts (each with its own module terms), quantiles do not cross, its intervals are refitted on validation, and
    the shipped blend evaluates and exports from the auto folder."""
    from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint
    from sectorkit.domains.agriculture.weather.data import WeatherDataModule

    import sectorkit

    run, tmp_path = weather_run
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    assert list(run.candidates) == ["persistence", "climatology", "blend"] and all(c["state"] == "complete" for c in run.candidates.values())
    scores = {name: c["best_val"] for name, c in run.candidates.items()}
    # on AR(1) anomalies a mix of persistence and climatology (a damped anomaly) beats both
    assert run.chosen == min(scores, key=scores.get) == "blend"
    folder = Path(run.run_dir) / "candidates" / "blend"
    blend = json.loads((folder / "metrics.json").read_text())["blend"]
    assert blend["members"] == sorted(["persistence", "climatology"], key=scores.get)
    by_weight = {float(w): v for w, v in blend["validation"].items()}
    assert set(by_weight) == {0.25, 0.5, 0.75} and blend["weight"] == min(by_weight, key=by_weight.get)
    assert scores["blend"] == by_weight[blend["weight"]]

    members = [model_from_checkpoint(load_checkpoint(run.candidates[name]["checkpoint"])) for name in blend["members"]]
    shipped = model_from_checkpoint(load_checkpoint(folder / "checkpoints" / "best.ckpt"))
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 500, "phi": 0.8}, lookback=members[0].hparams.lookback)
    dm.setup("fit")
    batch = next(iter(torch.utils.data.DataLoader(dm.dataset("val"), batch_size=512)))
    with torch.no_grad():
        raw = [m.network_output(batch["past"], batch["future"], batch["series"]) for m in members]
        got = shipped.network_output(batch["past"], batch["future"], batch["series"])
        forecast = shipped(*shipped.batch_inputs(batch))
    w = blend["weight"]
    assert torch.allclose(got, w * raw[0] + (1 - w) * raw[1], atol=1e-5) and not torch.allclose(raw[0], raw[1])
    assert bool((forecast.diff(dim=-1) >= 0).all())  # non-crossing after calibration too
    assert not torch.equal(shipped.calibration, members[0].calibration) or not torch.equal(shipped.band, members[0].band)  # refitted

    model = sectorkit.load(run.run_dir)
    assert model.model_name == run.chosen
    assert model.evaluate().test == pytest.approx(run.test, rel=1e-6)
    assert model.export(tmp_path / "auto.onnx")["passed"]


@pytest.mark.slow
def test_the_shipped_weather_blend_predicts_from_the_run_folder(weather_run: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    from sectorkit.domains.agriculture.sample import synthetic_weather

    import sectorkit

    run, tmp_path = weather_run
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    table = sectorkit.load(run.run_dir).predict(synthetic_weather(n_series=2, n_days=500, phi=0.8).groupby("series_id").tail(80))
    assert len(table) == 2 * 7 and set(table["series_id"]) == {"station_0", "station_1"}
    assert bool((table["q0.1"] <= table["q0.5"]).all() and (table["q0.5"] <= table["q0.9"]).all())


def test_yield_auto_ships_the_best_validation_nrmse_among_trend_ridge_and_mlp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``experiment=yield model=auto``: the yield list (the trend and the ridge fitted in closed form, one epoch each);
    the trend network scores the test years exactly as the ``linear_trend`` baseline; a blend is refused."""
    from sectorkit.core.errors import ConfigError

    import sectorkit

    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    run = sectorkit.train("agriculture", "model=auto", "experiment=yield_quick", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
                          "trainer.enable_model_summary=false", run_dir=tmp_path / "auto")
    assert list(run.candidates) == ["yield_trend", "yield_ridge", "yield_mlp"] and all(c["state"] == "complete" for c in run.candidates.values())
    scores = {name: c["best_val"] for name, c in run.candidates.items()}
    assert run.chosen == min(scores, key=scores.get) and run.metrics["primary_metric"] == "nrmse"
    assert run.candidates["yield_trend"]["epochs"] == run.candidates["yield_ridge"]["epochs"] == 1
    assert run.candidates["yield_trend"]["test"]["nrmse"] == pytest.approx(run.metrics["baselines"]["linear_trend"]["nrmse"], rel=1e-5)
    assert run.metrics["test"] == run.candidates[run.chosen]["test"]
    with pytest.raises(ConfigError, match="names no auto.blend_network"):
        sectorkit.train("agriculture", "model=auto", "experiment=yield_quick", "auto.blend=true", run_dir=tmp_path / "refused")


def test_yield_ridge_recovers_a_planted_departure_from_the_trend() -> None:
    """The closed form: a departure from the trend that is linear in the features is recovered, and the penalty is
    the validation RMSE's choice."""
    from sectorkit.domains.agriculture.models.yield_classical import YieldRidge, YieldTrend

    rng = np.random.default_rng(0)
    x, trend = torch.as_tensor(rng.normal(size=(200, 3))), torch.as_tensor(rng.normal(size=200))
    y = trend + x @ torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64) + 0.2 + 0.01 * torch.as_tensor(rng.normal(size=200))
    net = YieldRidge(3, alphas=[1000.0, 0.01])
    net.fit((x[:150], trend[:150], y[:150]), (x[150:], trend[150:], y[150:]))
    assert float(net.alpha) == pytest.approx(0.01) and net.weight[:3].tolist() == pytest.approx([0.5, -1.0, 0.0], abs=0.01)
    assert torch.allclose(net(x[150:].float(), trend[150:].float()).double(), y[150:], atol=0.05)
    assert torch.equal(YieldTrend(3)(x.float(), trend.float()), trend.float())
