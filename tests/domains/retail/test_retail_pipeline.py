"""The retail domain end to end from its Hydra configs: train, test, baselines, report, checkpoint, predict."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from sectorkit.core.config import compose_config
from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint, restore_datamodule_state
from sectorkit.core.errors import DataError
from sectorkit.core.reporting import RunContext
from sectorkit.core.trainer import build_trainer
from sectorkit.domains.retail import DOMAIN


@pytest.mark.parametrize("experiment", DOMAIN.options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_config(DOMAIN, [f"experiment={experiment}", "data.path=/tmp/x.inter"])
    assert cfg.monitor.metric == "ndcg@10" and cfg.model._target_.endswith("RecommenderModule")


def _fit(tmp_path: Path, overrides: list[str], experiment: str = "quick"):
    cfg = compose_config(DOMAIN, [f"experiment={experiment}", f"paths.output_dir={tmp_path}", "~logger", "callbacks.progress_bar=null", "callbacks.model_summary=null", *overrides])
    torch.manual_seed(0)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    model = instantiate(cfg.model, **dm.model_kwargs(), optimizer=cfg.optimizer, _recursive_=False)
    trainer = build_trainer(cfg, enable_progress_bar=False)
    trainer.fit(model, dm)
    test = {k.removeprefix("test/"): v for k, v in trainer.test(model, dm, ckpt_path="best", verbose=False)[0].items()}
    return cfg, dm, model, trainer, test


def test_quick_experiment_trains_beats_mostpop_reports_and_predicts(tmp_path):
    cfg, dm, model, trainer, test = _fit(tmp_path, [])
    baselines = DOMAIN.baselines(dm, cfg)
    assert set(baselines) == {"mostpop", "itemknn", "ease"} and set(baselines["ease"]) == set(test)
    assert test["ndcg@10"] > baselines["mostpop"]["ndcg@10"]
    metrics = {"domain": "retail", "model_name": "bpr", "primary_metric": "ndcg@10", "mode": "max", "test": test, "baselines": baselines}
    sections = DOMAIN.report(RunContext(tmp_path, cfg, dm, model, metrics, trainer))
    assert [s.title for s in sections][:3] == ["Metrics vs K (model vs baselines)", "Per-user NDCG distribution", "Popularity of recommended items"]
    assert all(Path(img).is_file() for s in sections for img in s.images)

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


def pl_predict(model, datamodule):
    import pytorch_lightning as pl

    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return trainer.predict(model, datamodule=datamodule)


def test_sequential_experiment_runs_sasrec(tmp_path):
    _, dm, model, _, test = _fit(tmp_path, ["trainer.max_epochs=2", "data.sample.n_users=120", "data.sample.n_items=100"], "sequential")
    assert model.kind == "sequence" and 0.0 <= test["ndcg@10"] <= 1.0 and test["coverage@10"] > 0


def test_multvae_trains_on_user_batches_and_reloads_best_checkpoint(tmp_path):
    _, dm, model, _, test = _fit(tmp_path, ["model=multvae", "data.training=users", "data.batch_size=64", "trainer.max_epochs=3", "model.network_kwargs.hidden_sizes=[32]"])
    assert model.kind == "autoencoder" and model.net.rows.shape[0] == dm.n_users and 0.0 < test["ndcg@10"] <= 1.0


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
