"""evaluate, predict and export take a run folder as ``ckpt_path`` and read the domain from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path


def test_export_of_a_run_folder_needs_no_domain_and_writes_beside_the_run(quick_run, cli_in_process) -> None:
    run = quick_run("retail")
    folder = Path(run.metrics["checkpoint"]).parents[1]
    before = sorted(p.name for p in folder.parent.iterdir())
    # a relative run folder, from the folder of runs, and no domain=
    result = cli_in_process(folder.parent, "export", f"ckpt_path={folder.name}", "callbacks.progress_bar=null")
    assert result.returncode == 0, result.stderr[-2000:]
    exported = sorted(folder.glob("export/*/model.onnx"))
    assert exported, list(folder.rglob("*"))
    report = json.loads(exported[-1].with_name("model.json").read_text())
    assert report["passed"] and report["metadata"]["domain"] == "retail"
    assert sorted(p.name for p in folder.parent.iterdir()) == before  # no new folder among the training runs


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, cli_in_process) -> None:
    (tmp_path / "not_a_run").mkdir()
    result = cli_in_process(tmp_path, "evaluate", "ckpt_path=not_a_run")
    assert result.returncode == 2
    assert "not_a_run: not a run folder (no metrics.json)" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()
