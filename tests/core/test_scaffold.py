"""``sectorkit new-domain``: names are checked, the rendered package installs, registers through its entry
point, composes with the core config tree and trains end to end (in process and through the CLI)."""

from __future__ import annotations

import ast

import pytest
import pytorch_lightning as pl
import yaml
from sectorkit.core.config import compose_config
from sectorkit.core.errors import ConfigError
from sectorkit.core.pipeline import build_datamodule, build_model
from sectorkit.core.scaffold import TEMPLATE_DIR, camel_case, scaffold_domain
from sectorkit.core.trainer import build_trainer


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Toy", "expected a lowercase Python identifier"),
        ("my-domain", "expected a lowercase Python identifier"),
        ("1st", "expected a lowercase Python identifier"),
        ("", "expected a lowercase Python identifier"),
        ("class", "expected a lowercase Python identifier"),
        ("finance", "already registered"),
        ("json", "already importable"),
    ],
)
def test_bad_names_are_rejected_with_the_reason(tmp_path, name, message) -> None:
    with pytest.raises(ConfigError, match=rf"new-domain NAME {name!r}: .*{message}"):
        scaffold_domain(name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_existing_folder_is_not_overwritten(tmp_path) -> None:
    (tmp_path / "sectorkit-insurance").mkdir()
    with pytest.raises(ConfigError, match=r"sectorkit-insurance already exists"):
        scaffold_domain("insurance", tmp_path)


def test_rendered_package_is_complete_and_valid(tmp_path) -> None:
    package = scaffold_domain("crop_health", tmp_path)
    assert package == tmp_path.resolve() / "sectorkit-crop_health" and camel_case("crop_health") == "CropHealth"
    files = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    expected = {
        "pyproject.toml", "README.md", "tests/test_crop_health.py", "crop_health/__init__.py", "crop_health/data.py", "crop_health/sample.py",
        "crop_health/metrics.py", "crop_health/baselines.py", "crop_health/report.py", "crop_health/models/__init__.py",
        "crop_health/models/mlp.py", "crop_health/module.py", "crop_health/schemas.py", "crop_health/conf/main.yaml", "crop_health/conf/data/sample.yaml", "crop_health/conf/data/csv.yaml",
        "crop_health/conf/model/mlp.yaml", "crop_health/conf/experiment/quick.yaml",
    }
    assert files == expected and len(files) == len(list(TEMPLATE_DIR.rglob("*.tmpl")))
    for path in package.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "$name" not in text and "$Name" not in text, path
            if path.suffix == ".py":
                ast.parse(text, filename=str(path))
    main = yaml.safe_load((package / "crop_health/conf/main.yaml").read_text())
    assert main["defaults"] == ["base", "_self_", {"data": "sample"}, {"model": "mlp"}, {"experiment": None}, {"hparams_search": None},
                                {"debug": None}, {"launcher": None}]
    assert main["domain"] == "crop_health" and main["monitor"] == {"metric": "auroc", "mode": "max"}
    assert yaml.safe_load((package / "crop_health/conf/data/sample.yaml").read_text())["_target_"] == "crop_health.data.CropHealthDataModule"
    pyproject = (package / "pyproject.toml").read_text()
    assert '[project.entry-points."sectorkit.domains"]\ncrop_health = "crop_health:DOMAIN"' in pyproject


def test_installed_package_registers_with_its_configs(toy_registered, toy_domain) -> None:
    domain = toy_registered
    assert domain.name == "toy" and domain.baselines is not None and domain.report is not None
    assert domain.config_dir.is_relative_to(toy_domain.site_dir.resolve())  # the YAML files were packaged, not read from the source folder
    assert (domain.options("data"), domain.options("model"), domain.options("experiment")) == (["csv", "sample"], ["mlp"], ["quick"])


def test_quick_experiment_beats_chance_and_the_baseline(toy_registered, tmp_path) -> None:
    cfg = compose_config(toy_registered, ["domain=toy", "experiment=quick", f"paths.output_dir={tmp_path}", "~logger",
                                          "callbacks.progress_bar=null", "callbacks.model_summary=null"])
    pl.seed_everything(cfg.seed, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    model = build_model(cfg, dm)
    trainer = build_trainer(cfg, enable_progress_bar=False, accelerator="cpu", devices=1)
    trainer.fit(model, dm)
    test = {k.removeprefix("test/"): v for k, v in trainer.test(model, dm, ckpt_path="best", verbose=False)[0].items()}
    baseline = toy_registered.baselines(dm, cfg)["logistic_regression"].metrics
    assert set(test) == set(baseline) == {"auroc", "ap", "accuracy"}
    assert test["auroc"] > 0.75  # chance is 0.5
    assert test["auroc"] > baseline["auroc"] - 0.02  # the planted interaction is out of the linear baseline's reach


def test_cli_lists_the_scaffolded_domain(toy_cli, tmp_path) -> None:
    listed = toy_cli(tmp_path, "domains")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("│") for line in listed.stdout.splitlines()]
    assert any(len(cells) > 2 and cells[1].strip() == "toy" for cells in rows), listed.stdout


def test_cli_trains_the_scaffolded_domain(toy_run) -> None:
    metrics = toy_run.metrics
    assert metrics["domain"] == "toy" and metrics["model_name"] == "mlp" and metrics["primary_metric"] == "auroc"
    assert metrics["test"]["auroc"] > 0.75 and set(metrics["baselines"]["logistic_regression"]) == {"auroc", "ap", "accuracy"}
    assert metrics["run_dir"] == str(toy_run.run_dir) and metrics["torch_threads"] == 1
    assert (toy_run.run_dir / "report.md").is_file() and (toy_run.run_dir / "plots" / "score_histograms.png").is_file()
    assert (toy_run.run_dir / "predictions.csv").read_text().splitlines()[0] == "row,score,prediction,label"


def test_cli_new_domain_bad_name_is_one_line(toy_cli, tmp_path) -> None:
    result = toy_cli(tmp_path, "new-domain", "Bad-Name", "--dest", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    expected = ("sectorkit: error: new-domain NAME 'Bad-Name': expected a lowercase Python identifier "
                "(a letter, then letters, digits or '_'), e.g. 'insurance'")
    assert result.stderr.strip().splitlines() == [expected]


@pytest.mark.slow  # the generated package's own test suite in a subprocess: about 10 s
def test_generated_package_tests_pass(toy_domain) -> None:
    result = toy_domain.run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], toy_domain.package_dir)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
