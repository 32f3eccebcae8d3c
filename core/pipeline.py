"""The four runs behind the CLI: train, evaluate, predict and export, for any registered domain.

``train``: seed → datamodule → model → Trainer.fit → test with the best checkpoint → baselines on the same
test split → predictions, metrics.json and report.md in the run folder. Only global rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
from rich.console import Console
from rich.markup import escape
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sectorkit.core import __version__
from sectorkit.core.baselines import BaselineResult
from sectorkit.core.checkpoint import RandomState, load_checkpoint, model_from_checkpoint, restore_datamodule_state, resume_checkpoint
from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, SectorkitError
from sectorkit.core.export import export_model
from sectorkit.core.extras import check_extras
from sectorkit.core.progress import phase as progress_phase
from sectorkit.core.io import atomic_write_json, atomic_write_table
from sectorkit.core.module import SectorModule
from sectorkit.core.network import Network, network_class
from sectorkit.core.registry import Domain, discover, get_domain
from sectorkit.core.reporting import RunContext, primary_metric_plot, write_report
from sectorkit.core.run_lock import claim_run_folder
from sectorkit.core.run_record import RecordRun, checked_record, data_config, run_record
from sectorkit.core.runtime import DDP_JOB_ENV, configure_runtime
from sectorkit.core.schema import check_ranges, check_run_keys, check_targets
from sectorkit.core.trainer import build_trainer, checkpoint_callback
from sectorkit.core.verdict import judge, verdict_table

log = logging.getLogger(__name__)

def run(cfg: DictConfig) -> float | None:
    """Run ``cfg.task``; ``train`` returns the best validation score (what a sweep optimises)."""
    tasks = {"train": run_train, "evaluate": run_evaluate, "predict": run_predict, "export": run_export}
    if cfg.task not in tasks:
        raise ConfigError(f"task={cfg.task!r}; valid choices: {', '.join(tasks)}")
    return tasks[cfg.task](cfg)


# --- building blocks ----------------------------------------------------------------------------------
def run_dir(cfg: DictConfig) -> Path:
    """This run's output folder (``paths.output_dir``), created if needed."""
    folder = Path(cfg.paths.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start(cfg: DictConfig) -> Domain:
    """Apply runtime settings, seed every generator and return the run's domain."""
    domain = get_domain(cfg.get("domain"))
    check_run_keys(cfg)
    check_ranges(cfg)
    check_targets(cfg, [d.package for d in discover().values()])
    check_extras(cfg)  # a logger or export format whose optional package is missing: one line, before any data
    configure_runtime(cfg.runtime, cfg.trainer)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    return domain


def build_datamodule(cfg: DictConfig, network: type[Network] | None = None) -> SectorDataModule:
    """The datamodule of ``cfg.data``, told which network it feeds (its declared input type and needs): by
    default the class ``cfg.model.net`` names; for a checkpoint, the class its model was built with."""
    return instantiate_or_explain(cfg.data, network=network or network_class(cfg.model.get("net"), "model.net"))


def instantiate_or_explain(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, re-raising a sectorkit error from the constructor as itself (one line) instead
    of Hydra's wrapped, multi-line message."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, SectorkitError):
            raise err.__cause__ from None
        raise


def build_model(cfg: DictConfig, datamodule: SectorDataModule) -> SectorModule:
    """The model of ``cfg.model`` with the data-dependent sizes from ``datamodule`` (after ``setup('fit')``),
    handed the data state it needs before fitting."""
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True) if cfg.get("optimizer") else None
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model = instantiate_or_explain(model_cfg, **datamodule.model_kwargs(), optimizer=optimizer, scheduler=scheduler, _recursive_=False)
    model.prepare_fit(datamodule.training_state())
    return model


def model_name(cfg: DictConfig) -> str:
    """The short name of the run's model config (``model=<name>``), or its class name."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("model")
        if choice:
            return str(choice)
    return str(cfg.model.get("_target_", "model")).rsplit(".", 1)[-1]


def resolve_resume_path(cfg: DictConfig) -> str | None:
    """``ckpt_path`` for training: ``last`` means the newest readable ``last.ckpt`` of this domain's earlier runs
    trained with the same model and data (an unreadable one, e.g. cut short by a full disk, is skipped with a
    warning); an explicit path is checked for its domain and model. See :func:`resume_checkpoint`."""
    path = cfg.get("ckpt_path")
    if not path:
        return path
    runs = Path(cfg.paths.log_dir) / str(cfg.domain) / "runs"
    current = Path(cfg.paths.output_dir).resolve()
    candidates = [p for p in runs.glob("*/checkpoints/last.ckpt") if p.parents[1].resolve() != current] if path == "last" else []
    return str(resume_checkpoint(str(path), run_record(cfg, model_name(cfg)), candidates, bool(cfg.allow_unsafe_checkpoint), runs))


def announce_ddp_job(cfg: DictConfig) -> None:
    """Tell DDP worker processes (started by Lightning with this environment) which job to join.

    The CLI of a worker with ``LOCAL_RANK > 0`` reads this and composes the same job into the same run
    folder, so a DDP run never scatters one folder per rank, in single runs and sweeps alike.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or OmegaConf.is_missing(HydraConfig.get().runtime, "output_dir"):
        return  # not a run started by the CLI (a config composed in Python): no worker will look for the job
    hydra_cfg = HydraConfig.get()
    searchpath = [o for o in hydra_cfg.overrides.hydra if o.startswith("hydra.searchpath=")][-1:]  # the user's config folders
    job = {"overrides": [*hydra_cfg.overrides.task, *searchpath], "run_dir": str(hydra_cfg.runtime.output_dir), "domain": str(cfg.domain)}
    os.environ[DDP_JOB_ENV] = json.dumps(job)


def collect_predictions(model: SectorModule, datamodule: SectorDataModule, stage: str) -> tuple[list[Any], pd.DataFrame]:
    """Run ``predict_step`` over the stage's loader on one process: the raw outputs and the domain's table."""
    loader = datamodule.predict_dataloader() if stage == "predict" else datamodule.test_dataloader()
    outputs = model.predict_loader(loader)
    return outputs, datamodule.predict_frame(outputs, stage)


def fit_baselines(domain: Domain, datamodule: SectorDataModule, cfg: DictConfig) -> tuple[dict[str, BaselineResult], dict[str, str]]:
    """The domain's baselines on the run's splits, and the error of a failure (the run's results are kept)."""
    if not domain.baselines or not cfg.get("with_baselines", True):
        return {}, {}
    try:
        return domain.baselines(datamodule, cfg), {}
    except Exception as err:  # noqa: BLE001 - a failing baseline must never cost the model's results
        log.warning("the baselines failed (%s: %s); the model's results are kept", type(err).__name__, err)
        return {}, {"baselines": f"{type(err).__name__}: {err}"}


def strip_prefix(values: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{'test/ap': tensor(0.7)}`` → ``{'ap': 0.7}``."""
    return {k.removeprefix(prefix): float(v) for k, v in values.items() if k.startswith(prefix)}


def finish_run(cfg: DictConfig, domain: Domain, datamodule: SectorDataModule, model: SectorModule, trainer: pl.Trainer | None,
               test: dict[str, float], extra: dict[str, Any], name: str) -> dict[str, Any]:
    """Predictions, baselines, metrics.json and report.md for a tested model (global rank 0 only), each phase
    shown while it runs; the model's metrics are written first, so no later failure can cost them."""
    folder = run_dir(cfg)
    console = Console()
    smoke = bool(trainer is not None and trainer.fast_dev_run)
    metrics: dict[str, Any] = {
        "domain": domain.name,
        "model_name": name,
        "primary_metric": str(cfg.monitor.metric),
        "mode": str(cfg.monitor.mode),
        "test": test,
        "baselines": {},
        **extra,
        **({"smoke_run": "debug=fast_dev_run: one batch through every step, to check the wiring; not a result"} if smoke else {}),
        "run_dir": str(folder),
    }
    decisions = model.decisions()
    if decisions:
        metrics["decisions"] = decisions
    atomic_write_json(folder / "metrics.json", metrics)
    with phase(console, "predictions on the test split"):
        outputs, table = collect_predictions(model, datamodule, "test")
        if cfg.get("write_predictions", True):
            atomic_write_table(table, folder / "predictions.csv")
            metrics["predictions"] = str(folder / "predictions.csv")
    with phase(console, "baselines"):
        baselines, failures = fit_baselines(domain, datamodule, cfg)
    metrics["baselines"] = {name: result.metrics for name, result in baselines.items()}
    if failures:
        metrics["failures"] = failures
    verdict = judge(metrics)
    text = f"smoke run, not a result: {verdict.text}" if smoke else verdict.text
    metrics["verdict"] = {"text": text, "best_baseline": verdict.best_baseline, "margin": verdict.margin}
    atomic_write_json(folder / "metrics.json", metrics)
    ctx = RunContext(folder, cfg, datamodule, model, metrics, trainer, predictions=table, outputs=outputs, baselines=baselines)
    with phase(console, "report"):
        sections = [s for s in [primary_metric_plot(ctx)] if s is not None]
        try:
            sections += domain.report(ctx) if domain.report else []
        except Exception as err:  # noqa: BLE001 - a failing figure must never cost the run's results
            log.warning("the report's domain sections failed (%s: %s); metrics and predictions are kept", type(err).__name__, err)
            metrics.setdefault("failures", {})["report"] = f"{type(err).__name__}: {err}"
        breakdowns = {key: value for section in sections for key, value in section.metrics.items()}
        if breakdowns:
            metrics["breakdowns"] = breakdowns
        metrics["report"] = str(write_report(ctx, sections))
    atomic_write_json(folder / "metrics.json", metrics)
    console.print(verdict_table(metrics))
    console.print(f"[bold]{escape(text)}[/bold]")
    for warning in metrics.get("warnings", []):  # from the report's sections: what undercuts the verdict
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(str(warning))}", soft_wrap=True)
    for key, value in metrics.get("decisions", {}).items():
        console.print(escape(f"{key}: {value}"), soft_wrap=True)
    for step, error in metrics.get("failures", {}).items():
        console.print(f"[red]{escape(str(step))} failed[/red]: {escape(str(error))} (recorded in metrics.json and report.md)", soft_wrap=True)
    console.print(escape(f"metrics: {folder / 'metrics.json'} | report: {metrics['report']}"), soft_wrap=True)
    return metrics


def phase(console: Console, name: str) -> AbstractContextManager[None]:
    """Show a spinner while a phase runs and one line with its duration when it ends (:mod:`sectorkit.core.progress`)."""
    return progress_phase(name, console)


# --- the runs -------------------------------------------------------------------------------------------
def run_train(cfg: DictConfig) -> float | None:
    """Fit, test with the best checkpoint, evaluate baselines and write the run's outputs (the run folder is
    claimed for the whole run: a second run into it stops at once)."""
    with claim_run_folder(Path(cfg.paths.output_dir)):
        if cfg.get("auto") is not None:  # model=auto: its candidates have run; choose one, ship and evaluate it (core/auto.py)
            from sectorkit.core.auto import ship

            return ship(cfg, run_evaluate, load_for_inference)
        return train(cfg)


def train(cfg: DictConfig) -> float | None:
    """The body of :func:`run_train`."""
    started = time.perf_counter()
    domain = start(cfg)
    resume = resolve_resume_path(cfg)
    if resume:
        load_checkpoint(resume, bool(cfg.allow_unsafe_checkpoint))  # refuse unsafe files before Lightning reads them
    with progress_phase("preparing the data"):
        datamodule = build_datamodule(cfg)
        datamodule.prepare_data()
        datamodule.setup("fit")
    model = build_model(cfg, datamodule)
    trainer = build_trainer(cfg)
    trainer.callbacks.append(RecordRun(run_record(cfg, model_name(cfg))))
    trainer.callbacks.append(RandomState())  # a resumed run continues the random streams of the run it resumes
    announce_ddp_job(cfg)
    weights_only = not cfg.allow_unsafe_checkpoint
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=weights_only)

    checkpoint = checkpoint_callback(trainer)
    best_path = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    tested = trainer.test(model, datamodule=datamodule, ckpt_path=best_path, verbose=False, weights_only=weights_only)
    monitor = f"val/{cfg.monitor.metric}"
    best_score = checkpoint.best_model_score if checkpoint and checkpoint.best_model_score is not None else trainer.callback_metrics.get(monitor)
    score = float(best_score) if best_score is not None else None
    if not trainer.is_global_zero:
        return score
    extra = {
        "best_val": score,
        "checkpoint": best_path,
        "last_checkpoint": str(Path(checkpoint.dirpath) / "last.ckpt") if checkpoint and checkpoint.save_last else None,
        "resumed_from": resume,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "seed": int(cfg.seed),
        "torch_threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    finish_run(cfg, domain, datamodule, model, trainer, strip_prefix(tested[0] if tested else {}, "test/"), extra, model_name(cfg))
    return score


def user_overrides() -> list[str]:
    """The overrides the user gave on the command line (none outside a CLI run)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


@dataclass(frozen=True)
class Inference:
    """A checkpoint's model with what rebuilds its data: the data config it was trained with (the user's ``data.*``
    overrides on top), the network class the data feeds and the checkpoint's entries besides the weights (the
    fitted data state among them)."""

    domain: Domain
    model: SectorModule
    data_cfg: DictConfig
    network: type[Network]
    entries: dict[str, Any]
    name: str

    def datamodule(self, **kwargs: Any) -> SectorDataModule:
        """A data module of ``data_cfg`` (``kwargs`` on top: another ``path``, say) carrying the fitted preprocessing."""
        datamodule = instantiate_or_explain(self.data_cfg, network=self.network, **kwargs)
        restore_datamodule_state(datamodule, self.entries)
        return datamodule


def prepare_inference(cfg: DictConfig, overrides: list[str] | None = None) -> Inference:
    """Read ``ckpt_path`` safely (weights only; registered-domain classes only) and rebuild its model; ``overrides``:
    the user's (default: the command line's)."""
    domain = start(cfg)
    checkpoint = load_checkpoint(cfg.get("ckpt_path"), bool(cfg.allow_unsafe_checkpoint))
    record = checked_record(checkpoint, domain.name, str(cfg.ckpt_path))
    if record and record.get("monitor"):
        with open_dict(cfg):  # the primary metric the model was trained for (a yield model's nrmse, say)
            cfg.monitor = record["monitor"]
    model = model_from_checkpoint(checkpoint)
    network = network_class(model.hparams.get("net"), "the checkpoint's net")
    data_cfg = data_config(cfg, record, user_overrides() if overrides is None else overrides)
    entries = {key: value for key, value in checkpoint.items() if key not in ("state_dict", "optimizer_states")}
    return Inference(domain, model, data_cfg, network, entries, record["model_name"] if record else model_name(cfg))


def load_for_inference(cfg: DictConfig, stage: str) -> tuple[Domain, SectorModule, SectorDataModule, str]:
    """The checkpoint's model and a datamodule rebuilt from the data config the checkpoint was trained with (the
    user's ``data.*`` overrides on top), carrying the checkpoint's fitted preprocessing; and the model's name."""
    inference = prepare_inference(cfg)
    with progress_phase("preparing the data"):
        datamodule = inference.datamodule()
        datamodule.prepare_data()
        datamodule.setup(stage)
    return inference.domain, inference.model, datamodule, inference.name


def run_evaluate(cfg: DictConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Test metrics, baselines and report for ``ckpt_path`` on the configured data's test split (``extra``: more
    entries for metrics.json, e.g. model=auto's candidates); returns the run's metrics."""
    domain, model, datamodule, name = load_for_inference(cfg, "fit")
    trainer = build_trainer(cfg, devices=1, num_nodes=1, strategy="auto")
    tested = trainer.test(model, datamodule=datamodule, verbose=False)
    extra = {"checkpoint": str(cfg.ckpt_path), "seed": int(cfg.seed), **(extra or {})}
    return finish_run(cfg, domain, datamodule, model, trainer, strip_prefix(tested[0], "test/"), extra, name)


def run_predict(cfg: DictConfig) -> None:
    """Predictions of ``ckpt_path`` for ``data.path`` (or the built-in sample's test split), written to a table;
    the domain's figures of them (forecast plots, heatmaps) go to ``<output stem>_plots/`` beside it."""
    domain, model, datamodule, _ = load_for_inference(cfg, "predict")
    output = Path(cfg.output) if cfg.get("output") else run_dir(cfg) / "predictions.csv"
    outputs, table = collect_predictions(model, datamodule, "predict")
    atomic_write_table(table, output)
    print(f"{len(table)} rows → {output}")
    if domain.report:
        plots = output.parent / f"{output.stem}_plots"
        ctx = RunContext(output.parent, cfg, datamodule, model, {}, stage="predict", predictions=table, outputs=outputs, plots_dir=plots)
        domain.report(ctx)


def run_export(cfg: DictConfig) -> None:
    """Export ``ckpt_path`` to ONNX or TorchScript and check its outputs against the PyTorch model."""
    domain, model, datamodule, name = load_for_inference(cfg, "test")
    suffix = {"onnx": ".onnx", "torchscript": ".pt"}.get(str(cfg.format))
    if suffix is None:
        raise ConfigError(f"format={cfg.format!r}; valid choices: onnx, torchscript")
    output = Path(cfg.output) if cfg.get("output") else run_dir(cfg) / f"model{suffix}"
    batch = datamodule.example_batch()
    graph = datamodule.export_graph(model.eval().cpu(), batch)  # the raw-input graph, where preprocessing is row-wise
    metadata = {"domain": domain.name, "model_name": name, "sectorkit_version": __version__, "decisions": model.decisions(),
                "input_contract": datamodule.export_contract()}
    report = export_model(model, batch, output, str(cfg.format), metadata, graph=graph)
    atomic_write_json(output.with_suffix(".json"), report)
    print(f"{cfg.format} → {output} (parity: max abs difference {report['max_abs_diff']:.2e})")
