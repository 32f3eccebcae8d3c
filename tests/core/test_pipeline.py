"""The runs behind the CLI, on the test-only ``toy`` domain: train → evaluate/predict/export from its
checkpoint, resume, reproducibility, safe checkpoint loading and a real 2-process DDP run (sweeps: test_sweep.py).

``toy_run`` trains through ``python -m sectorkit`` in a process of its own; the other commands go through the same
``sectorkit.core.cli.main`` in this process (``toy_cli``), which spares each one an interpreter's start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

QUIET = ["runtime.torch_threads=1", "callbacks.progress_bar=null", "callbacks.model_summary=null"]


def run_cli(toy_domain, root: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m sectorkit ARGS`` in a subprocess that sees the toy domain, with runs under ``root``."""
    env = {**toy_domain.env, "SECTORKIT_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "sectorkit", *args], env=env, cwd=root, capture_output=True, text=True, timeout=300, check=False)


def train(cli, root: Path, *overrides: str) -> dict:
    """``sectorkit train domain=toy experiment=quick`` under ``root`` with ``cli`` (``toy_cli``, or ``run_cli`` in a
    process of its own); the new run's metrics.json."""
    before = set((root / "outputs" / "toy" / "runs").glob("*"))
    result = cli(root, "train", "domain=toy", "experiment=quick", *QUIET, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    new = set((root / "outputs" / "toy" / "runs").glob("*")) - before
    assert len(new) == 1, (new, result.stdout[-2000:])
    return json.loads((new.pop() / "metrics.json").read_text())


def test_train_writes_metrics_report_predictions_and_checkpoints(toy_run) -> None:
    m, run_dir = toy_run.metrics, toy_run.run_dir
    assert m["primary_metric"] == "auroc" and m["mode"] == "max" and m["test"]["auroc"] > 0.75
    assert m["test"]["auroc"] > m["baselines"]["logistic_regression"]["auroc"]  # planted interaction, beyond a linear model
    assert Path(m["checkpoint"]).is_file() and Path(m["checkpoint"]).name.startswith("best-")
    assert Path(m["last_checkpoint"]).is_file() and m["epochs"] >= 1 and m["global_step"] > 0
    report = (run_dir / "report.md").read_text()
    assert "| **mlp** (model) |" in report and "logistic_regression (baseline)" in report and "plots/primary_metric.png" in report
    assert (run_dir / "plots" / "primary_metric.png").is_file()
    verdict = m["verdict"]  # the model wins here, so the verdict names the margin over the logistic regression
    assert verdict["best_baseline"] == "logistic_regression" and verdict["margin"] > 0
    assert verdict["text"] in toy_run.stdout and f"**Verdict: {verdict['text']}.**" in report
    assert "logistic_regression (baseline)" in toy_run.stdout and "failures" not in m
    printed = toy_run.stdout + toy_run.stderr  # nothing a user must learn to ignore (sectorkit --verbose shows it)
    assert not any(noise in printed for noise in ("GPU available", "TPU available", "Tip:", "already configured with model summary"))
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert len(predictions) > 100 and predictions["score"].between(0, 1).all()
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()


def test_a_checkpoint_carries_its_data_settings(toy_cli, toy_run, tmp_path) -> None:
    """evaluate with nothing but the best checkpoint scores the data the run was trained on (the quick experiment's
    smaller sample): the run's test metrics exactly, written beside the run; another domain's command refuses it."""
    checkpoint = toy_run.metrics["checkpoint"]
    record = torch.load(checkpoint, weights_only=True)["sectorkit_run"]
    assert record["domain"] == "toy" and record["model_name"] == "mlp" and record["data"]["sample"]["n_rows"] == 3000
    assert set(record["versions"]) == {"sectorkit", "torch", "pytorch_lightning", "python"}
    result = toy_cli(tmp_path, "evaluate", "domain=toy", f"ckpt_path={checkpoint}", *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    (evaluation,) = (toy_run.run_dir / "evaluate").glob("*/metrics.json")  # beside the run, not among the training runs
    evaluated = json.loads(evaluation.read_text())
    assert evaluated["test"] == toy_run.metrics["test"] and evaluated["model_name"] == "mlp"
    for name, values in toy_run.metrics["baselines"].items():
        assert evaluated["baselines"][name] == pytest.approx(values)
    assert not (tmp_path / "outputs").exists()
    other = toy_cli(tmp_path, "evaluate", "domain=finance", f"ckpt_path={checkpoint}", *QUIET)
    assert other.returncode == 2 and "trained for domain 'toy', not 'finance'; use domain=toy" in other.stderr


def test_a_model_trained_on_a_renamed_file_predicts_a_new_file_without_repeating_the_mapping(toy_cli, tmp_path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 3))
    frame = pd.DataFrame({"age": x[:, 0], "income": x[:, 1], "tenure": x[:, 2], "churned": (x[:, 0] * x[:, 1] > 0).astype(int)})
    frame.to_csv(tmp_path / "train.csv", index=False)
    metrics = train(toy_cli, tmp_path, "data=csv", f"data.path={tmp_path / 'train.csv'}", "data.label=churned", "data.features=[age,income]",
                    "trainer.max_epochs=3")
    frame.drop(columns=["churned"]).head(40).to_csv(tmp_path / "new.csv", index=False)
    output = tmp_path / "scored.csv"
    result = toy_cli(tmp_path, "predict", "domain=toy", f"ckpt_path={metrics['checkpoint']}", f"data.path={tmp_path / 'new.csv'}",
                     f"output={output}", *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(pd.read_csv(output)) == 40
    evaluated = toy_cli(tmp_path, "evaluate", "domain=toy", f"ckpt_path={metrics['checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}",
                        *QUIET)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"] == metrics["test"]


def test_predict_scores_a_user_file_with_the_training_preprocessing(toy_cli, toy_run, tmp_path) -> None:
    frame = pd.read_csv(toy_run.run_dir / "predictions.csv")
    assert {"score", "label"} <= set(frame.columns)
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({f"feature_{j}": rng.standard_normal(50) * 10.0 ** (j % 3) + 5.0 * j for j in range(8)})
    rows.to_csv(tmp_path / "new.csv", index=False)
    output = tmp_path / "scored" / "new_scores.csv"
    result = toy_cli(tmp_path, "predict", "domain=toy", "data=csv", f"data.path={tmp_path / 'new.csv'}",
                     f"ckpt_path={toy_run.metrics['checkpoint']}", f"output={output}", *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = pd.read_csv(output)
    assert len(scored) == 50 and scored["score"].between(0, 1).all() and scored["score"].std() > 0.01

    rows.drop(columns=["feature_3"]).to_csv(tmp_path / "bad.csv", index=False)
    bad = toy_cli(tmp_path, "predict", "domain=toy", "data=csv", f"data.path={tmp_path / 'bad.csv'}",
                  f"ckpt_path={toy_run.metrics['checkpoint']}", *QUIET)
    assert bad.returncode == 2 and "bad.csv" in bad.stderr and "feature_3" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_the_pytorch_model(toy_cli, toy_run, tmp_path, fmt) -> None:
    output = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    result = toy_cli(tmp_path, "export", "domain=toy", "experiment=quick", f"format={fmt}",
                     f"ckpt_path={toy_run.metrics['checkpoint']}", f"output={output}", *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.with_suffix(".json").read_text())
    assert report["passed"] and report["max_abs_diff"] < 1e-4 and report["format"] == fmt
    if fmt == "onnx":  # raw features in, probabilities out: preprocessing travels inside the graph
        session = ort.InferenceSession(str(output))
        (name,) = [i.name for i in session.get_inputs()]
        assert name == "inputs"  # forward's own parameter name, not input_0
        metadata = session.get_modelmeta().custom_metadata_map
        assert metadata["domain"] == "toy" and metadata["model_name"] == "mlp" and json.loads(metadata["inputs"]) == ["inputs"]
        assert metadata["sectorkit_version"] and "decisions" in metadata
        probs = session.run(None, {name: np.random.default_rng(0).standard_normal((7, 8)).astype(np.float32)})[0]
        assert probs.shape[0] == 7 and ((probs >= 0) & (probs <= 1)).all()


def test_resume_continues_from_the_last_checkpoint(toy_cli, tmp_path) -> None:
    first = train(toy_cli, tmp_path, "trainer.max_epochs=2", "callbacks.early_stopping=null")
    resumed = train(toy_cli, tmp_path, "trainer.max_epochs=4", "callbacks.early_stopping=null", "ckpt_path=last")
    assert resumed["resumed_from"] == first["last_checkpoint"]
    assert (first["epochs"], resumed["epochs"]) == (2, 4)
    assert resumed["global_step"] == 2 * first["global_step"]


def test_same_seed_same_metrics_other_seed_other_metrics(toy_cli, toy_run, tmp_path) -> None:
    again = train(toy_cli, tmp_path)  # in this process, toy_run in a process of its own: the same numbers
    assert again["test"] == toy_run.metrics["test"]
    other = train(toy_cli, tmp_path, "seed=7")
    assert other["test"] != toy_run.metrics["test"]


def test_unsafe_checkpoint_is_refused_unless_allowed(toy_cli, toy_run, tmp_path) -> None:
    checkpoint = torch.load(toy_run.metrics["checkpoint"], weights_only=True)
    checkpoint["note"] = Path("pickled/object")  # anything beyond tensors and plain containers
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save(checkpoint, unsafe)
    refused = toy_cli(tmp_path, "evaluate", "domain=toy", "experiment=quick", f"ckpt_path={unsafe}", *QUIET)
    assert refused.returncode == 2 and "allow_unsafe_checkpoint=true" in refused.stderr and "Traceback" not in refused.stderr
    allowed = toy_cli(tmp_path, "evaluate", "domain=toy", "experiment=quick", f"ckpt_path={unsafe}", "allow_unsafe_checkpoint=true", *QUIET)
    assert allowed.returncode == 0, allowed.stderr[-3000:]


# every command loads a checkpoint through the same checks: each command and each crafted entry is tried once
@pytest.mark.parametrize(("task", "crafted"), [("evaluate", "model_class"), ("predict", "network"), ("export", "data"), ("predict", "model_class")])
def test_a_crafted_checkpoint_cannot_run_code(toy_cli, toy_run, tmp_path, task, crafted) -> None:
    """A file torch.load(weights_only=True) accepts, naming subprocess.Popen as the model or as its network."""
    marker = tmp_path / "ran"
    checkpoint = torch.load(toy_run.metrics["checkpoint"], weights_only=True)
    payload = {"_target_": "subprocess.Popen", "args": f"touch {marker}", "shell": True}
    if crafted == "model_class":
        checkpoint["sectorkit_model_class"] = "subprocess.Popen"
        checkpoint["hyper_parameters"] = {k: v for k, v in payload.items() if k != "_target_"}
    elif crafted == "network":
        checkpoint["hyper_parameters"]["net"] = payload
    else:
        checkpoint["sectorkit_run"]["data"] = payload
    crafted_file = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted_file)
    result = toy_cli(tmp_path, task, "domain=toy", "experiment=quick", f"ckpt_path={crafted_file}", f"output={tmp_path / 'out.onnx'}",
                     *QUIET)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "subprocess.Popen" in result.stderr
    assert any(refusal in result.stderr for refusal in ("not a model of a registered domain", "not a network", "not a data module of a registered domain"))
    assert not marker.exists()


@pytest.mark.slow  # two training processes (gloo): about 11 s
def test_two_process_ddp_on_cpu_writes_one_run_folder(toy_domain, tmp_path) -> None:
    metrics = train(lambda root, *args: run_cli(toy_domain, root, *args), tmp_path, "trainer=ddp_cpu", "trainer.max_epochs=3")
    (run_dir,) = (tmp_path / "outputs" / "toy" / "runs").iterdir()  # one folder for both ranks
    assert Path(metrics["run_dir"]) == run_dir
    assert (run_dir / "rank1.log").is_file() and (run_dir / "train.log").is_file()
    assert metrics["test"]["auroc"] > 0.7 and Path(metrics["checkpoint"]).is_file()
    steps = pd.read_csv(run_dir / "csv" / "metrics.csv")
    assert steps.dropna(subset=["val/auroc"])["epoch"].max() == 2  # three epochs of validation, logged once (rank 0)
    assert steps["val/auroc"].notna().sum() == 3


def test_demo_runs_the_quick_pipeline_and_prints_model_vs_baseline(toy_cli, tmp_path) -> None:
    result = toy_cli(tmp_path, "demo", "--domains", "toy", "--sweep", "none")  # the search: tests/core/test_sweep.py
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "outputs" / "demo").glob("*/toy/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    table_row = next(line for line in result.stdout.splitlines() if line.startswith("│ toy"))
    assert f"{metrics['test']['auroc']:.4f}" in table_row and "logistic_regression" in table_row
    assert f"{metrics['baselines']['logistic_regression']['auroc']:.4f}" in table_row
    missing = toy_cli(tmp_path, "demo", "--domains", "nope")
    assert missing.returncode == 2 and "unknown domain(s): nope" in missing.stdout


def test_a_fast_dev_run_says_it_is_a_smoke_run(toy_cli, tmp_path) -> None:
    metrics = train(toy_cli, tmp_path, "debug=fast_dev_run")
    assert metrics["smoke_run"].startswith("debug=fast_dev_run") and metrics["verdict"]["text"].startswith("smoke run, not a result: ")
    assert "> **Smoke run**" in (Path(metrics["run_dir"]) / "report.md").read_text()
