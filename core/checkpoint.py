"""Safe checkpoint loading and rebuilding a model (and its data state) from a checkpoint."""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError
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
