"""Crop-yield protocols through the config: the folds, one model per fold in one fit, each test year predicted by
the fold that held it out, per-fold metrics in metrics.json and the report, evaluate and predict on a checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint, restore_datamodule_state
from sectorkit.core.config import compose_config
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.pipeline import build_datamodule, build_model, collect_predictions, train
from sectorkit.core.trainer import build_trainer
from sectorkit.domains.agriculture import DOMAIN
from sectorkit.domains.agriculture.crop_yield.baselines import trend_predictions
from sectorkit.domains.agriculture.crop_yield.data import YieldDataModule
from sectorkit.domains.agriculture.crop_yield.module import YieldRegressor
from sectorkit.domains.agriculture.crop_yield.protocols import leave_one_year_out, make_folds
from sectorkit.domains.agriculture.metrics import nrmse

YEARS = list(range(2000, 2012))
YIELD_NET = {"_target_": "sectorkit.domains.agriculture.models.yield_mlp.YieldMLP", "hidden": 8}


def test_folds_of_each_protocol():
    (last,) = make_folds(YEARS, "last_years", val_years=2, test_years=3)
    assert last.test_years == (2009, 2010, 2011) and last.val_years == (2007, 2008) and last.train_years[-1] == 2006
    expanding = make_folds(YEARS, "expanding_window", val_years=2, test_years=3)
    assert [f.test_years for f in expanding] == [(2009,), (2010,), (2011,)]
    for fold in expanding:  # each year predicted from the earlier years only, the two before it choose the epoch
        assert max(fold.history_years) < fold.test_years[0] and fold.val_years == tuple(range(fold.test_years[0] - 2, fold.test_years[0]))
    loyo = make_folds(YEARS, "leave_one_year_out", val_years=2, test_years=99)
    assert [f.test_years[0] for f in loyo] == YEARS  # every year tested once
    for fold in loyo:
        year = fold.test_years[0]
        assert year not in fold.history_years and len(fold.history_years) == len(YEARS) - 1
        assert set(fold.val_years).isdisjoint(fold.train_years) and len(fold.val_years) == 2
    assert loyo[-1].val_years == (2000, 2001)  # the years after the last year wrap round to the first ones
    # the benchmark's folds: no validation years, all the other (or earlier) years to fit on
    assert make_folds(YEARS, "leave_one_year_out", 0, 1)[3].train_years == tuple(y for y in YEARS if y != 2003)
    with pytest.raises(DataError, match=r"y\.csv: 12 years; data.protocol=expanding_window needs at least test_years \+ val_years \+ 3 = 13"):
        make_folds(YEARS, "expanding_window", val_years=3, test_years=7, source="y.csv")


def _table(tmp_path, years=YEARS, regions=4):
    """A yield table without weather: region level + trend + a covariate with a planted effect."""
    rng = np.random.default_rng(0)
    rows = [(f"r{r}", y) for r in range(regions) for y in years]
    frame = pd.DataFrame(rows, columns=["region", "year"])
    frame["fertiliser"] = rng.normal(0, 1, len(frame))
    frame["yield"] = 8 + frame["region"].str[1:].astype(int) + 0.1 * (frame["year"] - 2000) + frame["fertiliser"]
    frame["yield"] += rng.normal(0, 0.1, len(frame))
    path = tmp_path / "yields.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_leave_one_year_out_never_shows_a_fold_its_test_year(tmp_path):
    path, frame = _table(tmp_path)
    dm = YieldDataModule(path=str(path), covariates=["fertiliser"], protocol="leave_one_year_out", val_years=2)
    dm.setup("fit")
    assert len(dm.folds) == len(YEARS) and dm.model_kwargs()["folds"] == len(YEARS)
    test = dm.frames["test"]
    assert len(test) == len(frame) and (test["year"] - YEARS[0] == test["fold"]).all()  # fold k tests year k
    table = dm.frames["all"]
    for k, fold in enumerate(dm.folds):
        held_out = table["year"].isin(fold.test_years).to_numpy()
        for stage in ("train", "val"):  # no fold trains or validates on its own test year
            rows = dm.frames[stage]["year"].isin(fold.test_years).to_numpy()
            assert not dm.fold_inputs[stage]["mask"][rows, k].any()
        # the test rows' trend comes from the other years only
        expected = trend_predictions(table[~held_out], table[held_out])
        assert np.allclose(test.loc[test["fold"] == k, "trend"], expected)
    # standardisation per fold: fitted on that fold's training rows
    x = dm._raw_features(table[table["year"].isin(dm.folds[5].train_years)])
    assert np.allclose(dm.feature_mean[5], x.mean(0)) and not np.allclose(dm.feature_mean[5], dm.feature_mean[6])


def test_each_row_is_predicted_by_its_own_fold_and_an_unseen_season_by_all():
    module = YieldRegressor(net=YIELD_NET, n_features=3, y_mean=[1.0, 2.0, 3.0], y_std=[1.0, 2.0, 0.5], folds=3).eval()
    features, trend = torch.randn(5, 3, 3), torch.randn(5, 3)
    fold = torch.tensor([0, 1, 2, -1, 1])
    with torch.no_grad():
        each = module.fold_outputs(features, trend) * module.y_std + module.y_mean  # (B, K)
        got = module(features, trend, fold)
    assert torch.allclose(got[:3], each[torch.arange(3), fold[:3]]) and torch.allclose(got[4], each[4, 1])
    assert torch.allclose(got[3], each[3].mean())
    # each fold trains on its own rows only: a row masked out of fold 0 gives fold 0's network no gradient
    batch = {"features": features, "trend": trend, "target": torch.randn(5), "mask": torch.zeros(5, 3, dtype=torch.bool)}
    batch["mask"][:, 1:] = True
    module.train()
    module.training_loss(batch).backward()
    grads = [sum(p.grad.abs().sum() for p in member.parameters() if p.grad is not None) for member in module.net.members]
    assert grads[0] == 0 and grads[1] > 0 and grads[2] > 0


def _fit(tmp_path, overrides):
    cfg = compose_config(DOMAIN, ["experiment=yield", f"paths.output_dir={tmp_path}", "~logger", "callbacks.progress_bar=null",
                                  "callbacks.model_summary=null", *overrides])
    pl.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    model = build_model(cfg, dm)
    trainer = build_trainer(cfg, enable_progress_bar=False)
    trainer.fit(model, dm)
    tested = trainer.test(model, dm, ckpt_path="best", verbose=False)[0]
    return cfg, dm, model, trainer, {k.removeprefix("test/"): v for k, v in tested.items()}


def test_leave_one_year_out_run_writes_pooled_and_per_fold_metrics(tmp_path):
    """What ``sectorkit train domain=agriculture experiment=yield data.protocol=leave_one_year_out`` runs (the
    pipeline's train), a few epochs on the built-in sample: every year tested once by its own fold, baselines fitted
    per fold exactly as the benchmark's protocol fits them, pooled metrics in ``test`` and one entry per fold in
    ``breakdowns.test_by_fold``."""
    cfg = compose_config(DOMAIN, ["experiment=yield", "data.protocol=leave_one_year_out", "trainer.max_epochs=2",
                                  f"paths.output_dir={tmp_path}", "~logger", "callbacks.progress_bar=null",
                                  "callbacks.model_summary=null", "trainer.enable_progress_bar=false"])
    train(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert len(table) == 37 * 8 and sorted(table.groupby("year")["fold"].unique().str[0]) == list(range(37))
    assert np.isclose(written["test"]["nrmse"], nrmse(table["predicted_yield"], table["actual"]), rtol=1e-4)
    folds = written["breakdowns"]["test_by_fold"]
    assert [f["test_years"] for f in folds] == [[y] for y in range(1982, 2019)] and sum(f["n"] for f in folds) == len(table)
    one = table[table["fold"] == 7]
    assert np.isclose(folds[7]["model"]["nrmse"], nrmse(one["predicted_yield"], one["actual"]), rtol=1e-4)
    # the in-run baselines are the benchmark protocol's baselines (each fold fitted on all the other years)
    dm = YieldDataModule()
    frame = dm.load_tables()
    reference = leave_one_year_out(frame, dm.feature_names, epochs=1)
    for name in ("historical_average", "previous_year", "linear_trend"):
        assert np.isclose(written["baselines"][name]["nrmse"], nrmse(reference[name], reference["yield"]), rtol=1e-9)
        assert set(folds[0][name]) == {"nrmse", "rmse", "mae"}
    report = (tmp_path / "report.md").read_text()
    assert "## Yield: test metrics per fold" in report and "| 36 | 2018 | 8 |" in report and "mean over folds" in report
    # the Data section: every region-year is tested once, by the fold that held its year out
    assert f"| test | {len(table)} | 8 | 1982 | 2018 |" in report
    assert written["data"]["splits"]["test"]["mean yield"] == pytest.approx(table["actual"].mean(), abs=1e-3)
    assert written["data"]["facts"]["protocol"] == "leave_one_year_out, 37 fold(s)"

    # evaluate: the checkpoint's folds are rebuilt from the data and reproduce the run's test predictions; a
    # checkpoint of one protocol evaluated under another is refused, naming the option
    checkpoint = load_checkpoint(written["checkpoint"])
    rebuilt = model_from_checkpoint(checkpoint)
    assert len(rebuilt.net.members) == 37
    fresh = YieldDataModule(protocol="leave_one_year_out")
    restore_datamodule_state(fresh, checkpoint)
    fresh.setup("fit")
    _, again = collect_predictions(rebuilt, fresh, "test")
    assert np.allclose(again["predicted_yield"], table["predicted_yield"], atol=1e-4)
    other = YieldDataModule(protocol="last_years")
    restore_datamodule_state(other, checkpoint)
    with pytest.raises(ConfigError, match="data.protocol=last_years: the checkpoint was trained with data.protocol=leave_one_year_out"):
        other.setup("fit")


def test_expanding_window_predicts_a_new_season_with_every_fold(tmp_path):
    path, frame = _table(tmp_path)
    _, dm, model, _, _ = _fit(tmp_path, [f"data.path={path}", "data.covariates=[fertiliser]", "data.protocol=expanding_window",
                                                    "data.test_years=4", "data.val_years=2", "trainer.max_epochs=3", "model.net.hidden=8"])
    assert [f.test_years for f in dm.folds] == [(2008,), (2009,), (2010,), (2011,)]
    assert set(dm.frames["train"]["year"]) == set(range(2000, 2009))  # fold 2011 trains up to 2008, validates on 2009-10
    assert len(dm.frames["test"]) == 4 * 4 and dm.frames["test"]["fold"].tolist() == [0, 1, 2, 3] * 4
    # next season: rows with a blank yield, forecast by the mean of the four folds' networks
    future = frame[frame["year"] == 2011].assign(year=2012, **{"yield": np.nan})
    pd.concat([frame, future]).to_csv(tmp_path / "next.csv", index=False)
    later = YieldDataModule(path=str(tmp_path / "next.csv"), covariates=["fertiliser"], protocol="expanding_window")
    later.load_state_dict(dm.state_dict())
    later.setup("predict")
    batch = next(iter(later.predict_dataloader()))
    assert (batch["fold"] == -1).all() and batch["features"].shape[1] == 4
    model.eval()
    with torch.no_grad():
        got = model(*model.batch_inputs(batch))
        each = model.fold_outputs(batch["features"], batch["trend"]) * model.y_std + model.y_mean
    assert torch.allclose(got, each.mean(1)) and len(got) == 4
