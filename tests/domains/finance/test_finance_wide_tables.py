"""Real tables: high-cardinality categoricals in the baselines and the model, the logistic regression on wide data
with missing values, bounded permutation importance, baselines.names, and a test window without fraud."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.metrics import average_precision_score

from sectorkit.core.errors import ConfigError
from sectorkit.core.reporting import RunContext
from sectorkit.domains.finance import DOMAIN, run_baselines
from sectorkit.domains.finance.baselines import baseline_names, cap_levels, fit_logistic_regression, fit_predict_baselines
from sectorkit.domains.finance.data import FraudDataModule
from sectorkit.domains.finance.module import FraudModule
from sectorkit.domains.finance.report import model_scores, permutation_importance

DAY = 86_400.0
MLP = "sectorkit.domains.finance.models.mlp.EmbeddingMLP"
COLUMNS = dict(time="when", amount="amt", label="fraud", card="card", terminal="shop", numeric=["x0", "x1", "x2"], categorical=["device"])


def _table(n: int = 6000, days: int = 40, levels: int = 300, seed: int = 0) -> pd.DataFrame:
    """Transactions with a 300-level Zipf categorical (levels 5-14 used by frauds) and three numeric columns, one
    informative, one informative only through whether it is missing."""
    rng = np.random.default_rng(seed)
    fraud = (rng.random(n) < 0.06).astype(int)
    weights = 1 / np.arange(1, levels + 1)
    device = rng.choice(levels, n, p=weights / weights.sum())
    risky = (fraud == 1) & (rng.random(n) < 0.5)
    device[risky] = rng.integers(5, 15, int(risky.sum()))
    x1 = rng.normal(size=n)
    x1[rng.random(n) < np.where(fraud == 1, 0.7, 0.1)] = np.nan  # missing mostly for frauds
    return pd.DataFrame({
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, days * DAY, n)), unit="s"),
        "amt": rng.gamma(2, 30, n).round(2), "fraud": fraud, "card": rng.integers(0, 500, n), "shop": rng.integers(0, 80, n),
        "x0": rng.normal(size=n) + 1.5 * fraud, "x1": x1, "x2": rng.normal(size=n), "device": np.char.add("d", device.astype(str)),
    })


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> FraudDataModule:
    path = tmp_path_factory.mktemp("wide") / "tx.parquet"
    _table().to_parquet(path, index=False)
    dm = FraudDataModule(str(path), columns=COLUMNS, split=dict(train_days=14, delay_days=2, test_days=7, valid_days=7), max_levels=100,
                         min_level_count=3)
    dm.setup("fit")
    return dm


def test_vocabulary_is_frequency_capped_and_rare_levels_share_the_unseen_code(wide) -> None:
    vocab = wide.fitted["vocab"]["device"]
    train = wide.tables["train"]["device"]
    counts = train.value_counts()
    assert train.nunique() > 100 and len(vocab) == 100  # data.max_levels
    left_out = counts.drop(vocab)
    assert counts[vocab].min() >= max(left_out.max(), 3)  # the most frequent levels, each seen at least data.min_level_count times
    codes = wide.datasets["train"].tensors["categorical"][:, 0].numpy()
    assert codes.max() == 100 and (codes == 0).sum() == (~train.isin(vocab)).sum()
    assert wide.model_kwargs()["cardinalities"] == [101]


def test_cap_levels_keeps_the_most_frequent_codes() -> None:
    train = np.array([[5], [5], [5], [7], [7], [9], [11]])
    capped, (other,) = cap_levels(train, [np.array([[7], [9], [42]])], max_levels=3)
    assert capped[:, 0].tolist() == [1, 1, 1, 2, 2, 0, 0] and other[:, 0].tolist() == [2, 0, 0]


def test_three_hundred_levels_reach_the_gradient_boosting_baselines_and_the_model(tmp_path) -> None:
    path = tmp_path / "tx.csv"
    _table().to_csv(path, index=False)
    dm = FraudDataModule(str(path), columns=COLUMNS, split=dict(train_days=14, delay_days=2, test_days=7, valid_days=7), min_level_count=1)
    dm.setup("fit")
    assert len(dm.fitted["vocab"]["device"]) > 255  # more than HistGradientBoosting's 255 categories
    results = run_baselines(dm, OmegaConf.create({"baselines": {"names": None}, "model": {"top_k": 20, "fpr": 0.01}}))
    fraud_rate = float(dm.datasets["test"].tensors["target"].mean())
    assert set(results) == {"logistic_regression", "hist_gradient_boosting", "lightgbm"}
    assert all(r.metrics["ap"] > 2 * fraud_rate for r in results.values())
    module = FraudModule(**dm.model_kwargs(), net={"_target_": MLP, "hidden": [16]})
    out = module(*module.batch_inputs(next(iter(dm.test_dataloader()))))
    assert out.shape[1] == 2 and torch.isfinite(out).all()


def test_logistic_regression_learns_from_missingness_and_chooses_c_on_validation(caplog) -> None:
    rng = np.random.default_rng(1)

    def rows(n):
        y = (rng.random(n) < 0.1).astype(float)
        x = rng.normal(size=(n, 40))  # 39 noise columns
        x[rng.random(n) < np.where(y == 1, 0.8, 0.05), 0] = np.nan  # the signal is whether column 0 is missing
        return x, np.zeros((n, 0), np.int64), y

    train, valid, (xt, _, yt) = rows(400), rows(2000), rows(2000)
    with caplog.at_level(logging.DEBUG, logger="sectorkit.domains.finance.baselines"):
        scores = fit_logistic_regression(train, valid, xt, seed=0, params={"C_grid": [1e-3, 1e-2, 1e2]})
    assert average_precision_score(yt, scores) > 0.5  # chance is ~0.1: the missing-value indicator carries it
    chosen = float(caplog.text.split("C=")[1].split()[0])
    valid_ap = {c: average_precision_score(valid[2], fit_logistic_regression(train, None, valid[0], 0, {"C": c})) for c in (1e-3, 1e-2, 1e2)}
    assert valid_ap[chosen] >= max(valid_ap.values()) - 1e-3
    # without validation rows holding both classes: C = 1
    fixed = fit_logistic_regression(train, None, xt, 0, {"C": 1.0})
    np.testing.assert_allclose(fit_logistic_regression(train, (valid[0], valid[1], np.zeros(2000)), xt, 0, {"C_grid": [1e-3, 1e2]}), fixed)


def test_baseline_names_empty_means_none_and_null_means_all(wide) -> None:
    cfg = {"model": {"top_k": 20, "fpr": 0.01}}
    assert run_baselines(wide, OmegaConf.create({**cfg, "baselines": {"names": []}})) == {}
    assert baseline_names(None) == ["logistic_regression", "hist_gradient_boosting", "lightgbm"]
    assert set(run_baselines(wide, OmegaConf.create({**cfg, "baselines": {"names": ["hist_gradient_boosting"]}}))) == {"hist_gradient_boosting"}
    with pytest.raises(ConfigError, match=r"baselines\.names: unknown baseline\(s\) \['xgboost'\]"):
        baseline_names(["xgboost"])
    x = np.zeros((4, 1))
    assert fit_predict_baselines(x, np.zeros((4, 0)), np.array([0, 1, 0, 1]), x, np.zeros((4, 0)), names=[]) == {}


def test_permutation_importance_scores_only_the_screened_features(wide) -> None:
    tensors = wide.datasets["test"].tensors
    names = wide.fitted["numeric"]
    torch.manual_seed(0)
    module = FraudModule(**wide.model_kwargs(), net={"_target_": MLP, "hidden": [16]})
    x0 = names.index("x0")
    with torch.no_grad():  # a network whose score increases with x0 and reads nothing else (numeric inputs come first)
        first, last = module.net.net[0], module.net.net[-1]
        first.weight.zero_()
        first.weight[:, x0] = 1.0
        first.bias.zero_()
        last.weight.fill_(1.0)
    scores = model_scores(module, tensors)
    screened = dict(permutation_importance(module, tensors, scores, names, features=3, screen_rows=500))
    assert len(screened) == 3 and screened["x0"] > 0.05  # the screen keeps the one feature the network reads
    assert all(drop == 0 for name, drop in screened.items() if name != "x0")
    assert len(permutation_importance(module, tensors, scores, names, features=None, max_rows=500)) == len(names)


def test_a_test_window_without_fraud_reports_nan_and_says_why(tmp_path, caplog) -> None:
    table = _table(levels=20)
    table.loc[table["when"] >= pd.Timestamp("2024-02-03"), "fraud"] = 0
    path = tmp_path / "tx.csv"
    table.to_csv(path, index=False)
    dm = FraudDataModule(str(path), columns=COLUMNS, split=dict(train_days=14, delay_days=2, test_days=7, valid_days=7), batch_size=512)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert "the test split" in caplog.text and "holds no fraud" in caplog.text
    pl.seed_everything(0, verbose=False)
    module = FraudModule(**dm.model_kwargs(), net={"_target_": MLP, "hidden": [16]}, top_k=20)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    assert math.isfinite(trainer.callback_metrics["val/ap"])  # validation (with fraud) is unaffected
    test = {k.removeprefix("test/"): v for k, v in trainer.test(module, dm, verbose=False)[0].items()}
    assert math.isnan(test["ap"]) and math.isnan(test["auc"]) and math.isnan(test["recall_at_1pct_fpr"])
    baselines = run_baselines(dm, OmegaConf.create({"baselines": {"names": ["logistic_regression"]}, "model": {"top_k": 20, "fpr": 0.01}}))
    assert math.isnan(baselines["logistic_regression"].metrics["ap"]) and math.isnan(baselines["logistic_regression"].metrics["auc"])
    outputs = module.predict_loader(dm.test_dataloader())
    ctx = RunContext(tmp_path, OmegaConf.create({}), dm, module, {"test": test}, trainer, predictions=dm.predict_frame(outputs, "test"),
                     outputs=outputs, baselines=baselines)
    sections = DOMAIN.report(ctx)
    notes = sections[0].metrics["metric_notes"]
    assert sections[0].title == "Metrics that could not be computed" and "test" in notes and "valid" not in notes


def test_documented_baseline_importance_and_vocabulary_commands(wide) -> None:
    """The commands of docs/domains/finance.md that set baselines.*, importance.* or data.max_levels, composed and applied."""
    import shlex
    from pathlib import Path

    from sectorkit.core.config import compose_config
    from sectorkit.domains.finance.report import importance_settings

    doc = (Path(__file__).resolve().parents[3] / "docs" / "domains" / "finance.md").read_text()
    commands = [shlex.split(line.split("#")[0])[2:] for line in doc.splitlines()
                if line.startswith("sectorkit train") and any(k in line for k in ("baselines.", "importance.", "data.max_levels"))]
    assert len(commands) >= 5
    for overrides in commands:
        overrides = [o for o in overrides if not o.startswith(("domain=", "data.path="))]
        cfg = compose_config(DOMAIN, [*overrides, "data.path=x.csv" if "data=csv" in overrides else "paths.data_dir=/tmp", "paths.output_dir=/tmp/x"])
        if "data.max_levels=500" in overrides:
            assert instantiate(cfg.data).max_levels == 500 and instantiate(cfg.data).min_level_count == 20
            continue
        settings = importance_settings(cfg)
        assert settings["features"] is None if "importance.features=null" in overrides else settings["features"] == 15
        if any(o.startswith(("baselines.", "+baselines.")) for o in overrides):
            cfg.model.top_k = 20
            results = run_baselines(wide, cfg)
            expected = {"baselines.names=[]": set(), "baselines.names=[hist_gradient_boosting]": {"hist_gradient_boosting"}}
            assert set(results) == next((v for k, v in expected.items() if k in overrides), {"logistic_regression", "hist_gradient_boosting", "lightgbm"})


def test_lightgbm_splits_on_levels_beyond_the_capped_ones_and_stops_on_validation() -> None:
    """Fraud concentrated in 20 rare levels of a 600-level column: HistGradientBoosting sees most of them as one
    "other" code (255-level cap), LightGBM splits on each level."""
    rng = np.random.default_rng(3)
    risky = rng.choice(np.arange(300, 600), 20, replace=False)

    def rows(n):
        codes = np.where(rng.random(n) < 0.5, rng.integers(1, 200, n), rng.integers(200, 600, n))[:, None]
        y = (rng.random(n) < np.where(np.isin(codes[:, 0], risky), 0.5, 0.02)).astype(float)
        return rng.normal(size=(n, 3)), codes, y

    train, valid, (xt, ct, yt) = rows(30_000), rows(5_000), rows(5_000)
    scores = fit_predict_baselines(*train, xt, ct, names=["hist_gradient_boosting", "lightgbm"], valid=valid,
                                   params={"lightgbm": {"n_estimators": 300}})
    ap = {name: average_precision_score(yt, s) for name, s in scores.items()}
    assert ap["lightgbm"] > ap["hist_gradient_boosting"] + 0.1 and ap["lightgbm"] > 0.2
