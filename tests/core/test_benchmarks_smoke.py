"""Smoke tests of the core benchmarks: the Lightning and plain loops do the same work, ONNX parity, the GPU
check's tolerance and its clean skip without CUDA, the docs generator and the paired bootstrap of margins."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check, run_all  # noqa: E402
from benchmarks.common import paired_block_bootstrap  # noqa: E402
from benchmarks.core_benchmark import compose_finance, inference, lightning_run, plain_run  # noqa: E402



def test_lightning_and_plain_loops_do_the_same_work_and_onnx_matches(tmp_path) -> None:
    cfg = compose_finance(tmp_path)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    steps_per_epoch = -(-len(dm.datasets["train"]) // dm.batch_size)
    steps = steps_per_epoch + 3  # crosses an epoch boundary
    light, bare, plain = lightning_run(cfg, dm, steps), lightning_run(cfg, dm, steps, step_log=False), plain_run(cfg, dm, steps)
    assert light["steps"] == bare["steps"] == plain["steps"] == steps
    assert light["samples"] == bare["samples"] == plain["samples"] == len(dm.datasets["train"]) + 3 * dm.batch_size
    assert all(r["samples_per_s"] > 0 and r["loop_s"] <= r["fit_s"] for r in (light, bare, plain))
    assert "train/loss" in light["trainer"].callback_metrics and "train/loss" not in bare["trainer"].callback_metrics

    result = inference(light["model"], dm, budget_s=0.01, workdir=tmp_path)
    assert result["onnx_parity"]["passed"] and result["onnx_parity"]["alert_agreement"] > 0.99
    for engine in ("torch_forward", "onnxruntime"):
        rows = result["latency"][engine]
        assert [r["batch_size"] for r in rows] == [1, 32, 512, 4096]
        assert all(0 < r["p50_ms"] <= r["p99_ms"] and r["calls"] >= 30 for r in rows)
    assert result["trainer_predict"]["rows"] == len(dm.datasets["test"])


def test_gpu_check_tolerance() -> None:
    cpu = {"ap": 0.50, "mae": 10.0}
    assert gpu_check.compare(cpu, {"ap": 0.52, "mae": 10.4}, "32-true")["passed"]
    check = gpu_check.compare(cpu, {"ap": 0.60, "mae": 10.4}, "32-true")
    assert not check["passed"] and check["failed"] == ["ap"]
    assert gpu_check.compare(cpu, {"ap": 0.60, "mae": 10.9}, "bf16-mixed")["passed"]  # looser for bf16
    assert not gpu_check.compare(cpu, {"other": 1.0}, "32-true")["passed"]  # no common metric is not a pass


def test_gpu_check_reference_run_on_cpu(tmp_path) -> None:
    run = gpu_check.run_domain("finance", "cpu", "32-true", 2, tmp_path, overrides=["runtime.torch_threads=1"])
    assert run["steps"] == 2 and run["samples"] > 0 and run["samples_per_s"] > 0 and run["peak_gpu_mb"] is None
    assert {"ap", "auc"} <= set(run["test"]) and gpu_check.compare(run["test"], run["test"], "32-true")["passed"]


def test_gpu_check_skips_cleanly_without_cuda(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert "GPU check skipped" in capsys.readouterr().out
    assert not out.exists()


def test_docs_from_results_and_run_records(tmp_path) -> None:
    table = "## Phantom benchmark (quick)\n\n| method | image_auroc |\n|---|---|\n| patchcore | 0.7 |\nverdict line\n| speed | value |\n|---|---|"
    (tmp_path / "healthcare_quick.json").write_text(json.dumps({"table": table}))
    record = {"status": "skipped", "reason": "MovieLens-100K not found", "date": "2026-01-01T00:00:00+00:00"}
    manifest = {"command": "python -m benchmarks.run_all --quick", "date": "2026-01-01T00:00:00+00:00", "parts": {"retail": record}}
    (tmp_path / "run_all_quick.json").write_text(json.dumps(manifest))
    docs = run_all.write_docs(tmp_path, tmp_path / "benchmarks.md").read_text()
    assert "## Quick mode" in docs and "## Full mode" not in docs
    assert "Skipped in the last run_all (2026-01-01T00:00:00+00:00): MovieLens-100K not found." in docs
    assert "### Healthcare" in docs and "#### Phantom benchmark" in docs and "| patchcore |" in docs
    assert "retail skipped" in docs and "verdict line\n\n| speed | value |" in docs  # blank line before every table
    assert run_all.skip_reason("retail", None) and run_all.skip_reason("retail", tmp_path) is None


def test_paired_block_bootstrap_finds_a_planted_margin_and_no_margin() -> None:
    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, 1.0, 1500)
    better = paired_block_bootstrap(0.9 * base + rng.normal(0, 0.05, 1500), base)
    assert better["ci95_low"] < 10 < better["ci95_high"] and better["ci95_low"] > 5
    same = paired_block_bootstrap(base + rng.normal(0, 0.3, 1500), base)
    assert same["ci95_low"] < 0 < same["ci95_high"]
    with pytest.raises(ValueError, match="same length"):
        paired_block_bootstrap(base[:10], base[:11])
