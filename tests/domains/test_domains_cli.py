"""Every built-in domain through the real command line: train its quick experiment (1 epoch) with ``python -m
sectorkit`` (``quick_run``), then evaluate and predict with the best checkpoint alone (the checkpoint carries its data
settings) through the same ``sectorkit.core.cli.main`` in this process. The domain folders test quality; this checks
the wiring users run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sectorkit.core.registry import discover

QUICK = ["experiment=quick", "trainer.max_epochs=1", "runtime.torch_threads=1", "callbacks.progress_bar=null",
         "callbacks.model_summary=null"]


@pytest.mark.parametrize("domain", list(discover()))
def test_train_then_evaluate_and_predict_through_the_cli(domain, quick_run, cli_in_process) -> None:
    tmp_path = quick_run(domain).root  # the training run, shared with the other tests of a trained built-in model
    (metrics_file,) = (tmp_path / "outputs" / domain / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    primary = metrics["primary_metric"]
    assert metrics["domain"] == domain and primary in metrics["test"] and metrics["baselines"]
    assert all(primary in values for values in metrics["baselines"].values())
    assert (metrics_file.parent / "report.md").is_file() and (metrics_file.parent / "predictions.csv").is_file()

    quiet = QUICK[2:]  # no experiment: the checkpoint's own data settings apply
    evaluated = cli_in_process(tmp_path, "evaluate", f"domain={domain}", *quiet, f"ckpt_path={metrics['checkpoint']}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (evaluation,) = (metrics_file.parent / "evaluate").glob("*/metrics.json")
    assert json.loads(evaluation.read_text())["test"] == metrics["test"]  # the run's test metrics, exactly

    output = tmp_path / "predicted.csv"
    predicted = cli_in_process(tmp_path, "predict", f"domain={domain}", *quiet, f"ckpt_path={metrics['checkpoint']}", f"output={output}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert len(pd.read_csv(output)) > 0
