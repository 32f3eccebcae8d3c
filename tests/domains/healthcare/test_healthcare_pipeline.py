"""End to end from the Hydra configs: typed configs, train → test → baselines → report, predict from the best
checkpoint on a folder through the command line (table + capped heatmaps beside it), normal-only validation,
bad input."""

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
from sectorkit.core.pipeline import build_datamodule, build_model, run_train
from sectorkit.core.reporting import RunContext, write_report
from sectorkit.core.schema import check_ranges
from sectorkit.core.trainer import build_trainer
from sectorkit.domains.healthcare import DOMAIN
from sectorkit.domains.healthcare import report as healthcare_report
from sectorkit.domains.healthcare.data import HealthcareDataModule
from sectorkit.domains.healthcare.report import heatmap_name, localisation_section, localisation_warnings
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


@pytest.mark.parametrize("model", [m for m in DOMAIN.options("model") if m != "auto"])  # model=auto: tests/core/test_auto.py
def test_every_model_config_builds(model):
    cfg = compose_config(DOMAIN, [f"model={model}", "paths.output_dir=/tmp/x"])
    if "/" in str(cfg.model.net.get("backbone", "")):  # hub weights are not downloaded in tests: test_pretrained.py builds these from local folders
        pytest.skip(f"model={model} loads {cfg.model.net.backbone} from the Hugging Face hub")
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
    ("data.max_heatmaps=-1", "data.max_heatmaps=-1: expected a value >= 0"),
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


def test_quick_train_report_checkpoint_and_predict(tmp_path, quick_run, cli_in_process):
    """The quick experiment's run (``sectorkit train domain=healthcare experiment=quick``, shared by the session's
    tests of a trained built-in model): metrics, report, plots; then predict with its best checkpoint."""
    cfg = compose_config(DOMAIN, ["experiment=quick", f"paths.output_dir={tmp_path / 'run'}", *QUIET])
    (metrics_file,) = (quick_run("healthcare").root / "outputs" / "healthcare" / "runs").glob("*/metrics.json")
    run = metrics_file.parent
    metrics = json.loads(metrics_file.read_text())
    test = metrics["test"]
    assert {"image_auroc", "pixel_auroc", "aupro", "dice", "image_ap", "image_f1_max"} <= set(test)
    assert set(metrics["baselines"]) == {"knn", "pca"} and set(metrics["baselines"]["knn"]) == set(test)
    assert metrics["epochs"] == 1 and metrics["global_step"] > 0 and Path(metrics["checkpoint"]).is_file()  # a memory bank: one pass
    predictions = pd.read_csv(run / "predictions.csv")
    assert len(predictions) == cfg.data.sample.n_test and set(predictions.columns) == {"name", "score", "is_anomalous", "label"}
    report = (run / "report.md").read_text()
    assert "| image | best F1 on validation |" in report and "threshold_rule" in report
    for plot in ("heatmaps.png", "case_panels.png", "roc.png", "score_histogram.png", "primary_metric.png"):
        assert (run / "plots" / plot).is_file() and f"plots/{plot}" in report
    # the data the run used (split sizes and class balance, as generated) and the pixel-level comparison
    sample = cfg.data.sample
    for split, n in (("train", sample.n_train), ("val", sample.n_val), ("test", sample.n_test)):
        abnormal = 0 if split == "train" else n // 2
        assert f"| {split} | {n} | {n - abnormal} | {abnormal} | {abnormal / n:.1%} |" in report
    assert metrics["data"]["splits"]["test"]["abnormal"] == int(predictions["label"].sum())
    expected = localisation_warnings(metrics)
    assert ("## Lesion localisation (test, pixel level)" in report) and (metrics.get("warnings", []) == expected)
    assert all(f"> **Warning:** {w}" in report.split("## Test metrics")[0] for w in expected)
    overlays = sorted((run / "plots" / "heatmaps").glob("*.png"))
    assert [p.name for p in overlays] == [Path(heatmap_name(i, n)).name for i, n in enumerate(predictions["name"])]

    # predict on a folder of PNGs with the best checkpoint, through the command line (data.* overrides on top of the
    # checkpoint's data settings): a table, and heatmaps of the highest-scored inputs beside it (data.max_heatmaps=4)
    folder = tmp_path / "incoming"
    names = _scans(folder)
    output = tmp_path / "scored" / "scans.csv"
    predicted = cli_in_process(tmp_path, "predict", "domain=healthcare", f"ckpt_path={metrics['checkpoint']}", f"data.path={folder}",
                               "data.max_heatmaps=4", f"output={output}", f"paths.output_dir={tmp_path / 'predict'}", "runtime.torch_threads=1")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    table = pd.read_csv(output)
    assert table["name"].tolist() == names and set(table.columns) == {"name", "score", "is_anomalous"}
    assert table["score"].between(0, 1).all() and (table["is_anomalous"] == (table["score"] >= 0.5)).all()
    heatmaps = {p.name for p in (tmp_path / "scored" / "scans_plots" / "heatmaps").glob("*.png")}
    top = table["score"].sort_values(ascending=False, kind="stable").index[:4]
    assert heatmaps == {Path(heatmap_name(i, names[i])).name for i in top}

    # bad input at predict time: the corrupt file is named
    (folder / "scan9.png").write_bytes(b"garbage")
    bad = instantiate(cfg.data, path=str(folder))
    with pytest.raises(DataError, match=r"scan9\.png: cannot read"):
        bad.setup("predict")


def _localisation_metrics(pixel_auroc: float, dice: float) -> dict:
    model = {"image_auroc": 0.9, "pixel_auroc": 0.85, "aupro": 0.5, "dice": 0.40}
    return {"domain": "healthcare", "model_name": "autoencoder", "primary_metric": "image_auroc", "mode": "max", "test": model,
            "baselines": {"knn": {**model, "pixel_auroc": 0.80, "dice": 0.30}, "pca": {**model, "pixel_auroc": pixel_auroc, "dice": dice}}}


@pytest.mark.parametrize(("pixel_auroc", "dice", "warned"), [(1.0, 0.30, "pixel AUROC 1.000 vs the model's 0.850"),
                                                            (0.80, 0.55, "Dice 0.550 vs the model's 0.400"),
                                                            (0.8505, 0.4004, None), (float("nan"), 0.30, None)])
def test_a_baseline_that_localises_better_is_a_warning_at_the_top_of_the_report(tmp_path, pixel_auroc, dice, warned):
    """A baseline above the model on pixel AUROC or Dice (not within 0.001, not NaN) is named at the top of report.md
    and in metrics.json's ``warnings``; otherwise the report says no baseline localises better."""
    metrics = _localisation_metrics(pixel_auroc, dice)
    section = localisation_section(metrics)
    ctx = RunContext(tmp_path, OmegaConf.create({}), None, None, metrics)
    head = write_report(ctx, [section]).read_text().split("## Test metrics")[0]
    if warned:
        assert section.warnings == [w := f"the baseline pca localises lesions better than the model ({warned}); the model's heatmaps "
                                         "are the less reliable guide to where a lesion is"]
        assert f"> **Warning:** {w}" in head and metrics["warnings"] == [w] and f"**Warning: {w}.**" in section.body
    else:
        assert section.warnings == [] and "Warning" not in head and "warnings" not in metrics
        assert "No baseline localises lesions better than the model" in section.body
    assert "| pca (baseline) |" in section.body and "| autoencoder (model) | 0.8500 | 0.5000 | 0.4000 |" in section.body


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


def _normal_only_validation_folder(root: Path) -> None:
    """A benchmark-layout folder whose validation split is ``valid/good`` only (no abnormal image, no mask)."""
    def save(folder: Path, images: np.ndarray) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray((np.clip(image[0], 0, 1) * 255).astype(np.uint8)).save(folder / f"{i:04d}.png")

    save(root / "train" / "good", make_phantoms(24, 0, size=32, seed=1).images)
    save(root / "valid" / "good", make_phantoms(8, 0, size=32, seed=2).images)
    test = make_phantoms(6, 6, size=32, seed=3)
    save(root / "test" / "good" / "img", test.images[test.labels == 0])
    save(root / "test" / "Ungood" / "img", test.images[test.labels == 1])
    save(root / "test" / "Ungood" / "anomaly_mask", test.masks[test.labels == 1].astype(np.float32))


FORCED = "the baseline pca localises lesions better than the model (forced in this test)"


def test_normal_only_validation_says_which_threshold_rule_and_heatmaps_are_capped(tmp_path, capsys, monkeypatch):
    """valid/good only: F1 cannot be chosen, so the thresholds are the normal-score quantile at model.fpr, and the
    rule is in the terminal, metrics.json and report.md; data.max_heatmaps=3 writes the 3 highest-scored overlays."""
    monkeypatch.setattr(healthcare_report, "localisation_warnings", lambda metrics: [FORCED])
    _normal_only_validation_folder(tmp_path / "data")
    run = tmp_path / "run"
    cfg = compose_config(DOMAIN, ["data=folder", f"data.path={tmp_path / 'data'}", "data.image_size=32", "data.max_heatmaps=3",
                                  "model.net.coreset_size=100", f"paths.output_dir={run}", *QUIET])
    run_train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    rule = "f1 impossible (validation has no positives): normal-score quantile, false-positive rate 0.05"
    assert metrics["decisions"]["image_threshold_rule"] == rule and metrics["decisions"]["pixel_threshold_rule"] == rule
    out = capsys.readouterr().out
    assert f"image_threshold_rule: {rule}" in out
    assert f"warning: {FORCED}" in out and metrics["warnings"] == [FORCED]  # a report section's warning reaches the terminal
    report = (run / "report.md").read_text()
    assert f"| image | {rule} |" in report and "The validation split has no abnormal image (image threshold) and no lesion pixel" in report
    assert "0.95 quantile of the normal validation scores" in report and np.isfinite(metrics["test"]["image_f1"])
    predictions = pd.read_csv(run / "predictions.csv")
    top = predictions["score"].sort_values(ascending=False, kind="stable").index[:3]
    overlays = sorted(p.name for p in (run / "plots" / "heatmaps").glob("*.png"))
    assert overlays == sorted(Path(heatmap_name(i, predictions["name"][i])).name for i in top)
    assert (run / "plots" / "heatmaps.png").is_file() and "Per-image overlays of the 3 highest-scored test images" in report
