"""End to end from the Hydra configs: compose every preset, train the quick experiment with the core
trainer, baselines, report, weights-only checkpoint, predict on a new file, bad input through config."""

from __future__ import annotations

from dataclasses import asdict, fields
from inspect import signature
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint, restore_datamodule_state
from sectorkit.core.config import compose_config
from sectorkit.core.errors import DataError
from sectorkit.core.network import network_class
from sectorkit.core.pipeline import build_datamodule, build_model, run
from sectorkit.core.reporting import RunContext
from sectorkit.core.trainer import build_trainer
from sectorkit.domains.finance import DOMAIN, schemas
from sectorkit.domains.finance.data import SPLIT_DEFAULTS, FraudDataModule
from sectorkit.domains.finance.features import build_features
from sectorkit.domains.finance.module import FraudModule
from sectorkit.domains.finance.readers import ColumnSpec
from sectorkit.domains.finance.sample import SimulatorConfig, load_sample


@pytest.mark.parametrize("experiment", DOMAIN.options("experiment"))
def test_every_experiment_composes(experiment) -> None:
    cfg = compose_config(DOMAIN, [f"experiment={experiment}", "paths.output_dir=/tmp/x"])
    assert cfg.domain == "finance" and cfg.monitor.metric == "ap" and cfg.monitor.mode == "max"
    assert cfg.data._target_.endswith("FraudDataModule")


@pytest.mark.parametrize("data", DOMAIN.options("data"))
def test_every_data_preset_composes(data) -> None:
    cfg = compose_config(DOMAIN, [f"data={data}", "data.path=/tmp/none.csv", "paths.output_dir=/tmp/x", "paths.data_dir=/tmp/x"])
    dm = instantiate(cfg.data, network=network_class(cfg.model.net))
    assert dm.path is not None and dm.spec.time == cfg.data.columns.time and dm.spec.numeric == list(cfg.data.columns.numeric)


@pytest.mark.parametrize("model", [m for m in DOMAIN.options("model") if m != "auto"])  # model=auto: tests/core/test_auto.py
def test_every_model_config_builds(model) -> None:
    cfg = compose_config(DOMAIN, [f"model={model}", "paths.output_dir=/tmp/x"])
    module = instantiate(cfg.model, n_numeric=4, cardinalities=[3], feature_mean=[0.0] * 4, feature_std=[1.0] * 4,
                         bin_edges=[[-1.0, 0.0, 1.0]] * 4, optimizer=cfg.optimizer, _recursive_=False)
    out = module(torch.randn(5, 4), torch.zeros(5, 1, dtype=torch.long))
    network = network_class(cfg.model.net)
    members = module.net.members if cfg.model.ensemble > 1 else [module.net]
    assert out.shape == (5, 2) and module.network is network and all(type(m) is network for m in members)
    assert len(members) == cfg.model.ensemble and module.hparams.net["_target_"] == cfg.model.net._target_


def test_schema_defaults_are_the_python_defaults() -> None:
    """The typed configs repeat the defaults of the classes they configure: they must not drift apart."""
    assert asdict(schemas.SimulatorSection()) == asdict(SimulatorConfig())
    assert asdict(schemas.ColumnsSection()) == asdict(ColumnSpec())
    assert asdict(schemas.SplitSection()) == SPLIT_DEFAULTS
    features = {k: list(p.default) if isinstance(p.default, tuple) else p.default for k, p in signature(build_features).parameters.items() if k != "frame"}
    assert asdict(schemas.FeaturesSection()) == features
    for schema, cls in ((schemas.FraudDataConfig, FraudDataModule), (schemas.FraudModelConfig, FraudModule)):
        params = signature(cls).parameters
        simple = [f for f in fields(schema) if f.name in params and f.name not in ("columns", "simulator", "features", "split", "net")]
        assert len(simple) >= 10 and {f.name: f.default for f in simple} == {f.name: params[f.name].default for f in simple}


def _fit(tmp_path: Path, overrides: list[str] = ()):
    cfg = compose_config(DOMAIN, ["experiment=quick", f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path / 'cache'}", "~logger",
                           "callbacks.progress_bar=null", "callbacks.model_summary=null", "callbacks.early_stopping=null", *overrides])
    pl.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg, network_class(cfg.model.net))
    dm.setup("fit")
    model = build_model(cfg, dm)
    trainer = build_trainer(cfg, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(model, dm)
    test = {k.removeprefix("test/"): v for k, v in trainer.test(model, dm, ckpt_path="best", verbose=False)[0].items()}
    return cfg, dm, model, trainer, test


def test_quick_pipeline_baselines_report_checkpoint_predict(tmp_path) -> None:
    cfg, dm, model, trainer, test = _fit(tmp_path)
    baselines = DOMAIN.baselines(dm, cfg)
    assert set(baselines) == {"logistic_regression", "hist_gradient_boosting", "lightgbm"}
    assert set(test) == set(baselines["logistic_regression"].metrics) == {"ap", "auc", "cp_at_100", "recall_at_1pct_fpr"}
    fraud_rate = float(dm.datasets["test"].tensors["target"].mean())
    assert test["ap"] > 10 * fraud_rate and test["auc"] > 0.7
    # planted scenarios: the model beats at least one in-run baseline on the same test rows
    assert test["ap"] > min(b.metrics["ap"] for b in baselines.values())
    metrics = {"domain": "finance", "model_name": "mlp", "primary_metric": "ap", "mode": "max", "test": test,
               "baselines": {name: b.metrics for name, b in baselines.items()}}
    outputs = model.predict_loader(dm.test_dataloader())
    ctx = RunContext(tmp_path, cfg, dm, model, metrics, trainer, predictions=dm.predict_frame(outputs, "test"), outputs=outputs, baselines=baselines)
    sections = DOMAIN.report(ctx)
    assert len(sections) == 8 and all(Path(img).is_file() for s in sections for img in s.images)

    # weights-only checkpoint: threshold and preprocessing come back
    checkpoint = load_checkpoint(trainer.checkpoint_callback.best_model_path)
    restored = model_from_checkpoint(checkpoint)
    assert 0 < float(restored.threshold) < 1
    raw = load_sample(SimulatorConfig(**cfg.data.simulator), cfg.data.cache_dir)
    new = raw[raw["TX_TIME_DAYS"] >= 30].drop(columns=["TX_FRAUD", "TX_FRAUD_SCENARIO"])  # no labels at all
    path = tmp_path / "incoming.csv"
    new.to_csv(path, index=False)
    predict_dm = instantiate(cfg.data, path=str(path))
    restore_datamodule_state(predict_dm, checkpoint)
    assert predict_dm.fitted == dm.fitted
    predict_dm.setup("predict")
    table = predict_dm.predict_frame(pl.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu").predict(restored, predict_dm), "predict")
    assert len(table) == len(new) and table["id"].tolist() == sorted(new["TRANSACTION_ID"].tolist())
    assert table["score"].between(0, 1).all()
    assert (table["alert"] == (table["score"] >= float(restored.threshold))).all()

    # predict-time bad input names the file and column
    new.drop(columns=["TX_AMOUNT"]).to_csv(tmp_path / "bad.csv", index=False)
    bad = instantiate(cfg.data, path=str(tmp_path / "bad.csv"))
    restore_datamodule_state(bad, checkpoint)
    with pytest.raises(DataError, match=r"bad\.csv: missing column\(s\) \['TX_AMOUNT'\]"):
        bad.setup("predict")


@pytest.mark.parametrize("overrides", [["model=ft_transformer", "model.net.n_layers=1", "trainer.max_epochs=1"], ["model=autoencoder", "trainer.max_epochs=3"],
                                       ["model.loss=focal", "data.sampler=balanced", "model.threshold_policy=cost", "trainer.max_epochs=3"]])
def test_other_models_and_imbalance_options_run(tmp_path, overrides) -> None:
    _, dm, model, _, test = _fit(tmp_path, overrides)
    assert np.isfinite(test["ap"]) and test["auc"] > 0.5
    # bin edges are fitted only for a network that reads them (the MLP), never paired by hand
    assert (dm.fitted["bin_edges"] is not None) == model.network.uses_bin_edges


def test_user_csv_through_config(tmp_path) -> None:
    raw = load_sample(SimulatorConfig(n_customers=300, n_terminals=600, n_days=45, n_compromised_terminals=1, n_compromised_customers=1), tmp_path)
    user = pd.DataFrame({"ts": raw["TX_TIME_SECONDS"], "value": raw["TX_AMOUNT"], "is_fraud": raw["TX_FRAUD"], "card_id": raw["CUSTOMER_ID"].astype(str),
                         "shop": raw["TERMINAL_ID"], "channel": np.where(raw["TRANSACTION_ID"] % 3 == 0, "web", "pos")})
    path = tmp_path / "user.csv"
    user.to_csv(path, index=False)
    cols = ["data.columns.time=ts", "data.columns.time_unit=seconds", "data.columns.amount=value", "data.columns.label=is_fraud",
            "data.columns.card=card_id", "data.columns.terminal=shop", "data.columns.categorical=[channel]"]
    _, dm, _, _, test = _fit(tmp_path, ["data=csv", f"data.path={path}", *cols])
    assert dm.fitted["vocab"] == {"channel": ["pos", "web"]} and test["auc"] > 0.6
    with pytest.raises(DataError, match=r"user\.csv: missing column\(s\) \['amount'\]"):
        _fit(tmp_path, ["data=csv", f"data.path={path}", *cols, "data.columns.amount=amount"])


def test_train_and_predict_runs_hand_over_baselines_and_plots(tmp_path, quick_run) -> None:
    """The core runs: baselines fitted once and reported, the report drawn from the run's predictions, and the
    predict run's figure beside its output file. The training run is the quick experiment's (``sectorkit train
    domain=finance experiment=quick``, shared by the session's tests of a trained built-in model)."""
    trained = quick_run("finance")
    common = [f"paths.data_dir={trained.root / 'data_cache'}", "~logger", "callbacks.progress_bar=null", "callbacks.model_summary=null",
              "runtime.torch_threads=1"]
    metrics = trained.metrics
    train_dir = Path(metrics["run_dir"])
    assert set(metrics["baselines"]) == {"logistic_regression", "hist_gradient_boosting", "lightgbm"} and "failures" not in metrics
    report = Path(metrics["report"]).read_text()
    assert "ROC and precision-recall" in report and "chosen on the validation window" in report
    assert (train_dir / "plots" / "roc_pr.png").is_file()
    for plot in ("threshold_curves.png", "cost_curve.png", "calibration.png", "roc_low_fpr.png"):
        assert (train_dir / "plots" / plot).is_file() and f"(plots/{plot})" in report
    predictions = pd.read_csv(metrics["predictions"])  # the Data section states the test window the predictions cover
    test = metrics["data"]["splits"]["test"]
    assert test["transactions"] == len(predictions) and test["frauds"] == int(predictions["label"].sum())
    assert f"| test | {len(predictions)} | {test['from']} | {test['to']} |" in report and "## Data" in report
    assert set(metrics["breakdowns"]) >= {"at_threshold", "cost", "calibration", "recall_at_fpr"}
    output = tmp_path / "scores.csv"
    run(compose_config(DOMAIN, ["task=predict", "experiment=quick", f"ckpt_path={metrics['checkpoint']}", f"output={output}",
                                f"paths.output_dir={tmp_path / 'predict'}", *common]))
    assert len(pd.read_csv(output)) == len(pd.read_csv(metrics["predictions"]))  # the built-in sample's test window
    assert (tmp_path / "scores_plots" / "score_distributions.png").stat().st_size > 1000
