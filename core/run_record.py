"""What a trained model carries besides its weights, so evaluate, predict and export need no flag repeated.

Every checkpoint of a training run holds a record: the domain, the model's name, the resolved data config it
was trained with (preset values, file path, column mapping, split settings, sizes, ...) and the versions that
wrote it. The fitted preprocessing itself travels in the model's buffers and the data module's state. A
checkpoint is rebuilt with the recorded data config, the user's ``data.<key>=...`` overrides on top (a new
``data.path``, say); an explicit ``data=<preset>`` starts from that preset instead.

The record also carries the model config and a fingerprint of the data config, so resuming a run
(``ckpt_path=last`` or a path) can check that the checkpoint was trained with the same domain, model and data
(:func:`record_differences`).
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.registry import discover

RECORD_KEY = "sectorkit_run"
LOADER_KEYS = ("num_workers", "pin_memory", "persistent_workers", "cache_dir")  # data keys that do not change the data


def run_record(cfg: DictConfig, model_name: str) -> dict[str, Any]:
    """The record of a training run (plain containers only: checkpoints load with ``weights_only=True``)."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return {
        "domain": str(cfg.domain),
        "model_name": model_name,
        "model": OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") is not None else None,
        "data_fingerprint": data_fingerprint(data),
        "data": data,
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
    if record is None or (any(o.startswith("data=") for o in overrides) and not cfg.get(PRESET_KEY)):
        return cfg.data
    merged = OmegaConf.create(record["data"])
    for override in overrides:
        key = override.lstrip("+").split("=", 1)[0]
        if key.startswith("data."):
            OmegaConf.update(merged, key.removeprefix("data."), OmegaConf.select(cfg, key), force_add=True)
    return merged


PRESET_KEY = "checkpoint_data_preset"  # set with the data=<preset> below: that preset was not the user's choice


def checkpoint_data_preset(domain: Any, task: str, overrides: list[str], record: dict[str, Any] | None = None) -> list[str]:
    """For evaluate/predict/export of a checkpoint with ``data.<key>=...`` overrides: the overrides that compose the
    data preset the checkpoint was trained with (the first of the domain's presets building the recorded data
    module), so the overrides are checked against that preset's keys (a crop-yield model's ``data.protocol``) rather
    than the default one's; none when the default preset already builds it, the user chose ``data=<preset>``, or
    the checkpoint cannot be read (the run then says why). ``record``: the checkpoint's run record when the caller
    has already read it (else it is read from ``ckpt_path``)."""
    from sectorkit.core.config import compose_config

    paths = [o.split("=", 1)[1] for o in overrides if o.startswith("ckpt_path=")]
    if (task not in ("evaluate", "predict", "export", "serve") or not paths or any(o.startswith("data=") for o in overrides)
            or not any(o.lstrip("+").startswith("data.") for o in overrides)):
        return []
    try:
        if record is None:
            record = torch.load(Path(paths[-1]).expanduser(), map_location="cpu", weights_only=True).get(RECORD_KEY)
        target = record["data"]["_target_"]
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is refused, with its reason, by the run itself
        return []
    if compose_config(domain, []).data.get("_target_") == target:
        return []
    for preset in (p for p in domain.options("data") if not p.startswith("_")):
        if compose_config(domain, [f"data={preset}"]).data.get("_target_") == target:
            return [f"data={preset}", f"+{PRESET_KEY}={preset}"]
    return []


def data_fingerprint(data: dict[str, Any]) -> str:
    """:func:`data_config_fingerprint` of a resolved data config given as a plain dict."""
    return data_config_fingerprint(OmegaConf.create({"data": data}))


def data_config_fingerprint(cfg: DictConfig, searched: Sequence[str] = ()) -> str:
    """A short hash of ``cfg.data`` resolved (loader-only keys and searched ``data.*`` keys left out): what a run
    record, a resume check and a sweep's study name identify the data by."""
    try:
        data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else {}
    except Exception:  # noqa: BLE001 - a value only a run can resolve: hash the config as written
        data = OmegaConf.to_container(cfg.data, resolve=False)
    for key in LOADER_KEYS:
        data.pop(key, None)
    for key in searched:
        if key.startswith("data."):
            _drop(data, key.removeprefix("data.").split("."))
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _drop(node: Any, path: list[str]) -> None:
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}.{key}").items()}
    return {prefix: node}


def _changed_keys(recorded: Any, current: Any, prefix: str, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: recorded -> current`` for each leaf that differs (at most three shown, then a count)."""
    old, new = _flat(recorded or {}, prefix), _flat(current or {}, prefix)
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k.rsplit(".", 1)[-1] not in ignore]
    shown = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:3]]
    return shown + ([f"{len(keys) - 3} more"] if len(keys) > 3 else [])


def record_differences(record: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between the run record of a checkpoint and that of the run about to resume it: the domain, the
    model (its config name and config) and the data (by fingerprint, the differing ``data.*`` keys named); empty
    when they match. A checkpoint without a record differs by having none."""
    if not isinstance(record, dict):
        return ["the checkpoint has no run record (not written by a sectorkit training run)"]
    if record.get("domain") != current["domain"]:
        return [f"domain {record.get('domain')!r}, not {current['domain']!r}"]
    out = []
    if record.get("model_name") != current["model_name"]:
        out.append(f"model {record.get('model_name')!r}, not {current['model_name']!r}")
    elif record.get("model") is not None and current.get("model") is not None and record["model"] != current["model"]:
        out.append("model config " + "; ".join(_changed_keys(record["model"], current["model"], "model")))
    recorded = record.get("data_fingerprint") or (data_fingerprint(record["data"]) if isinstance(record.get("data"), dict) else None)
    if recorded != current["data_fingerprint"]:
        changed = _changed_keys(record.get("data"), current["data"], "data", LOADER_KEYS)
        out.append(f"data (fingerprint {recorded} vs {current['data_fingerprint']}{': ' + '; '.join(changed) if changed else ''})")
    return out
