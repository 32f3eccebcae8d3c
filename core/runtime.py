"""Process-level settings: torch threads, matmul precision, offline mode."""

from __future__ import annotations

import logging
import os
import warnings

import torch
from omegaconf import DictConfig

from sectorkit.core import progress
from sectorkit.core.errors import ConfigError

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


# Library messages a user cannot act on in a sectorkit run (shown with runtime.verbose=true / --verbose).
QUIET_WARNINGS = (
    r".*sync_dist=True.*",  # torchmetrics synchronises metric states across processes itself
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*does not have many workers.*",  # in-memory tables: workers are a deliberate setting (data.num_workers)
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*modules? in eval mode.*",
    r".*DistributedSampler.*",
    r".*dirpath has changed.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*Found .* module\(s\) in eval mode.*",
    r".*training_step` returned `None`.*",  # memory-bank and zero-shot networks fill a bank or fit in closed form
)
# Lightning's rank-zero INFO lines: device availability, model-summary set-up, logging-service adverts.
LIGHTNING_INFO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                          "lightning_fabric.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def quiet_library_output(verbose: bool = False) -> None:
    """Silence library warnings and INFO lines a user cannot act on, unless ``verbose``."""
    if verbose:
        return
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def check_devices(trainer_cfg: DictConfig) -> None:
    """Refuse, before any data is prepared, a GPU run on a machine without CUDA and more devices than it has
    (each device is one process: ``trainer.devices=99`` on a 2-core machine would start 99 of them)."""
    accelerator, devices = str(trainer_cfg.get("accelerator", "auto")), trainer_cfg.get("devices", "auto")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(f"trainer.accelerator={accelerator}: this machine has no CUDA device (torch {torch.__version__}); "
                          "use trainer=cpu, or install a CUDA build of torch on a GPU machine")
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        return
    uses_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    available = gpus if uses_gpu else (os.cpu_count() or 1)
    if devices > available:
        kind = "GPU(s)" if uses_gpu else "CPU core(s)"
        raise ConfigError(f"trainer.devices={devices}: this machine has {available} {kind}, and each device runs one training process; "
                          f"use at most {available}")


def configure_runtime(runtime_cfg: DictConfig, trainer_cfg: DictConfig) -> int:
    """Check the device settings, then apply thread count, matmul precision and offline mode; return the torch
    thread count used."""
    check_devices(trainer_cfg)
    if runtime_cfg.offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    quiet_library_output(bool(runtime_cfg.get("verbose", False)))
    progress.configure(verbose=bool(runtime_cfg.get("verbose", False)))  # verbose runs report every phase's time
    threads = runtime_cfg.torch_threads
    if threads is None:
        threads = default_torch_threads(processes_per_node(trainer_cfg))
    torch.set_num_threads(int(threads))
    torch.set_float32_matmul_precision(runtime_cfg.matmul_precision)
    return int(threads)
