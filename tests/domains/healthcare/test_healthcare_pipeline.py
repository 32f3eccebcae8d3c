"""End to end from the Hydra configs: train, test, baselines, report, checkpoint, predict on a folder, bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from hydra.utils import instantiate
from PIL import Image

from sectorkit.core.config import compose_config
from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint, restore_datamodule_state
from sectorkit.core.errors import DataError
from sectorkit.core.reporting import RunContext
from sectorkit.core.trainer import build_trainer
from sectorkit.domains.healthcare import DOMAIN
from sectorkit.domains.healthcare.sample import make_phantoms

warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


@pytest.mark.parametrize("experiment", DOMAIN.options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_config(DOMAIN, [f"experiment={experiment}", "paths.output_dir=/tmp/x"])
    assert cfg.monitor.metric == "image_auroc" and cfg.monitor.mode == "max"
    assert cfg.model._target_.endswith("AnomalyDetector")


@pytest.mark.parametrize("model", DOMAIN.options("model"))
def test_every_model_config_builds(model):
    cfg = compose_config(DOMAIN, [f"model={model}", "paths.output_dir=/tmp/x"])
    module = instantiate(cfg.model, spatial_dims=2, in_channels=1, image_size=32, optimizer=cfg.optimizer, _recursive_=False)
    assert module.hparams.network == cfg.model.network


def _fit(tmp_path: Path, overrides: list[str] = ()):
    cfg = compose_config(DOMAIN, ["experiment=quick", f"paths.output_dir={tmp_path}", "~logger", "callbacks.progress_bar=null",
                              "callbacks.model_summary=null", "callbacks.early_stopping=null", *overrides])
    pl.seed_everything(0, verbose=False)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    model = instantiate(cfg.model, **dm.model_kwargs(), optimizer=cfg.optimizer, _recursive_=False)
    trainer = build_trainer(cfg, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(model, dm)
    test = {k.removeprefix("test/"): v for k, v in trainer.test(model, dm, ckpt_path="best", verbose=False)[0].items()}
    return cfg, dm, model, trainer, test


def _predict(model, datamodule):
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return trainer.predict(model, datamodule=datamodule)


def test_quick_pipeline_report_checkpoint_and_predict(tmp_path):
    cfg, dm, model, trainer, test = _fit(tmp_path)
    baselines = DOMAIN.baselines(dm, cfg)
    assert set(baselines) == {"knn", "pca"} and set(baselines["knn"]) == set(test)
    assert {"image_auroc", "pixel_auroc", "aupro", "dice", "image_ap", "image_f1_max"} <= set(test)
    metrics = {"domain": "healthcare", "model_name": cfg.model.network, "primary_metric": "image_auroc", "mode": "max", "test": test, "baselines": baselines}
    sections = DOMAIN.report(RunContext(tmp_path, cfg, dm, model, metrics, trainer))
    assert len(sections) == 3 and all(Path(img).is_file() for s in sections for img in s.images)

    # predict on a folder of PNGs with the best checkpoint: CSV rows + one heatmap per image, same decisions as in memory
    folder = tmp_path / "incoming"
    folder.mkdir()
    ph = make_phantoms(2, 3, size=40, seed=11)
    for i, img in enumerate(ph.images[:, 0]):
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"scan{i}.png")
    checkpoint = load_checkpoint(trainer.checkpoint_callback.best_model_path)
    restored = model_from_checkpoint(checkpoint)
    predict_dm = instantiate(cfg.data, path=str(folder), heatmap_dir=str(tmp_path / "heatmaps"))
    restore_datamodule_state(predict_dm, checkpoint)
    predict_dm.setup("predict")
    table = predict_dm.predict_frame(_predict(restored, predict_dm), "predict")
    assert table["name"].tolist() == [f"scan{i}.png" for i in range(5)]
    assert table["score"].between(0, 1).all() and (table["is_anomalous"] == (table["score"] >= 0.5)).all()
    assert all(Path(p).is_file() for p in table["heatmap"])

    # bad input at predict time: the corrupt file is named
    (folder / "scan9.png").write_bytes(b"garbage")
    bad = instantiate(cfg.data, path=str(folder))
    with pytest.raises(DataError, match=r"scan9\.png: cannot read"):
        bad.setup("predict")


def test_quick_volume_pipeline(tmp_path):
    cfg, dm, model, trainer, test = _fit(tmp_path, ["experiment=volume"])
    assert np.isfinite(test["image_auroc"]) and dm.arrays("test")[0].shape[2:] == (16, 16, 16)
