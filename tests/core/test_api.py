"""The Python API from a plain Python process (no CLI): train, load, predict on a DataFrame, evaluate, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = '''
import json, sys
from pathlib import Path

import pandas as pd
import sectorkit

quiet = ["runtime.torch_threads=1", "callbacks.progress_bar=null", "callbacks.model_summary=null"]
run = sectorkit.train("finance", "data=tiny", "model=mlp_small", "trainer.max_epochs=1", *quiet)
model = sectorkit.load(run.run_dir)
raw = pd.read_parquet(next(Path("data_cache").rglob("*.parquet")))  # transactions in the simulator's own layout
scores = model.predict(raw.tail(3000).drop(columns=["TX_FRAUD"]))
evaluated = model.evaluate(*quiet)
export = model.export(Path(sys.argv[1]) / "fraud.onnx")
try:
    sectorkit.load(Path(sys.argv[1]) / "nothing")
except sectorkit.core.errors.DataError as err:
    refused = str(err)
print(json.dumps({"test": run.test, "baselines": sorted(run.baselines), "verdict": run.verdict, "run_dir": str(run.run_dir),
                  "checkpoint": str(run.checkpoint), "domain": model.domain, "model_name": model.model_name,
                  "rows": len(scores), "columns": list(scores.columns), "evaluated": evaluated.test,
                  "evaluate_dir": str(evaluated.run_dir), "export_passed": export["passed"], "refused": refused}))
'''


def test_train_load_predict_evaluate_export_from_python(tmp_path: Path) -> None:
    env = {**os.environ, "SECTORKIT_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    run_dir = Path(out["run_dir"])
    assert run_dir.parent == tmp_path / "outputs" / "finance" / "runs" and (run_dir / "report.md").is_file()
    assert 0.0 <= out["test"]["ap"] <= 1.0 and out["baselines"] == ["hist_gradient_boosting", "lightgbm", "logistic_regression"]
    assert out["verdict"].startswith(("the model", "the baseline"))
    assert (out["domain"], out["model_name"]) == ("finance", "mlp_small") and Path(out["checkpoint"]).parent == run_dir / "checkpoints"
    assert out["rows"] == 3000 and {"score", "alert"} <= set(out["columns"])
    assert out["evaluated"] == out["test"] and Path(out["evaluate_dir"]).parent == run_dir / "evaluate"
    assert out["export_passed"] and (tmp_path / "fraud.onnx").is_file()
    assert out["refused"].endswith("no such checkpoint file")
