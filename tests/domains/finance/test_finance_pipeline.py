"""Data module + module + baselines + report on the tiny simulator, and predict on a new file."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from sectorkit.core.reporting import RunContext
from sectorkit.domains.finance import DOMAIN, run_baselines
from sectorkit.domains.finance import baselines as finance_baselines
from sectorkit.domains.finance.data import FraudDataModule
from sectorkit.domains.finance.module import FraudModule
from sectorkit.domains.finance.sample import SimulatorConfig, load_sample

TINY = dict(n_customers=400, n_terminals=800, n_days=50, n_compromised_terminals=1, n_compromised_customers=1)
MLP = "sectorkit.domains.finance.models.mlp.EmbeddingMLP"
BASELINES_CFG = OmegaConf.create({"baselines": {"names": ["logistic_regression", "hist_gradient_boosting"]}, "model": {"top_k": 20, "fpr": 0.01}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    dm = FraudDataModule(simulator=TINY, split=dict(train_days=14), features=dict(amount_ratios=True), cache_dir=str(cache), batch_size=256)
    dm.setup("fit")
    pl.seed_everything(0, verbose=False)
    module = FraudModule(**dm.model_kwargs(), net={"_target_": MLP, "hidden": [64, 32]}, top_k=20)
    trainer = pl.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    metrics = trainer.test(module, dm, verbose=False)[0]
    return dm, module, trainer, metrics, cache


def test_model_and_baselines_share_metric_names_and_model_learns(trained) -> None:
    dm, module, _, metrics, _ = trained
    baselines = run_baselines(dm, BASELINES_CFG)
    model = {k.removeprefix("test/"): v for k, v in metrics.items()}
    assert set(baselines) == {"logistic_regression", "hist_gradient_boosting"}
    for result in baselines.values():
        assert set(result.metrics) == set(model) == {"ap", "auc", "cp_at_20", "recall_at_1pct_fpr"}
        assert result.predictions.shape == (len(dm.datasets["test"]),)  # test-split scores, row-aligned with the model's
    fraud_rate = float(dm.datasets["test"].tensors["target"].mean())
    assert model["ap"] > 3 * fraud_rate  # far above chance on the planted scenarios
    assert model["auc"] > 0.75
    assert 0.0 < float(module.threshold) < 1.0  # chosen on validation, not the 0.5 default


def test_report_sections(trained, tmp_path, monkeypatch) -> None:
    dm, module, trainer, metrics, _ = trained
    baselines = run_baselines(dm, BASELINES_CFG)
    outputs = module.predict_loader(dm.test_dataloader())
    ctx = RunContext(run_dir=tmp_path, cfg=OmegaConf.create({}), datamodule=dm, module=module, metrics={"test": metrics}, trainer=trainer,
                     predictions=dm.predict_frame(outputs, "test"), outputs=outputs, baselines=baselines)
    def refit(*args, **kwargs):
        raise AssertionError("the report refitted a baseline")

    monkeypatch.setattr(finance_baselines, "fit_predict_baselines", refit)  # the report draws the run's baselines
    sections = DOMAIN.report(ctx)
    titles = [s.title for s in sections]
    assert any("ROC" in t for t in titles) and any("Confusion" in t for t in titles) and any("Permutation" in t for t in titles)
    for s in sections:
        for image in s.images:
            assert image.is_file() and image.stat().st_size > 1000
    importance = next(s for s in sections if "Permutation" in s.title).body
    assert "terminal_risk" in importance
    confusion = next(s for s in sections if "Confusion" in s.title).body
    assert module.threshold_rule in confusion and module.threshold_rule == "best F1 on validation"

    # what a fraud team reads: the operating point, its cost, calibration and the low-FPR part of the ROC
    table = ctx.predictions
    y, alert = table["label"].to_numpy().astype(int), table["alert"].to_numpy()
    tp, fp, fn = int((alert & (y == 1)).sum()), int((alert & (y == 0)).sum()), int((~alert & (y == 1)).sum())
    by_title = {s.title: s for s in sections}
    for title, plot in (("Precision, recall and alert volume against the threshold", "threshold_curves.png"), ("Cost curve", "cost_curve.png"),
                        ("Calibration (reliability)", "calibration.png"), ("ROC at low false-positive rates (up to 5%)", "roc_low_fpr.png")):
        assert by_title[title].images == [tmp_path / "plots" / plot]
    at = by_title["Precision, recall and alert volume against the threshold"].metrics["at_threshold"]
    assert at["alerts"] == tp + fp and at["recall"] == pytest.approx(tp / (tp + fn)) and at["precision"] == pytest.approx(tp / max(tp + fp, 1))
    cost = by_title["Cost curve"].metrics["cost"]
    hp = module.hparams
    assert cost["cost"] == pytest.approx(hp.cost_missed_fraud * fn + hp.cost_alert * (tp + fp)) and cost["best_cost"] <= cost["cost"]
    assert f"{cost['cost']:,.0f}" in by_title["Cost curve"].body
    calibration = by_title["Calibration (reliability)"].metrics["calibration"]
    assert set(calibration) == {"model", *baselines} and all(0 <= v["ece"] <= 1 and 0 <= v["brier"] <= 1 for v in calibration.values())
    recall_at = by_title["ROC at low false-positive rates (up to 5%)"].metrics["recall_at_fpr"]
    for values in recall_at.values():
        assert list(values.values()) == sorted(values.values()) and all(0 <= v <= 1 for v in values.values())
    assert f"| model | {recall_at['model']['0.001']:.3f} |" in by_title["ROC at low false-positive rates (up to 5%)"].body

    # the data the run used: sizes, time range and fraud rate of each split, as in the data module's tables
    summary = dm.data_summary()
    assert list(summary["splits"]) == list(dm.tables)
    for name, facts in summary["splits"].items():
        part = dm.tables[name]
        assert facts["transactions"] == len(part) and facts["frauds"] == int(part["label"].sum())
        assert facts["from"] == str(part["datetime"].min().floor("s")) and facts["fraud rate"] == f"{part['label'].mean():.3%}"


def test_report_after_predict_draws_into_the_plots_folder(trained, tmp_path) -> None:
    dm, module, *_ = trained
    outputs = module.predict_loader(dm.predict_dataloader())
    table = dm.predict_frame(outputs, "predict")
    plots = tmp_path / "scores_plots"
    ctx = RunContext(tmp_path, OmegaConf.create({}), dm, module, {}, stage="predict", predictions=table, outputs=outputs, plots_dir=plots)
    (section,) = DOMAIN.report(ctx)
    assert section.images == [plots / "score_distributions.png"] and section.images[0].stat().st_size > 1000
    assert f"{int(table['alert'].sum())} alerts" in section.body


def test_predict_on_a_new_file_reuses_training_state(trained, tmp_path) -> None:
    dm, module, _, _, cache = trained
    raw = load_sample(SimulatorConfig(**TINY), cache)
    new = raw[raw["TX_TIME_DAYS"] >= 20].drop(columns=["TX_FRAUD_SCENARIO"])
    new.loc[new["TX_TIME_DAYS"] >= 40, "TX_FRAUD"] = np.nan  # labels not yet known for the recent rows
    path = tmp_path / "new.parquet"
    new.to_parquet(path, index=False)
    fresh = FraudDataModule(str(path), simulator=TINY, features=dict(amount_ratios=True))
    fresh.load_state_dict(dm.state_dict())
    fresh.setup("predict")
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    out = fresh.predict_frame(trainer.predict(module, fresh), "predict")
    assert len(out) == len(new)
    assert {"id", "score", "alert", "card", "terminal"} <= set(out.columns)
    assert out["score"].between(0, 1).all()
    assert (out["alert"] == (out["score"] >= float(module.threshold))).all()
    assert out["id"].is_unique


def test_balanced_sampler_and_auto_pos_weight(trained) -> None:
    dm, *_ = trained
    balanced = FraudDataModule(simulator=TINY, split=dict(train_days=14), sampler="balanced", cache_dir=str(trained[4]), batch_size=512)
    balanced.setup("fit")
    share = float(torch.cat([b["target"] for b in balanced.train_dataloader()]).mean())
    assert 0.4 < share < 0.6  # vs a few % frauds in the training window
    assert float(dm.datasets["train"].tensors["target"].mean()) < 0.1
    module = FraudModule(**balanced.model_kwargs(), net={"_target_": MLP}, pos_weight="auto")
    assert module.pos_weight == pytest.approx(balanced.fitted["class_ratio"]) and module.pos_weight > 10
