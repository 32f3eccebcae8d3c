"""Helpers shared by the benchmark scripts: machine description, config composition, quiet Lightning, timing stats, tables."""

from __future__ import annotations

import logging
import os
import platform
import statistics
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine_info() -> dict[str, Any]:
    """What a figure was measured on: CPU count, versions, accelerator, date and command."""
    import pytorch_lightning as pl

    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        # other processes compete for the same cores: the 1-minute load average says how busy the machine was
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# what a benchmark run leaves out: progress bar, model summary, loggers, checkpoints, early stopping
QUIET_RUN = ["~logger", "callbacks.progress_bar=null", "callbacks.model_summary=null", "callbacks.early_stopping=null",
             "callbacks.model_checkpoint=null", "callbacks.lr_monitor=null"]


def compose_domain(name: str, workdir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """A registered domain's config composed like a user's run, with outputs and data cache under ``workdir``."""
    from sectorkit.core.config import compose_config
    from sectorkit.core.registry import get_domain

    return compose_config(get_domain(name), [f"paths.output_dir={workdir}", f"paths.data_dir={workdir / 'cache'}", *QUIET_RUN, *overrides])


def quiet_lightning() -> None:
    """Silence Lightning's info messages and warnings so the tables stay readable."""
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def latency_stats(seconds: Sequence[float], batch_size: int) -> dict[str, float]:
    """p50/p99 latency in milliseconds and throughput (samples/s) from per-call durations."""
    values = np.asarray(seconds, dtype=np.float64)
    return {
        "batch_size": batch_size,
        "calls": int(values.size),
        "p50_ms": float(np.percentile(values, 50) * 1e3),
        "p99_ms": float(np.percentile(values, 99) * 1e3),
        "samples_per_s": float(batch_size * values.size / values.sum()),
    }


def median(values: Sequence[float]) -> float:
    """The median (robust to the odd run slowed down by other load on a shared machine)."""
    return float(statistics.median(values))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get three significant decimals, large ones thousands separators."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)



def save_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Write a benchmark's results as JSON, atomically, with the machine they were measured on."""
    from sectorkit.core.io import atomic_write_json

    return atomic_write_json(path, {**results, "machine": machine_info()})


def paired_block_bootstrap(
    loss_model: np.ndarray, loss_base: np.ndarray, block: int = 14, n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """How much lower the model's mean loss is than the baseline's, in % of the baseline's, with a 95 % interval
    from a paired moving-block bootstrap over consecutive forecast origins (blocks of ``block`` origins keep
    the autocorrelation of overlapping multi-day forecasts). Positive = the model is better.

    ``loss_model``/``loss_base``: one loss per origin, in time order, on the same origins.
    """
    a, b = np.asarray(loss_model, float), np.asarray(loss_base, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"expected two 1-d loss arrays of the same length >= 2, got {a.shape} and {b.shape}")
    n, block = len(a), max(1, min(int(block), len(a)))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - block + 1, size=(n_boot, -(-n // block)))
    rows = (starts[..., None] + np.arange(block)).reshape(n_boot, -1)[:, :n]
    margins = 100 * (b[rows].mean(1) - a[rows].mean(1)) / b[rows].mean(1)
    low, high = np.quantile(margins, [0.025, 0.975])
    margin = 100 * (b.mean() - a.mean()) / b.mean()
    return {"margin_pct": float(margin), "ci95_low": float(low), "ci95_high": float(high)}
