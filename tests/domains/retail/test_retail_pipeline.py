"""The retail domain end to end from its Hydra configs: train, test, baselines, report, checkpoint, predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint, restore_datamodule_state
from sectorkit.core.config import compose_config, validate_overrides
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.pipeline import build_datamodule, build_model, collect_predictions
from sectorkit.core.reporting import RunContext, write_report
from sectorkit.core.trainer import build_trainer
from sectorkit.domains.retail import DOMAIN
from sectorkit.domains.retail.models.base import RecommenderNetwork
from sectorkit.domains.retail.readers import read_interactions
from sectorkit.domains.retail.report import per_user_ndcg, recommended_items
from sectorkit.domains.retail.sample import generate_interactions
from sectorkit.domains.retail.splits import recbole_split

BPRMF_TARGET = "sectorkit.domains.retail.models.bpr.BPRMF"


@pytest.mark.parametrize("experiment", DOMAIN.options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_config(DOMAIN, [f"experiment={experiment}", "data.path=/tmp/x.inter"])
    assert cfg.monitor.metric == ("mrr@10" if experiment == "recbole_ml100k" else "ndcg@10") and cfg.model._target_.endswith("RecommenderModule")


@pytest.mark.parametrize("model", [m for m in DOMAIN.options("model") if m != "auto"])  # model=auto: tests/core/test_auto.py
def test_every_model_config_builds_a_retail_network(model):
    cfg = compose_config(DOMAIN, [f"model={model}", "data.sample.n_users=40", "data.sample.n_items=30"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    assert issubclass(dm.network, RecommenderNetwork)
    assert isinstance(build_model(cfg, dm).net, dm.network)


def test_settings_chosen_for_a_model_live_in_its_config():
    default = compose_config(DOMAIN, [])
    assert (default.optimizer.lr, default.callbacks.early_stopping.patience, default.data.batch_size) == (0.001, 10, 2048)
    lightgcn = compose_config(DOMAIN, ["model=lightgcn"])
    assert (lightgcn.optimizer.lr, lightgcn.callbacks.early_stopping.patience) == (0.002, 50)
    multvae = compose_config(DOMAIN, ["model=multvae"])
    assert (multvae.data.batch_size, multvae.callbacks.early_stopping.patience) == (64, 50)
    assert compose_config(DOMAIN, ["model=lightgcn", "optimizer.lr=0.01"]).optimizer.lr == 0.01
    assert compose_config(DOMAIN, ["model=lightgcn", "experiment=quick"]).optimizer.lr == 0.01  # experiments come last
    ml100k = compose_config(DOMAIN, ["experiment=ml100k", "data.path=/tmp/x.inter"])
    assert (ml100k.data.batch_size, ml100k.callbacks.early_stopping.patience, ml100k.optimizer.lr) == (64, 50, 0.001)
    assert ml100k.model.net.hidden_sizes == [] and ml100k.model.net._target_.endswith("MultVAE")
    bpr = compose_config(DOMAIN, ["experiment=ml100k", "model=bpr", "data.path=/tmp/x.inter"])
    assert (bpr.data.batch_size, bpr.callbacks.early_stopping.patience) == (2048, 10)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_sise=3", "data.batch_sise"),
        ("data.batch_size=abc", "data.batch_size"),
        ("data.training=users", "data.training"),
        ("data.sample.n_user=10", "data.sample.n_user"),
        ("data.split.metod=ratio", "data.split.metod"),
        ("data.split.method=recbole data.split.order=temporal", None),
        ("data.split.method=recbol", "data.split.method"),
        ("data.segments.very_light_max=-1", "data.segments.very_light_max"),
        ("data.segments.quantile=[0.5]", "data.segments.quantile"),
        ("model.n_negatives=two", "model.n_negatives"),
        ("model.network=bpr", "model.network"),
        ("model=lightgcn", None),
        ("model=lightgcn model.net.n_layers=3", None),
        ("model=lightgcn model.n_negativs=2", "model.n_negativs"),
    ],
)
def test_config_typos_and_types_fail_at_compose_time(override, message):
    overrides = ["domain=retail", *override.split()]
    if message is None:
        validate_overrides(DOMAIN, overrides)
        return
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_overrides(DOMAIN, overrides)


def test_wrong_network_arguments_fail_naming_model_net():
    cfg = compose_config(DOMAIN, ["+model.net.hiden=3", "data.sample.n_users=40", "data.sample.n_items=30"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    # Hydra's instantiate wraps errors raised in a constructor
    with pytest.raises((ConfigError, InstantiationException), match=r"model\.net: cannot build BPRMF .*'hiden'"):
        build_model(cfg, dm)


def _fit(tmp_path: Path, overrides: list[str], experiment: str = "quick"):
    """Train and test as ``sectorkit train`` does: datamodule told the network class, model handed the training data."""
    cfg = compose_config(DOMAIN, [f"experiment={experiment}", f"paths.output_dir={tmp_path}", "~logger", "callbacks.progress_bar=null", "callbacks.model_summary=null", *overrides])
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    model = build_model(cfg, dm)
    trainer = build_trainer(cfg, enable_progress_bar=False)
    trainer.fit(model, dm)
    test = {k.removeprefix("test/"): v for k, v in trainer.test(model, dm, ckpt_path="best", verbose=False)[0].items()}
    return cfg, dm, model, trainer, test


def test_quick_experiment_trains_beats_mostpop_reports_and_predicts(tmp_path):
    # docs/domains/retail.md: experiment=quick with the activity segments set on the command line
    cfg, dm, model, trainer, test = _fit(tmp_path, ["data.segments.very_light_max=10", "data.segments.quantiles=[0.2,0.4,0.6,0.8]"])
    baselines = DOMAIN.baselines(dm, cfg)
    assert set(baselines) == {"mostpop", "itemknn", "ease"} and set(baselines["ease"].metrics) == set(test)
    assert test["ndcg@10"] > baselines["mostpop"].metrics["ndcg@10"]
    outputs, table = collect_predictions(model, dm, "test")
    assert baselines["ease"].predictions.shape == (table["user"].nunique(), max(cfg.metrics.ks))
    metrics = {"domain": "retail", "model_name": "bpr", "primary_metric": "ndcg@10", "mode": "max", "test": test,
               "baselines": {name: result.metrics for name, result in baselines.items()}}
    ctx = RunContext(tmp_path, cfg, dm, model, metrics, trainer, predictions=table, outputs=outputs, baselines=baselines)
    sections = DOMAIN.report(ctx)
    assert [s.title for s in sections][:3] == ["Metrics vs K (model vs baselines)", "Per-user NDCG distribution", "Popularity of recommended items"]
    assert all(Path(img).is_file() for s in sections for img in s.images)
    items, _ = recommended_items(outputs)  # the report reuses the test outputs: their per-user NDCG averages to the metric
    assert per_user_ndcg(items, dm, 10).mean() == pytest.approx(test["ndcg@10"], abs=1e-5)

    # metrics by user-activity segment, for the model and each baseline (metrics.json gets them as a breakdown)
    (segments,) = [s for s in sections if s.title == "Metrics by user activity"]
    rows = segments.metrics["user_activity_segments"]["segments"]
    assert [r["segment"] for r in rows] == ["very light", "Q1", "Q2", "Q3", "Q4", "Q5"] and rows[0]["train_interactions"] == "0-10"
    assert sum(r["users"] for r in rows) == table["user"].nunique() and rows[0]["users"] > 0
    for name, overall in {"model": test, **{n: r.metrics for n, r in baselines.items()}}.items():
        weighted = sum(r["users"] * r[name]["ndcg"] for r in rows if r["users"]) / sum(r["users"] for r in rows)
        assert weighted == pytest.approx(overall["ndcg@10"], abs=1e-5)  # segments partition the test users
    assert "| segment | training interactions | users | bpr (model) | mostpop | itemknn | ease |" in segments.body
    per_user = table.groupby("user")[["train_interactions", "segment"]].agg(set)  # the predictions carry them too
    assert (per_user["segment"].map(len) == 1).all() and {s for (s,) in per_user["segment"]} <= {r["segment"] for r in rows}
    train_counts = dm.lists["train"].lengths()
    assert all(per_user.loc[dm.user_ids[u], "train_interactions"] == {train_counts[u]} for u in dm.eval_dataset("test").users)
    activity = dm.test_segments().activity
    assert segments.images == [tmp_path / "plots" / "segments.png"] and segments.images[0].is_file()
    assert f"Cold users (no training interaction) among the test users: {int((activity == 0).sum())}" in segments.body

    # example top-K lists beside the histories: the lightest, median and heaviest test users, the model's own ranking
    (examples,) = [s for s in sections if s.title == "Example recommendations"]
    shown = examples.metrics["example_users"]
    assert [e["train_interactions"] for e in shown] == [activity.min(), int(np.sort(activity)[len(activity) // 2]), activity.max()]
    for example in shown:
        ranked = table[table.user == example["user"]].sort_values("rank")["item"].tolist()
        assert [name.split(": ")[0] for name in example["top"]] == ranked[:10]
        assert f"| {example['user']} | {example['train_interactions']} |" in examples.body
        assert examples.body.count("**") >= 2 * example["hits"]

    # the data the run used, in report.md: sizes and time range of each split, users, items
    summary = dm.data_summary()
    assert summary["facts"]["users"] == dm.n_users and summary["facts"]["items"] == dm.n_items
    report = write_report(ctx, sections).read_text()
    for name in ("train", "valid", "test"):
        part = getattr(dm.prepared, name)
        first = str(pd.Timestamp(part["timestamp"].min(), unit="s").date())
        assert f"| {name} | {len(part)} | {part['user'].nunique()} | {part['item'].nunique()} | {first} |" in report
    assert "plots/segments.png" in report and "## Example recommendations" in report and f"- users: {dm.n_users}" in report

    # checkpoint holds only tensors and plain containers; predict on a file restores the id maps
    checkpoint = load_checkpoint(trainer.checkpoint_callback.best_model_path)
    restored = model_from_checkpoint(checkpoint)
    known = dm.user_ids[0]
    seen = set(dm.lists["train"].items[dm.lists["train"].indptr[0] : dm.lists["train"].indptr[1]].tolist())
    requests = tmp_path / "who.csv"
    pd.DataFrame({"user_id": [known, "newcomer"]}).to_csv(requests, index=False)
    predict_dm = instantiate(cfg.data, path=str(requests))
    restore_datamodule_state(predict_dm, {type(predict_dm).__qualname__: dm.state_dict()})
    outputs = pl_predict(restored, predict_dm)
    table = predict_dm.predict_frame(outputs, "predict")
    assert table.groupby("user").size().to_dict() == {known: 10, "newcomer": 10}
    assert (table[table.user == "newcomer"]["source"] == "popularity").all() and (table[table.user == known]["source"] == "model").all()
    assert not {dm.item_ids.index(i) for i in table[table.user == known]["item"]} & seen

    # after predict the report draws the popularity of the recommendations beside the predictions file
    plots = tmp_path / "who_plots"
    ctx = RunContext(tmp_path, cfg, predict_dm, restored, {}, stage="predict", predictions=table, outputs=outputs, plots_dir=plots)
    assert [s.title for s in DOMAIN.report(ctx)] == ["Popularity of recommended items"] and (plots / "popularity.png").is_file()


@pytest.mark.parametrize("model", ["lightgcn", "multvae"])
def test_graph_models_score_the_same_after_loading_the_checkpoint(tmp_path, model):
    small = ["trainer.max_epochs=2", "data.sample.n_users=120", "data.sample.n_items=100"]
    _, dm, trained, trainer, _ = _fit(tmp_path, [f"model={model}", *small])
    restored = model_from_checkpoint(load_checkpoint(trainer.checkpoint_callback.best_model_path))
    batch = next(iter(dm.test_dataloader()))
    trained.load_state_dict(restored.state_dict())
    trained.eval()
    with torch.no_grad():
        assert torch.allclose(restored(*restored.batch_inputs(batch)), trained(*trained.batch_inputs(batch)), atol=1e-5)


def pl_predict(model, datamodule):
    import pytorch_lightning as pl

    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return trainer.predict(model, datamodule=datamodule)


def test_sequential_experiment_runs_sasrec(tmp_path):
    _, dm, model, _, test = _fit(tmp_path, ["trainer.max_epochs=2", "data.sample.n_users=120", "data.sample.n_items=100"], "sequential")
    assert model.net.input_type == "sequence" and dm.network is type(model.net) and 0.0 <= test["ndcg@10"] <= 1.0 and test["coverage@10"] > 0


def test_multvae_trains_on_user_batches_and_reloads_best_checkpoint(tmp_path):
    _, dm, model, _, test = _fit(tmp_path, ["model=multvae", "trainer.max_epochs=3", "model.net.hidden_sizes=[32]"])
    assert set(next(iter(dm.train_dataloader()))) == {"users"}  # user batches, chosen by the network
    assert model.net.input_type == "user_vector" and model.net.rows.shape[0] == dm.n_users and 0.0 < test["ndcg@10"] <= 1.0


def test_predict_with_interactions_and_bad_files(tmp_path):
    cfg, dm, model, trainer, _ = _fit(tmp_path, ["trainer.max_epochs=1"])
    user = dm.user_ids[1]
    extra_items = dm.item_ids[:5]
    log = tmp_path / "log.csv"
    pd.DataFrame({"user_id": [user] * 5 + ["stranger"], "item_id": extra_items + ["not-an-item"], "timestamp": range(6)}).to_csv(log, index=False)
    predict_dm = instantiate(cfg.data, path=str(log))
    predict_dm.load_state_dict(dm.state_dict())
    table = predict_dm.predict_frame(pl_predict(model, predict_dm), "predict")
    assert not set(table[table.user == user]["item"]) & set(extra_items)
    assert (table[table.user == "stranger"]["source"] == "popularity").all()
    everyone = instantiate(cfg.data)  # no data.path: recommend for every known user
    everyone.load_state_dict(dm.state_dict())
    table = everyone.predict_frame(pl_predict(model, everyone), "predict")
    assert table["user"].nunique() == dm.n_users and (table["source"] == "model").all()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    bad_dm = instantiate(cfg.data, path=str(empty))
    bad_dm.load_state_dict(dm.state_dict())
    with pytest.raises(DataError, match="empty"):
        bad_dm.predict_dataloader()
    with pytest.raises(DataError, match="no id maps"):
        instantiate(cfg.data, path=str(log)).predict_dataloader()


def test_recbole_protocol_command_runs_on_an_inter_file(tmp_path):
    """docs/domains/retail.md: sectorkit train domain=retail experiment=recbole_ml100k data.path=.../ml-100k.inter"""
    frame = generate_interactions(n_users=80, n_items=60, seed=0)
    inter = tmp_path / "ml-100k.inter"
    frame.to_csv(inter, sep="\t", index=False, header=["user_id:token", "item_id:token", "rating:float", "timestamp:float"])
    cfg, dm, _, _, test = _fit(tmp_path, [f"data.path={inter}", "trainer.max_epochs=2"], "recbole_ml100k")
    assert (cfg.data.split.method, cfg.seed, cfg.monitor.metric, cfg.model.net._target_) == ("recbole", 2020, "mrr@10", BPRMF_TARGET)
    assert 0.0 <= test["mrr@10"] <= 1.0
    raw = read_interactions(inter)  # RecBole's RO split of the file's rows with seed 2020, user by user
    labels = recbole_split(pd.DataFrame({"user": pd.factorize(raw["user"])[0], "timestamp": raw["timestamp"]}), [0.8, 0.1, 0.1], "random", 2020)
    expected = set(zip(raw["user"][labels == 2], raw["item"][labels == 2]))
    assert {(dm.user_ids[u], dm.item_ids[i]) for u, i in zip(dm.prepared.test["user"], dm.prepared.test["item"])} == expected
