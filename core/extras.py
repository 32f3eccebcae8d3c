"""Optional features and the extra that installs each: a run that needs a missing one stops before any data is
prepared, with one line naming the ``pip install "sectorkit[<extra>]"`` that adds it."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from omegaconf import DictConfig
from sectorkit.core.errors import ConfigError

# What each extra of pyproject.toml adds: (feature, modules any one of which suffices per group).
LOGGER_EXTRAS = {  # logger class name -> (extra, modules: any one of them)
    "TensorBoardLogger": ("tensorboard", ("tensorboard", "tensorboardX")),
    "MLFlowLogger": ("mlflow", ("mlflow",)),
}
ONNX_MODULES = ("onnx", "onnxruntime")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(feature: str, extra: str, modules: Iterable[str], any_of: bool = False) -> None:
    """Raise a one-line ConfigError naming ``extra`` when ``modules`` (all, or ``any_of`` them) are missing."""
    modules = list(modules)
    missing = [m for m in modules if not installed(m)]
    if (any_of and len(missing) < len(modules)) or (not any_of and not missing):
        return
    raise ConfigError(f"{feature} needs the {' or '.join(missing) if any_of else ', '.join(missing)} package: "
                      f'pip install "sectorkit[{extra}]"')


def check_extras(cfg: DictConfig) -> None:
    """Check the optional packages this run's config needs: its loggers, and ONNX for ``export format=onnx``."""
    for name, node in (cfg.get("logger") or {}).items():
        target = str(node.get("_target_", "")) if isinstance(node, DictConfig) else ""
        extra = LOGGER_EXTRAS.get(target.rsplit(".", 1)[-1])
        if extra is not None:
            require(f"logger={name}", extra[0], extra[1], any_of=True)
    if cfg.get("task") == "export" and str(cfg.get("format", "")) == "onnx":
        require("export format=onnx", "export", ONNX_MODULES)
