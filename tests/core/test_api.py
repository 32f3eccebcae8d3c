"""The Python API, called as a user's script calls it (no CLI): train, load, predict on a DataFrame, evaluate, export."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import sectorkit


def test_train_load_predict_evaluate_export_from_python(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    quiet = ["runtime.torch_threads=1", "callbacks.progress_bar=null", "callbacks.model_summary=null"]
    run = sectorkit.train("finance", "data=tiny", "model=mlp_small", "trainer.max_epochs=1", *quiet)
    model = sectorkit.load(run.run_dir)
    raw = pd.read_parquet(next(Path("data_cache").rglob("*.parquet")))  # transactions in the simulator's own layout
    scores = model.predict(raw.tail(3000).drop(columns=["TX_FRAUD"]))
    evaluated = model.evaluate(*quiet)
    export = model.export(tmp_path / "fraud.onnx")
    with pytest.raises(sectorkit.core.errors.DataError) as refused:  # reachable from `import sectorkit` alone
        sectorkit.load(tmp_path / "nothing")

    run_dir = Path(run.run_dir)
    assert run_dir.parent == tmp_path / "outputs" / "finance" / "runs" and (run_dir / "report.md").is_file()
    assert 0.0 <= run.test["ap"] <= 1.0 and sorted(run.baselines) == ["hist_gradient_boosting", "lightgbm", "logistic_regression"]
    assert run.verdict.startswith(("the model", "the baseline"))
    assert (model.domain, model.model_name) == ("finance", "mlp_small") and Path(run.checkpoint).parent == run_dir / "checkpoints"
    assert len(scores) == 3000 and {"score", "alert"} <= set(scores.columns)
    assert evaluated.test == run.test and Path(evaluated.run_dir).parent == run_dir / "evaluate"
    assert export["passed"] and (tmp_path / "fraud.onnx").is_file()
    assert str(refused.value).endswith("no such checkpoint file")
