"""Optional packages live in extras; a run that needs a missing one stops at once with one line naming the extra."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
from sectorkit.core import extras
from sectorkit.core.cli import main

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_required_dependencies_are_the_design_and_every_run_needs() -> None:
    required = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in PROJECT["dependencies"]}
    assert {"torch", "pytorch-lightning", "monai", "transformers", "scikit-learn", "pandas", "hydra-core"} <= required
    assert not required & {"tensorboard", "mlflow", "onnx", "onnxscript", "onnxruntime", "optuna", "fastapi"}
    optional = PROJECT["optional-dependencies"]
    assert {"tensorboard", "mlflow", "export", "sweep", "all"} <= set(optional)
    everything = optional["all"][0]
    assert all(name in everything for name in optional if name not in ("all", "test")), everything


def test_makefile_installs_the_extras_the_default_tests_need() -> None:
    line = next(row for row in (ROOT / "Makefile").read_text().splitlines() if row.startswith("EXTRAS"))
    assert {"sweep", "export", "test"} <= set(line.split("=", 1)[1].strip().split(","))


@pytest.mark.parametrize(
    ("args", "missing", "message"),
    [
        (["train", "domain=finance", "logger=tensorboard"], {"tensorboard", "tensorboardX"},
         'logger=tensorboard needs the tensorboard or tensorboardX package: pip install "sectorkit[tensorboard]"'),
        (["train", "domain=finance", "logger=mlflow"], {"mlflow"},
         'logger=mlflow needs the mlflow package: pip install "sectorkit[mlflow]"'),
        (["export", "domain=finance", "ckpt_path=missing.ckpt", "format=onnx"], {"onnxruntime"},
         'export format=onnx needs the onnxruntime package: pip install "sectorkit[export]"'),
    ],
)
def test_missing_optional_package_is_one_line_naming_the_extra(args, missing, message, monkeypatch, tmp_path, capsys) -> None:
    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda module: module not in missing and real(module))
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # set by an earlier --debug run in this process
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"sectorkit: error: {message}"
    assert not (tmp_path / "data").exists()  # stopped before any data was prepared


def test_present_packages_pass() -> None:
    extras.require("export format=onnx", "export", ["json", "os"])
    extras.require("x", "x", ["json", "no_such_module_here"], any_of=True)
    with pytest.raises(extras.ConfigError, match=r'pip install "sectorkit\[x\]"'):
        extras.require("x", "x", ["no_such_module_here"])
