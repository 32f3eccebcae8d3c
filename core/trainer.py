"""Build the Lightning Trainer, its callbacks and loggers from config."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ProgressBar
from pytorch_lightning.loggers import Logger

from sectorkit.core.checkpoint import AtomicCheckpointIO
from sectorkit.core.errors import ConfigError


def resolve_precision(precision: Any, accelerator: str) -> Any:
    """``auto``: bf16-mixed on GPUs that support it, 16-mixed on older GPUs, 32-true otherwise."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_callbacks(cfg: DictConfig, enable_progress_bar: bool, has_logger: bool) -> list[Callback]:
    """Instantiate every non-null entry of ``cfg.callbacks`` that fits the trainer settings."""
    callbacks: list[Callback] = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        callback = instantiate(node)
        if isinstance(callback, ProgressBar) and not enable_progress_bar:
            continue
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            continue
        callbacks.append(callback)
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Instantiate every non-null entry of ``cfg.logger``; a logger whose package is missing is a ConfigError."""
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        try:
            loggers.append(instantiate(node))
        except InstantiationException as err:
            missing = err.__cause__ if isinstance(err.__cause__, ModuleNotFoundError) else None
            if missing is None:
                raise
            raise ConfigError(f"logger.{name}: {missing} (or choose another logger=...)") from None
    return loggers


def build_trainer(cfg: DictConfig, **overrides: Any) -> pl.Trainer:
    """A Trainer from ``cfg.trainer`` (+ ``overrides``), with the run's callbacks and loggers (none with
    ``logger=False``: a trainer that only scores inside a run that logs elsewhere)."""
    options: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    options.update(options.pop("extra", None) or {})
    options.update(overrides)
    options = {k: v for k, v in options.items() if v is not None}
    options["precision"] = resolve_precision(options.get("precision", "auto"), options.get("accelerator", "auto"))
    if isinstance(options.get("strategy"), dict):
        options["strategy"] = instantiate(options["strategy"])
    loggers = build_loggers(cfg) if options.pop("logger", True) is not False else []
    enable_progress_bar = options.get("enable_progress_bar", True)
    callbacks = build_callbacks(cfg, enable_progress_bar, bool(loggers))
    return pl.Trainer(
        plugins=[AtomicCheckpointIO()],
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=cfg.paths.output_dir,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        **options,
    )


def checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The trainer's ModelCheckpoint callback, if it has one."""
    return trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
