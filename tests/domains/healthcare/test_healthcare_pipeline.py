"""End to end from the Hydra configs: typed configs, train → test → baselines → report, predict from the best
checkpoint on a folder (table + heatmaps beside it), bad input."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from sectorkit.core.config import compose_config, validate_overrides
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.network import Network, network_class
from sectorkit.core.pipeline import build_datamodule, build_model, run_predict, run_train
from sectorkit.core.schema import check_ranges
from sectorkit.core.trainer import build_trainer
from sectorkit.domains.healthcare import DOMAIN
from sectorkit.domains.healthcare.data import HealthcareDataModule
from sectorkit.domains.healthcare.report import heatmap_name
from sectorkit.domains.healthcare.sample import make_phantoms

warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


class IdentityNetwork(Network):
    """A network that is not a healthcare network."""


QUIET = ["~logger", "callbacks.progress_bar=null", "callbacks.model_summary=null", "runtime.torch_threads=1"]


@pytest.mark.parametrize("experiment", DOMAIN.options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_config(DOMAIN, [f"experiment={experiment}", "paths.output_dir=/tmp/x"])
    assert cfg.monitor.metric == "image_auroc" and cfg.monitor.mode == "max"
    assert cfg.model._target_.endswith("AnomalyDetector")


@pytest.mark.parametrize("model", DOMAIN.options("model"))
def test_every_model_config_builds(model):
    cfg = compose_config(DOMAIN, [f"model={model}", "paths.output_dir=/tmp/x"])
    module = instantiate(cfg.model, spatial_dims=2, in_channels=1, image_size=32, optimizer=cfg.optimizer, _recursive_=False)
    assert module.hparams.net == OmegaConf.to_container(cfg.model.net) and type(module.net) is network_class(cfg.model.net)


@pytest.mark.parametrize("override,message", [
    ("data.batch_sise=3", "unknown config key 'data.batch_sise'"),
    ("data.batch_size=abc", "data.batch_size=abc"),
    ("data.sample.n_tset=3", "unknown config key 'data.sample.n_tset'"),
    ("model.treshold=fpr", "unknown config key 'model.treshold'"),
    ("model.fpr=often", "model.fpr=often"),
    ("model.network=patchcore", "unknown config key 'model.network'"),
])
def test_typos_and_wrong_types_fail_when_the_config_is_composed(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_overrides(DOMAIN, ["data=folder", "data.path=/data", override])


@pytest.mark.parametrize("override,message", [
    ("model.fpr=0", "model.fpr=0.0: expected a value > 0 and <= 1"),
    ("model.top_fraction=2", "model.top_fraction=2.0: expected a value > 0 and <= 1"),
    ("data.spatial_dims=4", "data.spatial_dims=4: expected a value >= 2 and <= 3"),
    ("data.sample.n_train=0", "data.sample.n_train=0: expected a value >= 1"),
])
def test_values_out_of_range_fail_before_a_run(override, message):
    check_ranges(compose_config(DOMAIN, ["paths.output_dir=/tmp/x"]))
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_ranges(compose_config(DOMAIN, [override, "paths.output_dir=/tmp/x"]))


def test_a_network_of_another_domain_is_refused():
    with pytest.raises(ConfigError, match="model.net._target_: IdentityNetwork is not a healthcare network"):
        HealthcareDataModule(network=IdentityNetwork)


def _scans(folder: Path) -> list[str]:
    """Five phantom PNGs, two of them with the same file name in different class folders."""
    ph = make_phantoms(2, 3, size=40, seed=11)
    names = ["scan0.png", "scan1.png", "scan2.png", "test/good/img/0000.png", "test/Ungood/img/0000.png"]
    for name, image in zip(names, ph.images[:, 0], strict=True):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / name)
    return sorted(names, key=lambda n: Path(folder / n).parts)


def test_quick_train_report_checkpoint_and_predict(tmp_path):
    cfg = compose_config(DOMAIN, ["experiment=quick", f"paths.output_dir={tmp_path / 'run'}", *QUIET])
    run_train(cfg)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    assert {"image_auroc", "pixel_auroc", "aupro", "dice", "image_ap", "image_f1_max"} <= set(test)
    assert set(metrics["baselines"]) == {"knn", "pca"} and set(metrics["baselines"]["knn"]) == set(test)
    assert metrics["epochs"] == 1 and metrics["global_step"] > 0 and Path(metrics["checkpoint"]).is_file()  # a memory bank: one pass
    predictions = pd.read_csv(run / "predictions.csv")
    assert len(predictions) == cfg.data.sample.n_test and set(predictions.columns) == {"name", "score", "is_anomalous", "label"}
    report = (run / "report.md").read_text()
    assert "| image | best F1 on validation |" in report and "threshold_rule" in report
    for plot in ("heatmaps.png", "roc.png", "score_histogram.png", "primary_metric.png"):
        assert (run / "plots" / plot).is_file() and f"plots/{plot}" in report
    overlays = sorted((run / "plots" / "heatmaps").glob("*.png"))
    assert [p.name for p in overlays] == [Path(heatmap_name(i, n)).name for i, n in enumerate(predictions["name"])]

    # predict on a folder of PNGs with the best checkpoint: a table, and one heatmap per input beside it
    folder = tmp_path / "incoming"
    names = _scans(folder)
    output = tmp_path / "scored" / "scans.csv"
    run_predict(compose_config(DOMAIN, ["task=predict", f"ckpt_path={metrics['checkpoint']}", f"data.path={folder}", f"output={output}",
                                        f"paths.output_dir={tmp_path / 'predict'}", *QUIET]))
    table = pd.read_csv(output)
    assert table["name"].tolist() == names and set(table.columns) == {"name", "score", "is_anomalous"}
    assert table["score"].between(0, 1).all() and (table["is_anomalous"] == (table["score"] >= 0.5)).all()
    heatmaps = sorted((tmp_path / "scored" / "scans_plots" / "heatmaps").glob("*.png"))
    assert len(heatmaps) == len(names) and len({p.name for p in heatmaps}) == len(names)
    assert {p.name for p in heatmaps} == {Path(heatmap_name(i, n)).name for i, n in enumerate(names)}

    # bad input at predict time: the corrupt file is named
    (folder / "scan9.png").write_bytes(b"garbage")
    bad = instantiate(cfg.data, path=str(folder))
    with pytest.raises(DataError, match=r"scan9\.png: cannot read"):
        bad.setup("predict")


def test_heatmap_names_are_unique_per_input():
    names = ["test/good/img/0000.png", "test/Ungood/img/0000.png", "test/good/img/0000.dcm", "a b/x.nii.gz"]
    files = [heatmap_name(i, n) for i, n in enumerate(names)]
    assert len(set(files)) == len(files) and files[3] == "heatmaps/00003_a_b_x.png"


def test_quick_volume_pipeline(tmp_path):
    cfg = compose_config(DOMAIN, ["experiment=quick", "experiment=volume", f"paths.output_dir={tmp_path}", *QUIET, "callbacks.early_stopping=null"])
    pl.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg, network_class(cfg.model.net))
    dm.setup("fit")
    model = build_model(cfg, dm)
    trainer = build_trainer(cfg, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(model, dm)
    test = trainer.test(model, dm, ckpt_path="best", verbose=False)[0]
    assert np.isfinite(test["test/image_auroc"]) and dm.arrays("test")[0].shape[2:] == (16, 16, 16)
