"""What a trained model carries besides its weights, so evaluate, predict and export need no flag repeated.

Every checkpoint of a training run holds a record: the domain, the model's name, the resolved data config it
was trained with (preset values, file path, column mapping, split settings, sizes, ...) and the versions that
wrote it. The fitted preprocessing itself travels in the model's buffers and the data module's state. A
checkpoint is rebuilt with the recorded data config, the user's ``data.<key>=...`` overrides on top (a new
``data.path``, say); an explicit ``data=<preset>`` starts from that preset instead.
"""

from __future__ import annotations

import platform
from importlib.metadata import version
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.registry import discover

RECORD_KEY = "sectorkit_run"


def run_record(cfg: DictConfig, model_name: str) -> dict[str, Any]:
    """The record of a training run (plain containers only: checkpoints load with ``weights_only=True``)."""
    return {
        "domain": str(cfg.domain),
        "model_name": model_name,
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "monitor": OmegaConf.to_container(cfg.monitor, resolve=True),
        "versions": {"sectorkit": version("sectorkit"), "torch": str(torch.__version__), "pytorch_lightning": str(pl.__version__),
                     "python": platform.python_version()},
    }


class RecordRun(pl.Callback):
    """Writes the run record into every checkpoint the trainer saves."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RECORD_KEY] = self.record


def checked_record(checkpoint: dict[str, Any], domain: str, source: str) -> dict[str, Any] | None:
    """The checkpoint's record, refused when it belongs to another domain; None for a checkpoint without one."""
    record = checkpoint.get(RECORD_KEY)
    if record is None:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("data"), dict):
        raise DataError(f"{source}: the checkpoint's run record is malformed (no data config)")
    if record.get("domain") != domain:
        raise ConfigError(f"{source}: the checkpoint was trained for domain {record.get('domain')!r}, not {domain!r}; "
                          f"use domain={record.get('domain')}")
    target = str(record["data"].get("_target_", ""))
    packages = [d.package for d in discover().values()]
    if not any(target.startswith(f"{package}.") for package in packages):
        raise DataError(f"{source}: the checkpoint's data config names {target!r}, not a data module of a registered domain; refused")
    cls = get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, SectorDataModule)):
        raise DataError(f"{source}: the checkpoint's data config names {target!r}, not a SectorDataModule; refused")
    return record


def data_config(cfg: DictConfig, record: dict[str, Any] | None, overrides: list[str]) -> DictConfig:
    """The data config to rebuild a checkpoint's data with: the recorded one plus the user's ``data.<key>``
    overrides (their values as the composed ``cfg.data`` holds them: typed and resolved), unless the user chose a
    ``data=<preset>`` or the checkpoint has no record: then ``cfg.data`` itself."""
    if record is None or any(o.startswith("data=") for o in overrides):
        return cfg.data
    merged = OmegaConf.create(record["data"])
    for override in overrides:
        key = override.lstrip("+").split("=", 1)[0]
        if key.startswith("data."):
            OmegaConf.update(merged, key.removeprefix("data."), OmegaConf.select(cfg, key), force_add=True)
    return merged
