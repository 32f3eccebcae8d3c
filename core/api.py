"""The Python API: train a domain, load a trained model, predict, evaluate and export, without the CLI.

Each call runs exactly what the matching ``sectorkit`` command runs (same config composition, checks, run
folders and outputs), so a notebook and a shell give the same results::

    import sectorkit
    run = sectorkit.train("finance", "experiment=quick")
    print(run.verdict, run.test["ap"])
    model = sectorkit.load(run.run_dir)             # a run folder or a checkpoint file
    scores = model.predict(frame)                   # a pandas DataFrame, a file path, or image arrays
    model.export("fraud.onnx")

Errors are the CLI's: :class:`~sectorkit.core.errors.ConfigError` and :class:`~sectorkit.core.errors.DataError`
with one line naming the option, file or column at fault.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sectorkit.core.errors import ConfigError, DataError

if TYPE_CHECKING:  # imported where used: ``import sectorkit`` (and so the CLI) stays fast
    import numpy as np
    import pandas as pd


@dataclass(frozen=True)
class RunResult:
    """A finished train or evaluate run: its folder and the content of its ``metrics.json``."""

    run_dir: Path
    metrics: dict[str, Any]

    @property
    def test(self) -> dict[str, float]:
        """The model's test metrics."""
        return self.metrics["test"]

    @property
    def baselines(self) -> dict[str, dict[str, float]]:
        """Each baseline's test metrics, on the same split."""
        return self.metrics.get("baselines", {})

    @property
    def verdict(self) -> str:
        """One line: the model against the best baseline on the primary metric."""
        return self.metrics.get("verdict", {}).get("text", "")

    @property
    def checkpoint(self) -> Path | None:
        """The best checkpoint of a training run."""
        path = self.metrics.get("checkpoint")
        return Path(path) if path else None

    @property
    def report(self) -> Path:
        return self.run_dir / "report.md"

    @property
    def candidates(self) -> dict[str, dict[str, Any]]:
        """A ``model=auto`` run's candidates: each one's state, best validation score (``best_val``), test metrics
        and run folder (empty for other runs)."""
        return self.metrics.get("auto", {}).get("candidates", {})

    @property
    def chosen(self) -> str | None:
        """The candidate a ``model=auto`` run chose and shipped (None for other runs)."""
        return self.metrics.get("auto", {}).get("chosen")


def train(domain: str, *overrides: str, run_dir: str | Path | None = None) -> RunResult:
    """Train ``domain`` with Hydra ``overrides`` (``"model=lightgcn"``, ``"trainer.max_epochs=5"``, ...): fit, test
    with the best checkpoint, baselines and report, in ``run_dir`` (default: a new folder under
    ``$SECTORKIT_ROOT/outputs/<domain>/runs/``)."""
    folder = Path(run_dir) if run_dir else _new_folder(Path(os.environ.get("SECTORKIT_ROOT", ".")) / "outputs" / domain / "runs")
    _run("train", [f"domain={domain}", *overrides, f"hydra.run.dir={folder.resolve()}"])
    return _result(folder)


def load(path: str | Path) -> TrainedModel:
    """A trained model from a run folder (its best checkpoint) or a checkpoint file."""
    from sectorkit.core.checkpoint import checkpoint_record

    file, record = checkpoint_record(path)
    return TrainedModel(file.resolve(), str(record["domain"]), str(record["model_name"]))


@dataclass(frozen=True)
class TrainedModel:
    """A checkpoint of a training run, with what it was trained on (the run record inside it)."""

    checkpoint: Path
    domain: str
    model_name: str

    @property
    def run_dir(self) -> Path:
        """The training run the checkpoint belongs to."""
        return self.checkpoint.parent.parent if self.checkpoint.parent.name == "checkpoints" else self.checkpoint.parent

    def predict(self, data: pd.DataFrame | str | Path | np.ndarray, *overrides: str) -> pd.DataFrame:
        """Predictions for ``data`` in the user's own raw schema: a DataFrame (written to a Parquet file first), a
        file or folder path, or an array of images (N, H, W) or (N, C, H, W), written as a MedMNIST-layout ``.npz``.
        The checkpoint's data settings apply; ``overrides`` (``"data.top_k=20"``) go on top."""
        folder = _new_folder(self.run_dir / "predict")
        from sectorkit.core.io import write_input

        path = write_input(data, folder)
        output = folder / "predictions.csv"
        _run("predict", [f"domain={self.domain}", f"ckpt_path={self.checkpoint}", f"data.path={path}", f"output={output}",
                         *overrides, f"hydra.run.dir={folder}"])
        import pandas as pd

        return pd.read_csv(output)

    def evaluate(self, *overrides: str) -> RunResult:
        """Test metrics, baselines and report of the checkpoint on its run's test split (or the data ``overrides``
        name), in ``<run>/evaluate/<timestamp>/``."""
        folder = _new_folder(self.run_dir / "evaluate")
        _run("evaluate", [f"domain={self.domain}", f"ckpt_path={self.checkpoint}", *overrides, f"hydra.run.dir={folder}"])
        return _result(folder)

    def export(self, path: str | Path, format: str = "onnx") -> dict[str, Any]:
        """Export to ONNX or TorchScript at ``path`` with the parity check; returns the parity report."""
        output = Path(path).expanduser().resolve()
        folder = _new_folder(self.run_dir / "export")
        _run("export", [f"domain={self.domain}", f"ckpt_path={self.checkpoint}", f"format={format}", f"output={output}",
                        f"hydra.run.dir={folder}"])
        return json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))

    def serve(self, host: str = "127.0.0.1", port: int = 8000, *overrides: str, block: bool = True, **settings: Any) -> Any:
        """An HTTP inference server for this model (FastAPI on uvicorn, the ``serve`` extra): ``GET /health``,
        ``GET /contract``, ``POST /predict`` with rows in the training file's own schema, answered with what
        :meth:`predict` returns, scored in memory by the data module built at start. ``settings``: ``max_rows``,
        ``max_bytes``, ``history``, ``max_history_rows``, ``in_memory`` (:class:`sectorkit.core.serve.ServeSettings`). Blocks; with ``block=False`` returns the running server
        (``.url``, ``.stop()``)."""
        from sectorkit.core.serve import ServeSettings, serve

        return serve(self.checkpoint, host, port, overrides, ServeSettings(**settings), block=block)


def _run(task: str, overrides: list[str]) -> None:
    from sectorkit.core.cli import run_task

    os.environ.setdefault("SECTORKIT_ROOT", os.getcwd())
    run_task(task, overrides)


def _result(folder: Path) -> RunResult:
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        raise DataError(f"{folder}: the run wrote no metrics.json (see the log in that folder)")
    return RunResult(folder.resolve(), json.loads(metrics_file.read_text(encoding="utf-8")))


def _new_folder(parent: Path) -> Path:
    folder = parent / datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    folder.mkdir(parents=True, exist_ok=False)
    return folder.resolve()
