"""Typed schemas for the core config groups, registered in Hydra's ConfigStore, and value ranges.

A typo or a wrongly typed value under ``trainer``, ``runtime`` or ``optimizer`` fails when the config is
composed, naming the key, instead of minutes into a run. A field may declare its valid range with
:func:`bounded` or its valid values with :func:`one_of`; :func:`check_ranges` checks every such field of a
composed config before anything is built (domains use both in their own schemas).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from sectorkit.core.errors import ConfigError


def bounded(default: Any, low: float | None = None, high: float | None = None, low_open: bool = False) -> Any:
    """A dataclass field whose value must lie in ``[low, high]`` (``(low, high]`` with ``low_open``); None passes."""
    return field(default=default, metadata={"range": (low, high, low_open)})


def one_of(default: str | None, *choices: str) -> Any:
    """A dataclass field whose value must be one of ``choices`` (None passes when the field is Optional)."""
    return field(default=default, metadata={"choices": choices})


def check_ranges(cfg: DictConfig, prefix: str = "") -> None:
    """Raise a one-line ConfigError for the first value outside the range or the choices its schema field declares."""
    schema = OmegaConf.get_type(cfg)
    declared = {f.name: f.metadata for f in dataclasses.fields(schema) if f.metadata} if dataclasses.is_dataclass(schema) else {}
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if path == "hydra" or OmegaConf.is_missing(cfg, key):
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            check_ranges(node, f"{path}.")
            continue
        if key not in declared:
            continue
        value = cfg[key]  # resolved here: only declared keys are, so run-time interpolations elsewhere stay untouched
        choices = declared[key].get("choices")
        if choices is not None:
            if value is not None and value not in choices:
                raise ConfigError(f"{path}={value!r}: expected one of {', '.join(choices)}")
            continue
        bounds = declared[key].get("range")
        if bounds is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high, low_open = bounds
            below = low is not None and (value <= low if low_open else value < low)
            if below or (high is not None and value > high) or (isinstance(value, float) and math.isnan(value)):
                lower = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
                upper = "" if high is None else f"<= {high:g}"
                raise ConfigError(f"{path}={value!r}: expected a value {' and '.join(p for p in (lower, upper) if p)}")


@dataclass
class RunKeys:
    """The top-level keys of ``conf/base.yaml`` every run reads (the groups have schemas of their own)."""

    task: str = one_of("train", "train", "evaluate", "predict", "export")
    seed: int = 42
    ckpt_path: Optional[str] = None
    allow_unsafe_checkpoint: bool = False
    format: str = one_of("onnx", "onnx", "torchscript")
    output: Optional[str] = None
    with_baselines: bool = True
    write_predictions: bool = True
    allow_any_target: bool = False


def check_run_keys(cfg: DictConfig) -> None:
    """Raise a one-line ConfigError for a top-level run key of the wrong type or outside its choices."""
    from omegaconf.errors import ValidationError

    names = [f.name for f in dataclasses.fields(RunKeys)]
    values = {name: cfg[name] for name in names if name in cfg}
    try:
        typed = OmegaConf.merge(OmegaConf.structured(RunKeys), values)
    except ValidationError as err:
        key = str(getattr(err, "full_key", "") or "")
        raise ConfigError(f"{key}={values.get(key)!r}: {str(err).splitlines()[0]}" if key else str(err).splitlines()[0]) from None
    check_ranges(typed)


# What a config may name in ``_target_`` (besides sectorkit and the registered domains): a shared experiment or
# data preset cannot make a run call an arbitrary function (``torch.load``, ``shutil.copyfile``, ...).
ALLOWED_TARGETS = ("torch.optim.", "pytorch_lightning.callbacks.", "pytorch_lightning.loggers.", "pytorch_lightning.strategies.",
                   "pytorch_lightning.profilers.", "lightning.pytorch.callbacks.", "lightning.pytorch.loggers.",
                   "lightning.pytorch.strategies.", "lightning.pytorch.profilers.", "optuna.samplers.", "optuna.pruners.")


def check_targets(cfg: DictConfig, packages: list[str], prefix: str = "") -> None:
    """Refuse a ``_target_`` outside sectorkit, the registered domains' ``packages`` and :data:`ALLOWED_TARGETS`
    (unless ``allow_any_target=true``). ``model.net`` may name any class: it is built only if it is a
    :class:`~sectorkit.core.network.Network` (checked before anything is called), so users can add networks of their own."""
    if not prefix and cfg.get("allow_any_target", False):
        return
    allowed = ("sectorkit.", *(f"{package}." for package in packages), *ALLOWED_TARGETS)
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if path == "hydra" or OmegaConf.is_missing(cfg, key):
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and path != "model.net":
            check_targets(node, packages, f"{path}.")
        elif key == "_target_" and not str(cfg[key]).startswith(allowed):
            raise ConfigError(f"{path}={cfg[key]!r}: not a target a config may name (sectorkit, the registered domains, "
                              "torch optimizers and schedulers, Lightning callbacks, loggers, strategies and profilers); "
                              "pass allow_any_target=true to allow it")


@dataclass
class DataConfig:
    """The arguments every :class:`~sectorkit.core.datamodule.SectorDataModule` takes; each domain's data schema
    extends it (and may redeclare a field to change its default)."""

    _target_: str = MISSING
    path: Optional[str] = None  # null: the domain's built-in sample
    batch_size: int = bounded(256, 1)
    eval_batch_size: Optional[int] = bounded(None, 1)  # null: batch_size
    num_workers: int = bounded(0, 0)
    pin_memory: Optional[bool] = None  # null: pinned when CUDA is available
    persistent_workers: bool = True
    seed: int = 0
    cache_dir: Optional[str] = None


@dataclass
class ModelConfig:
    """The arguments every :class:`~sectorkit.core.module.SectorModule` of a domain takes from its config: the
    module, its network node and the core options; each domain's model schema extends it."""

    _target_: str = MISSING
    net: Dict[str, Any] = field(default_factory=dict)  # _target_: a sectorkit.core.network.Network + its arguments
    compile: bool = False
    channels_last: bool = False


@dataclass
class TrainerConfig:
    """Arguments of ``pytorch_lightning.Trainer`` that sectorkit exposes; ``extra`` passes any other."""

    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = bounded(1, 1)
    strategy: Any = "auto"
    precision: Any = "auto"  # auto: bf16-mixed on GPUs that support it, 16-mixed on older GPUs, 32-true on CPU
    max_epochs: Optional[int] = bounded(10, -1)
    min_epochs: Optional[int] = bounded(1, 0)
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
    accumulate_grad_batches: int = bounded(1, 1)
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

    torch_threads: Optional[int] = bounded(None, 1)  # None: half the CPU cores per process on this node, at least 1
    matmul_precision: str = "high"  # torch.set_float32_matmul_precision: highest | high | medium
    offline: bool = True  # sets HF_HUB_OFFLINE=1 so nothing is downloaded at run time
    verbose: bool = False  # show library warnings and INFO lines a user cannot act on (also: sectorkit --verbose)


@dataclass
class OptimizerConfig:
    """A ``torch.optim`` optimizer, built by the module with its parameters (``_partial_``); the keys every preset
    shares are typed and bounded, the others (``betas``, ``momentum``, ``nesterov``, ...) pass through."""

    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = bounded(1e-3, 0.0, low_open=True)
    weight_decay: float = bounded(0.0, 0.0)


@dataclass
class SGDConfig(OptimizerConfig):
    """``torch.optim.SGD`` with momentum."""

    _target_: str = "torch.optim.SGD"
    momentum: float = bounded(0.0, 0.0)
    nesterov: bool = False


def register_schemas() -> None:
    """Store the schemas as ``_schema`` in their groups; each group's presets extend it."""
    cs = ConfigStore.instance()
    cs.store(group="trainer", name="_schema", node=TrainerConfig)
    cs.store(group="runtime", name="_schema", node=RuntimeConfig)
    cs.store(group="optimizer", name="_schema", node=OptimizerConfig)
    cs.store(group="optimizer", name="_schema_sgd", node=SGDConfig)


def register_resolvers() -> None:
    """Config resolvers used by the core presets (``hparams_direction``: max → maximize, min → minimize)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("hparams_direction"):
        OmegaConf.register_new_resolver("hparams_direction", lambda mode: {"max": "maximize", "min": "minimize"}[mode])
