"""Safe checkpoint loading and rebuilding a model (and its data state) from a checkpoint."""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError, SectorkitError
from sectorkit.core.module import SectorModule
from sectorkit.core.registry import discover


def load_checkpoint(path: str | Path | None, allow_unsafe: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain containers only).

    A file that needs arbitrary unpickling is refused unless ``allow_unsafe`` is set: unpickling can run
    code, so it is only for files the user trusts.
    """
    if not path:
        raise ConfigError("ckpt_path is not set: give the checkpoint to use, e.g. ckpt_path=outputs/<domain>/runs/<run>/checkpoints/last.ckpt")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"ckpt_path: no such file {file}")
    try:
        return torch.load(file, map_location="cpu", weights_only=not allow_unsafe)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if refused is None:
            raise DataError(f"{file}: not a readable checkpoint (not a file written by torch.save)") from None
        raise DataError(
            f"{file}: the checkpoint holds objects beyond tensors and plain containers ({refused.group(1)}), so it was "
            "not unpickled; if you trust the file, pass allow_unsafe_checkpoint=true"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise DataError(f"{file}: not a readable checkpoint ({str(err).splitlines()[0]})") from None


log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, syncs it to disk and renames it into place,
    so a full disk or a killed process never leaves a truncated checkpoint where a resume would look for one.

    A full or read-only disk is one line naming the folder; the temporary file is removed.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise SectorkitError(f"{target.parent}: cannot write the checkpoint {target.name} ({err.strerror or err})") from None


def newest_readable(candidates: list[Path]) -> Path | None:
    """The newest of ``candidates`` that loads as a checkpoint; each unreadable one is skipped with a warning."""
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped, and said so
            log.warning("skipping %s: not a readable checkpoint (%s)", path, str(err).splitlines()[0] if str(err) else type(err).__name__)
            continue
        return path
    return None


def model_class(class_path: Any) -> type[SectorModule]:
    """The model class a checkpoint names, allowed only when it is a :class:`SectorModule` of a registered domain.

    The name is checked against the registered domains' packages before anything is imported, and the class
    before anything is called, so a crafted checkpoint cannot make sectorkit build an arbitrary object.
    """
    if not isinstance(class_path, str) or not class_path:
        raise DataError("the checkpoint was not written by a sectorkit model (no 'sectorkit_model_class' entry)")
    packages = [domain.package for domain in discover().values()]
    if not any(class_path.startswith(f"{package}.") for package in packages):
        raise DataError(f"the checkpoint names the class {class_path!r}, which is not a model of a registered domain "
                        f"({', '.join(packages)}); refused")
    module_name, _, class_name = class_path.rpartition(".")
    model_cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(model_cls, type) and issubclass(model_cls, SectorModule)):
        raise DataError(f"the checkpoint names {class_path!r}, which is not a sectorkit model class (SectorModule); refused")
    return model_cls


def model_from_checkpoint(checkpoint: dict[str, Any]) -> SectorModule:
    """Rebuild the model class recorded in the checkpoint with its saved hyper-parameters and weights."""
    model_cls = model_class(checkpoint.get("sectorkit_model_class"))
    model = model_cls(**checkpoint.get("hyper_parameters", {}))
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)
    return model.eval()


def restore_datamodule_state(datamodule: SectorDataModule, checkpoint: dict[str, Any]) -> None:
    """Load the fitted preprocessing that training saved in the checkpoint into ``datamodule``."""
    state = checkpoint.get(type(datamodule).__qualname__)
    if state:
        datamodule.load_state_dict(state)
