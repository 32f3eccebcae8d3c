"""On a CUDA machine: the same pipeline on the GPU, in auto (bf16/16-mixed) precision, matches the CPU run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.requires_gpu


def test_toy_domain_trains_on_gpu_in_mixed_precision_and_matches_cpu(toy_domain, toy_run, tmp_path) -> None:
    env = {**toy_domain.env, "SECTORKIT_ROOT": str(tmp_path)}
    args = ["-m", "sectorkit", "train", "domain=toy", "experiment=quick", "trainer=gpu", "callbacks.progress_bar=null"]
    result = subprocess.run([sys.executable, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "outputs" / "toy" / "runs").glob("*/metrics.json")
    gpu = json.loads(metrics_file.read_text())
    assert gpu["test"]["auroc"] == pytest.approx(toy_run.metrics["test"]["auroc"], abs=0.03)
