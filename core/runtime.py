"""Process-level settings: torch threads, matmul precision, offline mode."""

from __future__ import annotations

import os
import warnings

import torch
from omegaconf import DictConfig


DDP_JOB_ENV = "SECTORKIT_DDP_JOB"  # set by a DDP run's first process; its workers read it to join the same job


def processes_per_node(trainer_cfg: DictConfig) -> int:
    """How many training processes this node runs (CPU DDP with ``devices: 2`` runs two)."""
    devices = trainer_cfg.get("devices", 1)
    if trainer_cfg.get("accelerator") == "cpu" and isinstance(devices, int) and devices > 0:
        return devices
    return 1


def default_torch_threads(processes: int) -> int:
    """``OMP_NUM_THREADS`` when set, else half the CPU cores per training process, at least one.

    The other half is left to DataLoader workers, the Python loop and whatever else runs: on a loaded
    2-core machine the agriculture quick run took 79 s with 2 torch threads and 11 s with 1.
    """
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, (os.cpu_count() or 1) // (2 * max(1, processes)))


def quiet_known_warnings() -> None:
    """Silence library warnings that do not apply to sectorkit runs."""
    # torchmetrics synchronises metric states across processes itself, so per-value sync_dist is not needed
    warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def configure_runtime(runtime_cfg: DictConfig, trainer_cfg: DictConfig) -> int:
    """Apply thread count, matmul precision and offline mode; return the torch thread count used."""
    if runtime_cfg.offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    quiet_known_warnings()
    threads = runtime_cfg.torch_threads
    if threads is None:
        threads = default_torch_threads(processes_per_node(trainer_cfg))
    torch.set_num_threads(int(threads))
    torch.set_float32_matmul_precision(runtime_cfg.matmul_precision)
    return int(threads)
