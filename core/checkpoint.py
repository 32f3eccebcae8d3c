"""Safe checkpoint loading and rebuilding a model (and its data state) from a checkpoint."""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError, SectorkitError
from sectorkit.core.module import SectorModule
from sectorkit.core.registry import discover
from sectorkit.core.run_record import RECORD_KEY, record_differences


def checkpoint_record(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file of ``path`` (a run folder: its best checkpoint; or a checkpoint file) and its run record,
    read with ``weights_only=True``; a DataError naming the file when there is none."""
    file = Path(path).expanduser()
    if file.is_dir():
        metrics_file = file / "metrics.json"
        if not metrics_file.is_file():
            raise DataError(f"{file}: not a run folder (no metrics.json); give the run folder or a checkpoint file")
        best = json.loads(metrics_file.read_text(encoding="utf-8")).get("checkpoint")
        if not best:
            raise DataError(f"{metrics_file}: the run recorded no best checkpoint; give a checkpoint file")
        file = Path(best)
    if not file.is_file():
        raise DataError(f"{file}: no such checkpoint file")
    checkpoint = load_checkpoint(file)  # an unreadable or unsafe file is a one-line DataError
    record = checkpoint.get(RECORD_KEY) if isinstance(checkpoint, dict) else None
    if not record:
        raise DataError(f"{file}: the checkpoint holds no run record (domain, data settings); it was not written by a sectorkit run")
    return file.resolve(), record


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
        raise DataError(f"{file}: {unpickling_refusal(str(err), _looks_pickled(file))}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise DataError(f"{file}: not a readable checkpoint ({str(err).splitlines()[0]})") from None
    except (KeyError, IndexError, ValueError):  # bytes the unpickler reads as instructions that make no sense
        raise DataError(f"{file}: not a readable checkpoint (not a file written by torch.save)") from None


def _looks_pickled(file: Path) -> bool:
    """Whether ``file`` is a zip archive (torch.save's format) or starts like a pickle (protocol 2+)."""
    import zipfile

    with open(file, "rb") as handle:
        return handle.read(1) == b"\x80" or zipfile.is_zipfile(file)


def unpickling_refusal(message: str, pickled: bool = True) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, from torch's wording (checked against torch 2.6-2.13):
    a global of a blocked module (``os``, ``subprocess``, ``builtins.eval``, ...: the file would run code), another
    global outside the allowed set, a pickle instruction the safe loader does not read, or not a pickle at all."""
    blocked = re.search(r"GLOBAL ([\w.]+) whose module ([\w.]+) is blocked", message)
    if blocked:
        return (f"the checkpoint would call {blocked.group(1)} when unpickled (module {blocked.group(2)} is blocked: loading it "
                "can run arbitrary code); refused, a model checkpoint never needs it")
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if unsupported:
        return (f"the checkpoint holds objects beyond tensors and plain containers ({unsupported.group(1)}), so it was not "
                "unpickled; if you trust the file, pass allow_unsafe_checkpoint=true")
    operand = re.search(r"Unsupported operand (\d+)", message)
    if operand and pickled:
        return (f"the checkpoint is a pickle the safe loader cannot read (pickle instruction {operand.group(1)}), so it was "
                "not unpickled; if you trust the file, pass allow_unsafe_checkpoint=true")
    return "not a readable checkpoint (not a file written by torch.save)"


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


def resume_checkpoint(path: str, current: dict[str, Any], candidates: list[Path], allow_unsafe: bool = False, runs: Path | None = None) -> Path:
    """The checkpoint a training run resumes, checked against ``current`` (the run record of the run about to start).

    ``path == "last"``: the newest readable of ``candidates`` (earlier runs' ``last.ckpt``) trained with the same
    domain, model and data; an unreadable file is skipped with a warning, an older run with other settings is passed
    over; none matching is a one-line error naming the newest run and what differs. An explicit ``path`` is
    refused for another domain or model (its weights would not fit) and resumed with a warning when only the data
    differs (or the file has no run record). Either way the run says which run it resumes.
    """
    if path != "last":
        file = Path(path).expanduser()
        checkpoint = load_checkpoint(file, allow_unsafe)
        differences = record_differences(checkpoint.get(RECORD_KEY), current)
        if any(d.startswith(("domain ", "model ")) for d in differences):
            raise ConfigError(f"ckpt_path={path}: cannot resume this checkpoint: it was trained with {'; '.join(differences)}")
        if differences:
            log.warning("ckpt_path=%s: resuming run %s although it was trained with other %s", path, _run_of(file), "; ".join(differences))
        _announce(file, checkpoint)
        return file
    refused: tuple[Path, list[str]] | None = None
    for file, checkpoint in _readable(candidates):
        differences = record_differences(checkpoint.get(RECORD_KEY) if isinstance(checkpoint, dict) else None, current)
        if not differences:
            _announce(file, checkpoint)
            return file
        refused = refused or (file, differences)
    if refused is None:
        raise ConfigError(f"ckpt_path=last: no earlier run of {current['domain']!r} with a readable checkpoints/last.ckpt"
                          + (f" under {runs}" if runs else ""))
    file, differences = refused
    raise ConfigError(f"ckpt_path=last: the newest run {_run_of(file)} ({file}) was trained with {'; '.join(differences)}; "
                      f"rerun with its settings, or pass ckpt_path={file} to resume it anyway")


def _run_of(checkpoint: Path) -> str:
    """The run folder of a run's checkpoint (``<run>/checkpoints/last.ckpt``), or the file itself."""
    return str(checkpoint.parents[1]) if checkpoint.parent.name == "checkpoints" else str(checkpoint)


def _announce(file: Path, checkpoint: dict[str, Any] | None = None) -> None:
    step = checkpoint.get("global_step") if checkpoint else None
    print(f"resuming run {_run_of(file)} from {file.name}" + (f" (step {step})" if step is not None else ""), flush=True)


def _readable(candidates: list[Path]) -> Iterator[tuple[Path, Any]]:
    """``(path, loaded checkpoint)`` for each of ``candidates`` that loads (weights only), newest first; each
    unreadable one is skipped with a warning."""
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is skipped, and said so
            log.warning("skipping %s: not a readable checkpoint (%s)", path, str(err).splitlines()[0] if str(err) else type(err).__name__)
            continue
        yield path, checkpoint


def newest_readable(candidates: list[Path]) -> Path | None:
    """The newest of ``candidates`` that loads as a checkpoint; each unreadable one is skipped with a warning."""
    return next((path for path, _ in _readable(candidates)), None)


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


RANDOM_KEY = "sectorkit_random_state"


def _loader_generators(trainer: pl.Trainer) -> list[torch.Generator]:
    """The generators that shuffle the training batches (the loader's, its sampler's, a batch sampler's sampler's)."""
    loader = trainer.train_dataloader
    if not isinstance(loader, torch.utils.data.DataLoader):
        return []
    found: list[torch.Generator] = []
    for owner in (loader, loader.sampler, getattr(loader.sampler, "sampler", None), getattr(loader.batch_sampler, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


class RandomState(pl.Callback):
    """Saves the random streams (torch, CUDA, numpy, Python and the training loader's shuffling generators) in every
    checkpoint and restores them when a run resumes, as Hugging Face's Trainer does: the resumed run draws the batches,
    negatives and dropout masks the uninterrupted run would have drawn from that checkpoint on, instead of the ones
    of a fresh seed."""

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        _, keys, position, has_gauss, gauss = np.random.get_state()
        checkpoint[RANDOM_KEY] = {
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "position": int(position), "has_gauss": int(has_gauss),
                      "gauss": float(gauss)},
            "python": random.getstate(), "loader": [g.get_state() for g in _loader_generators(trainer)],
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.pending = checkpoint.get(RANDOM_KEY)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self.pending = self.pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        numpy = state["numpy"]
        np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"], numpy["gauss"]))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        generators = _loader_generators(trainer)
        if len(generators) == len(state["loader"]):
            for generator, saved in zip(generators, state["loader"]):
                generator.set_state(saved)
        else:
            log.warning("resuming: the training loader has %d shuffling generator(s), the checkpoint %d; batches are drawn afresh",
                        len(generators), len(state["loader"]))
