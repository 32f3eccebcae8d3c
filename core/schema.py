"""Typed schemas for the core config groups, registered in Hydra's ConfigStore.

A typo or a wrongly typed value under ``trainer`` or ``runtime`` fails when the config is composed,
naming the key, instead of minutes into a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class TrainerConfig:
    """Arguments of ``pytorch_lightning.Trainer`` that sectorkit exposes; ``extra`` passes any other."""

    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "auto"  # auto: bf16-mixed on GPUs that support it, 16-mixed on older GPUs, 32-true on CPU
    max_epochs: Optional[int] = 10
    min_epochs: Optional[int] = 1
    max_steps: int = -1
    max_time: Optional[str] = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    limit_predict_batches: Any = None
    overfit_batches: Any = 0.0
    val_check_interval: Any = None
    check_val_every_n_epoch: Optional[int] = 1
    num_sanity_val_steps: Optional[int] = None
    log_every_n_steps: Optional[int] = None
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    deterministic: Any = None
    benchmark: Optional[bool] = None
    fast_dev_run: Any = False
    profiler: Optional[str] = None
    enable_progress_bar: Optional[bool] = None
    enable_model_summary: Optional[bool] = None
    sync_batchnorm: bool = False
    use_distributed_sampler: bool = True
    reload_dataloaders_every_n_epochs: int = 0
    detect_anomaly: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RuntimeConfig:
    """Process-level settings applied before anything is built."""

    torch_threads: Optional[int] = None  # None: half the CPU cores per process on this node, at least 1
    matmul_precision: str = "high"  # torch.set_float32_matmul_precision: highest | high | medium
    offline: bool = True  # sets HF_HUB_OFFLINE=1 so nothing is downloaded at run time
    verbose: bool = False  # show library warnings and INFO lines a user cannot act on (also: sectorkit --verbose)


def register_schemas() -> None:
    """Store the schemas as ``_schema`` in their groups; each group's default.yaml extends it."""
    cs = ConfigStore.instance()
    cs.store(group="trainer", name="_schema", node=TrainerConfig)
    cs.store(group="runtime", name="_schema", node=RuntimeConfig)


def register_resolvers() -> None:
    """Config resolvers used by the core presets (``hparams_direction``: max → maximize, min → minimize)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("hparams_direction"):
        OmegaConf.register_new_resolver("hparams_direction", lambda mode: {"max": "maximize", "min": "minimize"}[mode])
