"""Sweeps: an Optuna search (``hparams_search=optuna``) and Hydra's grid multirun (``-m key=a,b``).

An Optuna search runs in this process, one trial after another: each trial is an ordinary training run
composed by Hydra with the sampled values, in ``<sweep dir>/<trial number>/``, and its objective is the run's
best validation score (what :func:`sectorkit.core.pipeline.run` returns; test metrics are never read). A
:class:`PruningCallback` reports ``val/<monitor.metric>`` after every validation epoch and stops the run when
the pruner says so. The study lives in plain Optuna storage (SQLite under ``outputs/``), named after the
domain, model, data (preset and a hash of its resolved config), experiment and metric, so a stopped sweep
resumes and a sweep on other data starts its own study.

Both kinds end with one table over their jobs and the best configuration as overrides, also written to
``<sweep dir>/sweep_summary.json`` and ``.md``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sectorkit.core.errors import ConfigError, SectorkitError
from sectorkit.core.io import atomic_write_json, atomic_write_text
from sectorkit.core.module import plain_container
from sectorkit.core.run_record import data_config_fingerprint

if TYPE_CHECKING:
    import optuna
    from sectorkit.core.registry import Domain

SEARCH_GROUP = "hparams_search"
SPACE_DIR = "space"  # conf/hparams_search/space/<domain>.yaml: the domain's search space kept in core
DOMAIN_SPACE_KEY = "search_space"  # a domain's own space in its config: {params: {...}, models: {<model>: {...}}}
PRUNING_CALLBACK = "optuna_pruning"
TYPES = ("float", "int", "categorical")


def requested(overrides: Sequence[str]) -> bool:
    """Whether the overrides choose an Optuna search (``hparams_search=<preset>``)."""
    values = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith(f"{SEARCH_GROUP}=")]
    return bool(values) and values[-1] not in ("null", "")


# --- the search space -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimension:
    """One searched key: a float or int range (optionally on a log scale or with a step) or a list of choices."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    @classmethod
    def from_entry(cls, key: str, entry: Any, where: str) -> Dimension:
        """A dimension from a config entry ``{type, low, high, log, step, choices}``; ConfigError naming ``where``."""
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: {key}: expected {{type: float|int|categorical, ...}}, got {entry!r}")
        unknown = set(entry) - {"type", "low", "high", "log", "step", "choices"}
        if unknown:
            raise ConfigError(f"{where}: {key}: unknown field(s) {', '.join(sorted(unknown))}; valid: type, low, high, log, step, choices")
        kind = entry.get("type")
        if kind not in TYPES:
            raise ConfigError(f"{where}: {key}: type={kind!r}; valid choices: {', '.join(TYPES)}")
        if kind == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: {key}: a categorical entry needs a non-empty list of choices")
            return cls(key, kind, choices=tuple(choices))
        low, high, log, step = entry.get("low"), entry.get("high"), bool(entry.get("log", False)), entry.get("step")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise ConfigError(f"{where}: {key}: a {kind} entry needs numbers low and high, got low={low!r} high={high!r}")
        if low >= high:
            raise ConfigError(f"{where}: {key}: low ({low}) must be below high ({high})")
        if log and low <= 0:
            raise ConfigError(f"{where}: {key}: a log scale needs low > 0, got {low}")
        if log and step is not None:
            raise ConfigError(f"{where}: {key}: choose a log scale or a step, not both")
        if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
            raise ConfigError(f"{where}: {key}: an int entry needs whole numbers low, high and step")
        return cls(key, kind, low, high, log, step)

    @classmethod
    def from_override(cls, key: str, value: Any) -> Dimension:
        """A dimension from a Hydra sweep value on the command line: ``interval(a,b)`` (float; ``tag(log, ...)``
        for a log scale, ``tag(int, ...)`` for whole numbers), ``range(a,b[,step])`` or ``choice(...)`` / ``a,b``."""
        from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

        where = "the command line"
        if isinstance(value, IntervalSweep):
            kind = "int" if "int" in value.tags else "float"
            low, high = (int(value.start), int(value.end)) if kind == "int" else (value.start, value.end)
            return cls.from_entry(key, {"type": kind, "low": low, "high": high, "log": "log" in value.tags}, where)
        if isinstance(value, RangeSweep):
            values = list(range(int(value.start), int(value.stop), int(value.step))) if all(
                float(v).is_integer() for v in (value.start, value.stop, value.step)) else None
            if values and len(values) > 1:
                return cls.from_entry(key, {"type": "int", "low": values[0], "high": values[-1], "step": int(value.step)}, where)
            raise ConfigError(f"{key}=range(...): an Optuna search takes whole-number ranges with two or more values; "
                              "use interval(a,b) for a float range")
        if isinstance(value, ChoiceSweep):
            return cls.from_entry(key, {"type": "categorical", "choices": list(value.list)}, where)
        raise ConfigError(f"{key}: an Optuna search takes interval(...), range(...) or choice(...) / a,b on the command line")

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution; list choices are stored as their override text (``[64,32]``)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "categorical":
            return CategoricalDistribution([_stored_choice(c) for c in self.choices])
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def override(self, sampled: Any) -> str:
        """The Hydra override that sets this key to a value sampled from :meth:`distribution`."""
        if self.type == "categorical":
            sampled = self.choices[self.distribution().to_internal_repr(sampled)]
        return f"{self.key}={override_value(sampled)}"

    def describe(self) -> str:
        if self.type == "categorical":
            return f"one of {', '.join(override_value(c) for c in self.choices)}"
        scale = ", log scale" if self.log else f", step {self.step}" if self.step else ""
        return f"{self.type} in [{self.low:g}, {self.high:g}]{scale}"


def _stored_choice(choice: Any) -> Any:
    """A categorical choice as Optuna can store it: numbers, strings, booleans and None as they are, lists and
    dicts as their override text."""
    return override_value(choice) if isinstance(choice, (list, tuple, dict)) else choice


def override_value(value: Any) -> str:
    """``value`` written in Hydra's override grammar (floats at full precision, so a rerun gets the same value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return f"[{','.join(override_value(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][\w./@-]*", text) and text.lower() not in ("null", "true", "false", "nan", "inf"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def search_space(cfg: DictConfig, model: str, domain: Domain, cli: dict[str, Dimension], fixed_keys: set[str]) -> list[Dimension]:
    """The searched dimensions, later entries winning: ``sweep.search_space``, then the domain's space kept in
    core (``conf/hparams_search/space/<domain>.yaml``), then the domain's own ``search_space`` key (``params``
    for every model, ``models.<model>`` for one), then the command line's sweep values. A null entry drops a
    key, and so does a fixed value on the command line. Every key must exist in the composed config."""
    from sectorkit.core.config import CORE_CONF_DIR

    entries: dict[str, tuple[Any, str]] = {}

    def add(mapping: Any, where: str) -> None:
        for key, entry in (mapping or {}).items():
            entries[str(key)] = (entry, where)

    add(plain_container(cfg.sweep.get("search_space")), "sweep.search_space")
    core_file = CORE_CONF_DIR / SEARCH_GROUP / SPACE_DIR / f"{domain.name}.yaml"
    sources = [(plain_container(OmegaConf.load(core_file)), str(core_file))] if core_file.is_file() else []
    if cfg.get(DOMAIN_SPACE_KEY) is not None:
        sources.append((plain_container(cfg[DOMAIN_SPACE_KEY]), DOMAIN_SPACE_KEY))
    for space, where in sources:
        if not isinstance(space, dict) or set(space) - {"params", "models"}:
            raise ConfigError(f"{where}: expected the keys params (every model) and models (per model name)")
        add(space.get("params"), f"{where} params")
        add((space.get("models") or {}).get(model), f"{where} models.{model}")
    dimensions = {key: Dimension.from_entry(key, entry, where) for key, (entry, where) in entries.items() if entry is not None}
    dimensions.update(cli)
    for key in fixed_keys & set(dimensions):
        if key not in cli:
            del dimensions[key]
    for key in dimensions:
        node = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        if node is _ABSENT:
            if key in cli:
                raise ConfigError(f"{key}: not a key of this config (model={model}); check the spelling")
            raise ConfigError(f"{entries[key][1]}: {key} is not a key of this config (model={model}); fix the name or drop it "
                              f"with {key}: null")
        if isinstance(node, DictConfig):
            raise ConfigError(f"{key} is a config section; search one of its keys (e.g. {key}.<name>)")
    return list(dimensions.values())


_ABSENT = object()


# --- overrides --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchOverrides:
    """The command line of a search split into what every trial shares and the keys searched from it."""

    fixed: list[str]  # composed once for the sweep settings; includes hparams_search and sweep.*
    searched: dict[str, Dimension]

    @property
    def trial_base(self) -> list[str]:
        """What every trial's run gets: the fixed overrides less the sweep's own (its runs are ordinary runs)."""
        return [o for o in self.fixed if not _is_sweep_setting(o)]

    @property
    def fixed_keys(self) -> set[str]:
        return {o.lstrip("+~").split("=", 1)[0] for o in self.fixed}


def _is_sweep_setting(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key == SEARCH_GROUP or key == "sweep" or key.startswith(("sweep.", "hydra.sweep.", "hydra.run.", "hydra.mode"))


def split_overrides(domain: Domain, overrides: Sequence[str]) -> SearchOverrides:
    """Separate sweep values (``key=interval(...)``, ``key=a,b``) from fixed overrides; refuse what a search
    cannot take (a sweep over a config group, the old ``hydra.sweeper.*`` settings)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from sectorkit.core.config import group_options, user_searchpath

    launcher = [o for o in overrides if o.startswith("launcher=") and o != "launcher=null"]
    if launcher:
        raise ConfigError(f"{launcher[-1]}: a search runs its trials in this process, one after another; submit the whole "
                          "sectorkit command as one job instead (launchers run grid sweeps)")
    moved = [o for o in overrides if o.lstrip("+~").startswith("hydra.sweeper.")]
    if moved:
        key = moved[0].lstrip("+~").split("=", 1)[0]
        raise ConfigError(f"{key}: the Optuna settings are now sweep.* keys (sweep.n_trials=20, sweep.sampler=random, "
                          "sweep.pruner=none, ...); searched values are key=interval(a,b) or key=a,b (docs/sweeps.md)")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(f"cannot parse the overrides: {str(err).splitlines()[0]}") from None
    searchpath = user_searchpath(overrides)
    fixed: list[str] = []
    searched: dict[str, Dimension] = {}
    for override in parsed:
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        key = override.key_or_group
        if group_options(domain, key, searchpath) is not None or key == "domain":
            raise ConfigError(f"{override.input_line}: an Optuna search keeps one {key}; run one search per {key}, or a grid "
                              f"sweep without {SEARCH_GROUP}")
        if key.startswith(("hydra.", "sweep.")):
            raise ConfigError(f"{override.input_line}: {key} takes one value in a search")
        searched[key] = Dimension.from_override(key, override.value())
    return SearchOverrides(fixed, searched)


# --- study identity ---------------------------------------------------------------------------------------
def default_study_name(cfg: DictConfig, searched: Sequence[str] = ()) -> str:
    """``<domain>/<model>/<data>.<data hash>/<experiment>/<metric>`` (``-`` for no experiment)."""
    choices = cfg.hydra.runtime.choices
    return "/".join([str(cfg.domain), str(choices.get("model") or "-"), f"{choices.get('data') or '-'}.{data_config_fingerprint(cfg, searched)}",
                     str(choices.get("experiment") or "-"), str(cfg.monitor.metric)])


# --- the pruning callback ---------------------------------------------------------------------------------
_TRIALS: dict[Path, optuna.trial.Trial] = {}


@contextmanager
def trial_in(run_dir: Path, trial: optuna.trial.Trial) -> Iterator[None]:
    """Make ``trial`` the trial of the run in ``run_dir`` while the block runs (for its :class:`PruningCallback`)."""
    key = run_dir.resolve()
    _TRIALS[key] = trial
    try:
        yield
    finally:
        _TRIALS.pop(key, None)


class TrialPruned(SectorkitError):
    """The pruner stopped this trial's run after a validation epoch."""


class PruningCallback(pl.Callback):
    """Report ``monitor`` to the Optuna trial of the run in ``run_dir`` after every validation epoch (the step
    is the epoch) and stop the run when the pruner says so. Added to each trial's callbacks by the search."""

    def __init__(self, monitor: str, run_dir: str) -> None:
        self.monitor = monitor
        self.trial = _TRIALS.get(Path(run_dir).resolve())
        self._epochs: set[int] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.trial is None:
            raise ConfigError(f"callbacks.{PRUNING_CALLBACK}: reports to the trial of a search; it is added by {SEARCH_GROUP}=optuna, "
                              "not on its own")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        prune = False
        if self.trial is not None and epoch not in self._epochs:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None:
                self._epochs.add(epoch)
                self.trial.report(float(value), step=epoch)
                prune = self.trial.should_prune()
        if prune:
            value = float(trainer.callback_metrics.get(self.monitor, math.nan))
            raise TrialPruned(f"pruned after epoch {epoch}: {self.monitor} = {value:.4g}")


# --- rows and summaries -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepRow:
    """One job of a sweep: an Optuna trial or a grid job."""

    number: int
    state: str  # complete | pruned | failed | running
    params: dict[str, Any]
    overrides: list[str]  # its run's command line: sectorkit train <overrides>
    value: float | None  # best validation score (for a pruned trial: the best it reported)
    epochs: int | None
    seconds: float | None
    run_dir: str | None
    note: str = ""


@dataclass
class SweepSummary:
    """A finished sweep: its jobs, the objective and the best job, as a table, JSON and Markdown."""

    title: str
    objective: str  # val/<metric>
    mode: str  # max | min
    rows: list[SweepRow]
    unit: str  # trial | job
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> SweepRow | None:
        done = [r for r in self.rows if r.state == "complete" and r.value is not None and not math.isnan(r.value)]
        if not done:
            return None
        return (max if self.mode == "max" else min)(done, key=lambda r: r.value)

    def best_command(self) -> str | None:
        best = self.best
        return " ".join(shlex.quote(a) for a in ["sectorkit", "train", *best.overrides]) if best else None

    def columns(self) -> list[str]:
        return list(dict.fromkeys(k for r in self.rows for k in r.params))

    def table(self) -> Table:
        better = "higher" if self.mode == "max" else "lower"
        table = Table(title=escape(f"{self.title}: {self.objective} ({better} is better)"), title_justify="left")
        params = self.columns()
        for column in ("#", "state", *params, self.objective, "epochs", "time"):
            table.add_column(escape(column), justify="left" if column == "state" else "right")
        best = self.best
        for row in self.rows:
            style = "bold green" if row is best else "dim" if row.state in ("failed", "running") else None
            table.add_row(str(row.number), row.state, *(escape(_short(row.params.get(p))) for p in params), _score(row.value),
                          "–" if row.epochs is None else str(row.epochs), _seconds(row.seconds), style=style)
        return table

    def markdown(self) -> str:
        params = self.columns()
        header = ["#", "state", *params, self.objective, "epochs", "time", "run"]
        better = "higher" if self.mode == "max" else "lower"
        lines = [f"# {self.title}", "", (f"Objective: `{self.objective}` ({better} is better), the best validation score of each run; "
                                         "test metrics play no part in the choice."), ""]
        lines += [f"- {key}: `{value}`" for key, value in self.extra.items() if not isinstance(value, (dict, list))]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            cells = [str(row.number), row.state, *(_short(row.params.get(p)) for p in params), _score(row.value),
                     "–" if row.epochs is None else str(row.epochs), _seconds(row.seconds), f"`{row.run_dir}`" if row.run_dir else "–"]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        best = self.best
        lines += ["", "## Best configuration", ""]
        if best is None:
            lines.append(f"No {self.unit} completed.")
        else:
            lines += [f"{self.unit.capitalize()} {best.number}: {self.objective} = {best.value:.6g} (`{best.run_dir}`)", "",
                      "```bash", self.best_command() or "", "```"]
        failed = [r for r in self.rows if r.note]
        if failed:
            lines += ["", "## Notes", "", *(f"- {r.number} ({r.state}): {r.note}" for r in failed)]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        best = self.best
        return {
            **self.extra,
            "objective": self.objective,
            "mode": self.mode,
            "trials": [asdict(r) for r in self.rows],
            "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params,
                                               "overrides": best.overrides, "command": self.best_command(), "run_dir": best.run_dir},
        }

    def write(self, folder: Path, console: Console) -> None:
        """Print the table and the best configuration; write ``sweep_summary.json`` and ``.md`` in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "sweep_summary.json", self.as_json())
        atomic_write_text(folder / "sweep_summary.md", self.markdown())
        (console if console.is_terminal else Console(width=240)).print(self.table())  # a log file gets whole headers
        best = self.best
        if best is None:
            console.print(f"[bold red]no {self.unit} completed[/bold red]")
        else:
            console.print(f"[bold]best: {self.unit} {best.number}, {escape(self.objective)} = {best.value:.6g}[/bold] "
                          f"({escape(str(best.run_dir))})", soft_wrap=True)
            console.print(escape(f"rerun it: {self.best_command()}"), soft_wrap=True)
        console.print(escape(f"summary: {folder / 'sweep_summary.md'} | {folder / 'sweep_summary.json'}"), soft_wrap=True)


def _short(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _score(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.4f}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


# --- the Optuna search ------------------------------------------------------------------------------------
def run_search(domain: Domain, overrides: Sequence[str], flags: Sequence[str] = ()) -> int:
    """Run (or resume) the Optuna study the overrides describe, one in-process training run per trial, until
    it holds ``sweep.n_trials`` finished trials; print and write the summary."""
    import optuna
    from sectorkit.core.config import compose_config
    from sectorkit.core.launch import run_hydra

    split = split_overrides(domain, overrides)
    if flags:  # --cfg: the config a trial starts from
        run_hydra(domain, [*flags, "task=train", *split.trial_base])
        return 0
    cfg = compose_config(domain, split.fixed, return_hydra_config=True)
    if cfg.get("sweep") is None:
        raise ConfigError(f"{SEARCH_GROUP}: the chosen preset has no sweep section (see conf/{SEARCH_GROUP}/optuna.yaml)")
    settings = cfg.sweep
    model = str(cfg.hydra.runtime.choices.get("model") or "-")
    dimensions = search_space(cfg, model, domain, split.searched, split.fixed_keys)
    if not dimensions:
        raise ConfigError(f"{SEARCH_GROUP}: the search space of model={model} is empty; add keys with key=interval(a,b) or key=a,b")
    trial_base = [*split.trial_base, *one_device(cfg)]
    objective = f"val/{cfg.monitor.metric}"
    name = str(settings.study_name) if settings.get("study_name") else default_study_name(cfg, [d.key for d in dimensions])
    storage_url = str(settings.storage)
    _make_sqlite_folder(storage_url)
    sweep_dir = Path(str(cfg.hydra.sweep.dir)).resolve()
    n_trials = int(settings.n_trials)
    if n_trials < 1:
        raise ConfigError(f"sweep.n_trials={n_trials}: expected at least 1")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, pruner = _instantiate(settings, "sampler", 0), _instantiate(settings, "pruner", 0) or optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=name, storage=optuna.storages.RDBStorage(storage_url), sampler=sampler, pruner=pruner,
                                direction=str(settings.direction), load_if_exists=True)
    if study.direction.name.lower() != str(settings.direction):
        raise ConfigError(f"study {name!r} in {storage_url} is {study.direction.name.lower()}d, not {settings.direction}d; "
                          "choose another sweep.study_name")
    if study.trials:  # a resumed study: the sampler's seed moves on, so it does not draw its first points again
        study.sampler = _instantiate(settings, "sampler", len(study.trials))
    console = Console()
    _note_settings(study, trial_base, console)

    def finished() -> int:
        return sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)

    console.rule(f"Optuna study {name}")
    console.print(escape(f"storage: {storage_url} | objective: {objective} ({settings.direction}) | finished trials: {finished()}, "
                         f"sweep.n_trials={n_trials} | sweep folder: {sweep_dir}"), soft_wrap=True)
    if finished() >= n_trials:
        console.print(f"the study already holds {finished()} finished trials: nothing to run (raise sweep.n_trials to add trials)")
    for dim in dimensions:
        console.print(escape(f"  {dim.key}: {dim.describe()}"), soft_wrap=True)
    started, failures, last_error, ran = time.monotonic(), 0, "", []
    distributions = {d.key: d.distribution() for d in dimensions}
    interrupted = False
    try:
        while finished() < n_trials:
            if settings.get("timeout") is not None and time.monotonic() - started > float(settings.timeout):
                console.print(f"sweep.timeout={settings.timeout} s reached: no new trial")
                break
            if failures >= int(settings.max_failures):
                break
            trial = study.ask(distributions)
            ran.append(trial.number)
            state, note = _run_trial(domain, trial, dimensions, trial_base, sweep_dir, objective, console)
            failures = failures + 1 if state == "failed" else 0
            last_error = note if state == "failed" else last_error
    except KeyboardInterrupt:
        interrupted = True
    finally:
        mode = str(cfg.monitor.mode)
        summary = SweepSummary(f"Optuna study {name}", objective, mode, [_trial_row(t, mode) for t in study.trials], "trial",
                               extra={"study_name": name, "storage": storage_url, "direction": str(settings.direction),
                                      "sweep_dir": str(sweep_dir), "n_trials": n_trials, "ran_now": ran,
                                      "search_space": {d.key: d.describe() for d in dimensions}})
        summary.write(sweep_dir, console)
    if interrupted:
        raise SectorkitError(f"interrupted: study {name!r} keeps its finished trials; the same command resumes it")
    if failures >= int(settings.max_failures):
        raise SectorkitError(f"the sweep stopped after {failures} failed trials in a row (sweep.max_failures); the last: {last_error}")
    return 0 if summary.best is not None else 1


def _run_trial(domain: Domain, trial: optuna.trial.Trial, dimensions: list[Dimension], base: list[str], sweep_dir: Path,
               objective: str, console: Console) -> tuple[str, str]:
    """One trial: its run with the sampled values, told to the study as complete, pruned or failed."""
    import optuna
    from sectorkit.core.config import validate_overrides
    from sectorkit.core.launch import run_hydra

    run_dir = sweep_dir / str(trial.number)
    sampled = [dim.override(trial.params[dim.key]) for dim in dimensions]
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("overrides", [*base, *sampled])  # the whole command line of its run (less the pruning callback)
    console.rule(f"trial {trial.number}")
    console.print(escape(" ".join(sampled)), soft_wrap=True)
    callback = [f"+callbacks.{PRUNING_CALLBACK}._target_={PruningCallback.__module__}.{PruningCallback.__name__}",
                f"+callbacks.{PRUNING_CALLBACK}.monitor={override_value(objective)}",
                f"+callbacks.{PRUNING_CALLBACK}.run_dir=${{paths.output_dir}}"]
    args = ["task=train", *base, *sampled, *callback, f'hydra.run.dir="{run_dir}"']
    started = time.perf_counter()
    try:
        validate_overrides(domain, [*base, *sampled])  # a sampled value the config refuses fails this trial, in one line
        with trial_in(run_dir, trial):
            score = run_hydra(domain, args, keep=(Exception,))
    except TrialPruned as pruned:
        trial.set_user_attr("note", str(pruned))
        trial.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        console.print(escape(f"trial {trial.number} {pruned} ({time.perf_counter() - started:.1f} s)"))
        return "pruned", str(pruned)
    except Exception as err:  # noqa: BLE001 - a failing trial is recorded; the search goes on
        if _debugging():
            trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        note = f"{type(err).__name__}: {err}"
        trial.set_user_attr("note", note)
        trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        console.print(f"[red]trial {trial.number} failed[/red]: {escape(note)} (log: {escape(str(run_dir))})", soft_wrap=True)
        return "failed", note
    except BaseException:  # Ctrl-C or an exit: the trial is not left running in the study
        trial.set_user_attr("note", "interrupted")
        trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    if score is None or math.isnan(score):
        note = f"the run gave no {objective} score"
        trial.set_user_attr("note", note)
        trial.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        console.print(f"[red]trial {trial.number} failed[/red]: {escape(note)}")
        return "failed", note
    trial.study.tell(trial, score)
    console.print(escape(f"trial {trial.number} complete: {objective} = {score:.6g} ({time.perf_counter() - started:.1f} s)"))
    return "complete", ""


def one_device(cfg: DictConfig) -> list[str]:
    """Trials train one after another in this process, each on one device: ``trainer.devices=auto`` becomes 1
    (on a machine with several GPUs it would start a multi-process run); a multi-process trainer is refused."""
    trainer = cfg.trainer
    devices = trainer.get("devices")
    strategy = trainer.get("strategy")
    strategy = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy)
    count = len(devices) if isinstance(devices, ListConfig) else int(devices) if str(devices).lstrip("-").isdigit() else None
    parallel = any(name in strategy.lower() for name in ("ddp", "fsdp", "deepspeed"))
    if parallel or int(trainer.get("num_nodes") or 1) > 1 or (count or 1) != 1:
        raise ConfigError(f"trainer.strategy={strategy} trainer.devices={devices} trainer.num_nodes={trainer.get('num_nodes')}: a search "
                          "trains its trials one after another in this process, each on one device; choose trainer.devices=1 and no "
                          "ddp/fsdp strategy (multi-device jobs run as a grid sweep)")
    return ["trainer.devices=1"] if str(devices) == "auto" else []


def _trial_row(trial: optuna.trial.FrozenTrial, mode: str) -> SweepRow:
    """A trial as a row; a pruned trial's score is the best it reported before it was stopped."""
    import optuna

    states = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
              optuna.trial.TrialState.FAIL: "failed"}
    reported = list(trial.intermediate_values.values())
    if trial.state == optuna.trial.TrialState.COMPLETE:
        value = trial.value
    elif reported:
        value = max(reported) if mode == "max" else min(reported)
    else:
        value = None
    return SweepRow(trial.number, states.get(trial.state, trial.state.name.lower()), dict(trial.params),
                    list(trial.user_attrs.get("overrides", [])), value, len(reported) or None,
                    trial.duration.total_seconds() if trial.duration else None,
                    trial.user_attrs.get("run_dir"), str(trial.user_attrs.get("note", "")))


def _instantiate(settings: DictConfig, kind: str, offset: int) -> Any:
    """The sampler or pruner ``settings.<kind>`` names among ``settings.<kind>s``; a sampler's seed moves on by
    ``offset`` (the trials a resumed study holds), so it does not draw its first points again."""
    from hydra.utils import instantiate

    choice = settings.get(kind)
    if choice is None:
        if kind == "sampler":
            raise ConfigError(f"sweep.sampler: choose one of {', '.join(settings.get('samplers') or {})}")
        return None
    options = settings.get(f"{kind}s") or {}
    if str(choice) not in options:
        raise ConfigError(f"sweep.{kind}={choice}; valid choices: {', '.join(options)} (or add sweep.{kind}s.<name>)")
    node = OmegaConf.to_container(options[str(choice)], resolve=True)
    if node.get("seed") is not None:
        node["seed"] = int(node["seed"]) + offset
    try:
        return instantiate(node)
    except Exception as err:  # noqa: BLE001 - a bad sampler or pruner setting is a config error
        cause = err.__cause__ or err
        raise ConfigError(f"sweep.{kind}s.{choice}: {cause}") from None


def _note_settings(study: optuna.Study, base: list[str], console: Console) -> None:
    """Record the fixed overrides of a new study; warn when a resumed one was started with others."""
    before = study.user_attrs.get("overrides")
    if before is None:
        study.set_user_attr("overrides", base)
    elif before != base:
        note = (f"note: this study was started with {' '.join(before) or 'no overrides'}; these trials run with "
                f"{' '.join(base) or 'none'} (set sweep.study_name to start another study)")
        console.print(f"[yellow]{escape(note)}[/yellow]", soft_wrap=True)


def _make_sqlite_folder(url: str) -> None:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _debugging() -> bool:
    """Whether ``--debug`` asked for full tracebacks (a failing trial then ends the search with its traceback)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


# --- the grid multirun ------------------------------------------------------------------------------------
def run_grid(domain: Domain, overrides: Sequence[str]) -> int:
    """Hydra's multirun over comma-separated values (through any launcher), then one table over its jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from sectorkit.core.config import compose_config
    from sectorkit.core.launch import run_hydra

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose_config(domain, fixed, return_hydra_config=True)
    sweep_dir = Path(str(cfg.hydra.sweep.dir)).resolve()
    pinned = [o for o in overrides if not o.startswith("hydra.sweep.dir=")]
    try:
        run_hydra(domain, ["--multirun", "task=train", *pinned, f'hydra.sweep.dir="{sweep_dir}"'])
    finally:
        if sweep_dir.is_dir():
            swept = [o.key_or_group for o in parsed if o.is_sweep_override()]
            rows = grid_rows(sweep_dir, swept)
            if rows:
                SweepSummary(f"sweep {sweep_dir.name}", f"val/{cfg.monitor.metric}", str(cfg.monitor.mode), rows, "job",
                             extra={"sweep_dir": str(sweep_dir)}).write(sweep_dir, Console())
    return 0


def grid_rows(sweep_dir: Path, swept: Sequence[str]) -> list[SweepRow]:
    """One row per job folder of a grid multirun, from its ``.hydra/overrides.yaml`` and ``metrics.json``."""
    rows = []
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for job in jobs:
        overrides_file = job / ".hydra" / "overrides.yaml"
        job_overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
        job_overrides = [o for o in job_overrides if not o.startswith("task=")]
        params = {k: v for k, _, v in (o.partition("=") for o in job_overrides) if k in swept}
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
        value = metrics.get("best_val")
        state = "complete" if value is not None else "failed"
        note = "" if value is not None else f"no metrics.json with a best validation score (see {job})"
        rows.append(SweepRow(int(job.name), state, params, job_overrides, value, metrics.get("epochs"), metrics.get("seconds"), str(job),
                             note))
    return rows
