"""The validation-only selection harness: it trains like the benchmark and scores in the data's units."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from benchmarks.agriculture import fit_weather  # noqa: E402
from benchmarks.agriculture_selection import (  # noqa: E402
    MODES,
    averaged_outputs,
    finetuned_on_station,
    cross_fitted_scores,
    summarise,
    validation_outputs,
)
from sectorkit.domains.agriculture.metrics import QUANTILES, pinball_loss  # noqa: E402


def test_cross_fitted_validation_scores_the_network_in_data_units(tmp_path):
    dm, best, fit_s = fit_weather(
        "gru", 0, 1, 1e-3, 28, tmp_path, stations=("synthetic",), calibrate=False, ensemble=1
    )
    outputs = validation_outputs(best, dm)
    scores = cross_fitted_scores(outputs)
    assert fit_s > 0 and set(scores) == set(dm.stats.series)

    # with calibrate=False the module's own forward is the raw network in data units: the same MAE, and the
    # cross-fitted "none" pinball is its pinball (up to the two halves' unequal sizes)
    batch = next(iter(torch.utils.data.DataLoader(dm.dataset("val"), batch_size=len(dm.dataset("val")))))
    preds = torch.cat(best.predict_loader(dm.val_dataloader()))
    for s, station in enumerate(dm.stats.series):
        rows = batch["series"] == s
        mae = (preds[rows][..., 1] - batch["target"][rows]).abs().mean().item()
        pinball = pinball_loss(preds[rows], batch["target"][rows], QUANTILES).mean().item()
        assert np.isclose(scores[station]["mae"], mae, rtol=1e-4)
        assert np.isclose(scores[station]["pinball"]["none"], pinball, rtol=2e-2)
        assert set(scores[station]["pinball"]) == set(MODES)
        # only the recentred variants move the median
        for mode in ("none", "learned", "band", "blend"):
            assert np.isclose(scores[station]["mae_of"][mode], scores[station]["mae_of"]["none"], rtol=1e-6)

    summary = summarise([scores, scores])
    station = dm.stats.series[0]
    assert summary[station]["mae"] == {"mean": round(scores[station]["mae"], 4), "std": 0.0}

    # a combination is aligned by origin: the same network twice, one copy shuffled, scores as the network alone
    shuffled = torch.randperm(len(outputs.origins), generator=torch.Generator().manual_seed(0))
    copy = type(outputs)(
        *(getattr(outputs, k)[shuffled] for k in ("z", "target", "series", "origins", "scale")),
        outputs.names,
        outputs.quantiles,
    )
    assert cross_fitted_scores(averaged_outputs([outputs, copy])) == scores


def test_finetuning_on_one_station_leaves_the_pooled_network_alone(tmp_path):
    dm, best, _ = fit_weather("gru", 0, 1, 1e-3, 28, tmp_path, stations=("synthetic",), calibrate=False, ensemble=1)
    before = validation_outputs(best, dm)
    station = dm.stats.series[0]
    tuned = finetuned_on_station(best, dm, station, 1e-3, 1, 0, tmp_path)
    after, again = validation_outputs(tuned, dm), validation_outputs(best, dm)
    assert torch.equal(again.z, before.z)  # the pooled network is copied, not trained in place
    assert not torch.allclose(after.z, before.z)  # the copy did train


def test_ridge_input_check_scores_the_baseline_ridge_and_its_variants():
    from benchmarks.agriculture_ridge_inputs import validation_mae
    from sectorkit.domains.agriculture.weather.baselines import point_forecasts
    from sectorkit.domains.agriculture.weather.data import WeatherDataModule

    dm = WeatherDataModule(stations=["synthetic"], lookback=28, optional_covariates=["wind"])
    dm.setup("fit")
    val = dm.origins["val"]
    ridge = point_forecasts(dm.panel, dm.origins, dm.horizon, stages=("val",))["ridge_ar"]["val"]
    error = np.abs(dm.panel.target[val[:, None] + np.arange(1, dm.horizon + 1)] - ridge)
    series = dm.panel.series_index[val]
    expected = {name: round(float(error[series == s].mean()), 4) for s, name in enumerate(dm.stats.series)}
    assert validation_mae(dm, []) == expected
    # a covariate no series has (all zero) changes nothing; a real one changes the fit
    assert validation_mae(dm, ["wind"]) == expected
    assert validation_mae(dm, ["tmin"]) != expected
