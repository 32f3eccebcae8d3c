"""``model=auto``: choose among a domain's trained candidate models on the validation split and ship one.

``sectorkit train domain=<d> model=auto [overrides]`` first trains every model named in ``auto.candidates``
(the domain's ``model/auto.yaml``; ``auto.candidates=[a,b]`` on the command line) as an ordinary training run
in ``<run>/candidates/<candidate>/`` (:mod:`sectorkit.core.candidates`). Then the run
itself (an ordinary Hydra job in ``<run>/``) reads each candidate's ``metrics.json`` and chooses the best
validation score of the primary metric (``best_val``, what a search optimises; test metrics play no part),
ties within ``auto.tie`` (relative) going to the candidate listed first (the lists put the simpler, cheaper
models first). It copies the chosen candidate's best checkpoint to ``<run>/checkpoints/best.ckpt``, evaluates
it on the test split exactly as ``sectorkit evaluate`` does and finishes like any training run (predictions,
the domain's baselines, the verdict, report.md), with every candidate in ``metrics.json`` (``auto``) and a
candidates table at the top of report.md and at the end of the terminal output. ``evaluate``, ``predict``,
``export`` and :func:`sectorkit.load` then work from the run folder alone.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sectorkit.core.errors import ConfigError, SectorkitError
from sectorkit.core.io import atomic_path, atomic_write_json, atomic_write_text
from sectorkit.core.module import plain_container

AUTO = "auto"  # the model option (domains/<name>/conf/model/auto.yaml) and its config section
CANDIDATES_DIR = "candidates"
FAILURE_FILE = "failed.json"  # in a candidate's folder when its run raised


def requested(overrides: Sequence[str]) -> bool:
    """Whether the overrides choose ``model=auto`` (the last ``model=`` wins, as in Hydra)."""
    values = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").split("=", 1)[0] == "model"]
    return bool(values) and values[-1] == AUTO


# --- settings ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AutoSettings:
    """The ``auto`` section: the candidate model configs in order of preference (simplest first), the relative
    margin under which two validation scores tie, and the blend of the two best candidates (``blend``: whether
    to build one; ``blend_network``: the domain's network class that composes two members; ``blend_weights``:
    the first member's shares tried on the validation split)."""

    candidates: list[str]
    tie: float
    blend: bool = False
    blend_network: str | None = None
    blend_weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])


def auto_settings(cfg: DictConfig, options: Sequence[str] | None = None) -> AutoSettings:
    """``cfg.auto`` checked: a non-empty list of distinct model options (other than ``auto``) and a tie >= 0."""
    node = cfg.get(AUTO)
    if not isinstance(node, DictConfig):
        raise ConfigError("auto: no auto section; choose model=auto (the domain's conf/model/auto.yaml)")
    candidates = node.get("candidates")
    if not isinstance(candidates, ListConfig) or not candidates or not all(isinstance(c, str) for c in candidates):
        raise ConfigError(f"auto.candidates={plain_container(candidates)!r}: expected a non-empty list of model config names, e.g. "
                          "auto.candidates=[ease,multvae]")
    names = [str(c) for c in candidates]
    if len(set(names)) != len(names):
        raise ConfigError(f"auto.candidates={names}: a model is listed twice")
    for name in names:
        if name == AUTO or (options is not None and name not in options):
            valid = ", ".join(o for o in (options or []) if o != AUTO)
            raise ConfigError(f"auto.candidates: unknown model {name!r} for domain {cfg.domain!r}; valid choices: {valid}")
    tie = node.get("tie", 0.001)
    if not isinstance(tie, (int, float)) or isinstance(tie, bool) or tie < 0:
        raise ConfigError(f"auto.tie={tie!r}: expected a number >= 0 (a relative margin, 0.001 = 0.1 %)")
    blend, network = bool(node.get("blend", False)), node.get("blend_network")
    if blend and not network:
        raise ConfigError(f"auto.blend=true: domain {cfg.domain!r} names no auto.blend_network (the network that composes two "
                          "trained members); it has no blend yet")
    weights = plain_container(node.get("blend_weights", [0.25, 0.5, 0.75]))
    if not isinstance(weights, list) or not weights or not all(isinstance(w, (int, float)) and 0.0 <= w <= 1.0 for w in weights):
        raise ConfigError(f"auto.blend_weights={weights!r}: expected a non-empty list of shares in [0, 1] (the best candidate's weight)")
    return AutoSettings(names, float(tie), blend, str(network) if network else None, [float(w) for w in weights])


def candidate_overrides(overrides: Sequence[str], name: str) -> list[str]:
    """A candidate's command line: the user's overrides with ``model=<name>`` for ``model=auto``, less the
    ``auto.*`` settings and the run folder (each candidate runs in its own), and no baselines (the auto run
    fits them once, for the chosen model)."""
    kept = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in ("model", "task", AUTO) or key.startswith((f"{AUTO}.", "hydra.run.", "hydra.mode")):
            continue
        kept.append(override)
    return [*kept, f"model={name}", "with_baselines=false"]


# --- choosing -----------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One candidate's run as its ``metrics.json`` (or failure) records it."""

    name: str
    state: str  # complete | failed
    best_val: float | None = None
    test: dict[str, float] = field(default_factory=dict)
    epochs: int | None = None
    seconds: float | None = None
    run_dir: str = ""
    checkpoint: str | None = None
    note: str = ""
    model_config_from: str | None = None  # the run whose model section describes it (a blend: its first member's)


def read_candidate(folder: Path, name: str) -> Candidate:
    """The candidate in ``folder``: complete with a finite best validation score (a smoke run's, which has none,
    is ``smoke``), else failed with the reason."""
    import json

    metrics_file, failure_file = folder / "metrics.json", folder / FAILURE_FILE
    if failure_file.is_file():
        failure = json.loads(failure_file.read_text(encoding="utf-8"))
        return Candidate(name, "failed", run_dir=str(folder), seconds=failure.get("seconds"), note=str(failure.get("error", "")))
    if not metrics_file.is_file():
        return Candidate(name, "failed", run_dir=str(folder), note=f"no metrics.json in {folder}")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    checkpoint = next((p for p in (metrics.get("checkpoint"), metrics.get("last_checkpoint")) if p and Path(p).is_file()), None)
    value = metrics.get("best_val")
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    if not finite and metrics.get("smoke_run"):
        return Candidate(name, "smoke", None, dict(metrics.get("test", {})), metrics.get("epochs"), metrics.get("seconds"), str(folder),
                         checkpoint, "smoke run: one batch, no validation score")
    return Candidate(name, "complete" if finite else "failed", float(value) if finite else None, dict(metrics.get("test", {})),
                     metrics.get("epochs"), metrics.get("seconds"), str(folder), checkpoint,
                     metrics.get("note", "") if finite else "the run gave no finite best validation score", metrics.get("model_config_from"))


def choose(candidates: Sequence[Candidate], metric: str, mode: str, tie: float) -> tuple[Candidate | None, str]:
    """The candidate to ship and the sentence saying why: the best validation score; candidates within ``tie``
    (relative) of it tie, and the one listed first wins (the simpler, cheaper model). Test metrics are not read."""
    from sectorkit.core.verdict import relative_margin

    done = [c for c in candidates if c.state == "complete"]
    smoke = [c for c in candidates if c.state == "smoke"]
    if not done and smoke:  # debug=fast_dev_run: the wiring is checked, nothing is scored
        return smoke[0], f"chosen: {smoke[0].name} (smoke run: no validation scores; the first candidate listed)"
    if not done:
        return None, "no candidate finished"
    best = (max if mode == "max" else min)(done, key=lambda c: c.best_val)
    tied = [c for c in done if c is best or abs(relative_margin(best.best_val, c.best_val, mode)) <= tie]
    chosen = tied[0]
    others = [c for c in done if c is not chosen]
    if not others:
        return chosen, f"chosen: {chosen.name} (validation {metric} {chosen.best_val:.4f}; the only candidate that finished)"
    if chosen is not best:
        return chosen, (f"chosen: {chosen.name} (validation {metric} {chosen.best_val:.4f} ties {best.name} {best.best_val:.4f} within "
                        f"{tie:.1%}; the simpler candidate, listed first in auto.candidates)")
    runner_up = (max if mode == "max" else min)(others, key=lambda c: c.best_val)
    return chosen, f"chosen: {chosen.name} (validation {metric} {chosen.best_val:.4f} vs {runner_up.name} {runner_up.best_val:.4f})"


# --- shipping ------------------------------------------------------------------------------------------------
def ship(cfg: DictConfig, evaluate: Callable[[DictConfig, dict[str, Any]], dict[str, Any]], load: Callable[[DictConfig, str], tuple]) -> float | None:
    """The auto run itself (``task=train`` with ``model=auto``, inside its claimed run folder): choose among the
    candidates already trained in ``<run>/candidates/`` (and, with ``auto.blend``, a blend of the two best, built
    here), ship the chosen checkpoint as this run's best and ``evaluate`` it (the pipeline's evaluate run: test
    split, baselines, verdict, report; ``extra`` entries go to metrics.json), with every candidate recorded.
    ``load``: the pipeline's ``load_for_inference`` (a checkpoint's model and rebuilt data). Returns the chosen
    candidate's best validation score."""
    from sectorkit.core.registry import get_domain

    started = time.perf_counter()
    folder = Path(cfg.paths.output_dir)
    domain = get_domain(cfg.domain)
    settings = auto_settings(cfg)
    metric, mode = str(cfg.monitor.metric), str(cfg.monitor.mode)
    candidates = [read_candidate(folder / CANDIDATES_DIR / name, name) for name in settings.candidates]
    if settings.blend:
        candidates.append(blend_candidate(cfg, candidates, settings, load))
    chosen, reason = choose(candidates, metric, mode, settings.tie)
    record = {
        "candidates": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in candidates},
        "order": settings.candidates,
        "chosen": chosen.name if chosen else None,
        "reason": reason,
        "selection": (f"the best validation {metric} (val/{metric}, best epoch) of each candidate; candidates within {settings.tie:.1%} "
                      "(auto.tie) tie and the one listed first in auto.candidates wins; test metrics play no part"),
        "tie": settings.tie,
    }
    console = Console()
    if chosen is None:
        atomic_write_json(folder / "metrics.json", {"domain": domain.name, "model_name": AUTO, "primary_metric": metric, "mode": mode,
                                                    "test": {}, "auto": record, "run_dir": str(folder)})
        console.print(candidates_table(candidates, None, metric, mode))
        raise SectorkitError(f"model=auto: no candidate finished; see {folder / CANDIDATES_DIR} "
                             f"({'; '.join(f'{c.name}: {c.note}' for c in candidates)})")
    if chosen.checkpoint is None:  # a smoke run (fast_dev_run) saves no checkpoint: nothing to ship
        smoke = bool(cfg.trainer.get("fast_dev_run"))
        metrics = {"domain": domain.name, "model_name": chosen.name, "primary_metric": metric, "mode": mode, "test": chosen.test,
                   "baselines": {}, "best_val": chosen.best_val, "checkpoint": None, "auto": record, "run_dir": str(folder),
                   **({"smoke_run": "debug=fast_dev_run: one batch through every step, to check the wiring; not a result"} if smoke else {}),
                   "verdict": {"text": f"{reason}; {chosen.name} saved no checkpoint, so nothing was shipped", "best_baseline": None,
                               "margin": None}}
        atomic_write_json(folder / "metrics.json", metrics)
        atomic_write_text(folder / "report.md", f"# {domain.name} — model=auto\n\n{candidates_markdown(metrics)}\n")
        _print_end(console, candidates, chosen, metrics)
        return chosen.best_val
    best = folder / "checkpoints" / "best.ckpt"
    copy_atomic(Path(chosen.checkpoint), best)
    with open_dict(cfg):
        cfg.ckpt_path = str(best)
        cfg.model = chosen_model_config(Path(chosen.model_config_from or chosen.run_dir))  # what baselines and report read (top_k, ...)
    extra = {"best_val": chosen.best_val, "shipped_from": chosen.checkpoint, "epochs": chosen.epochs, "auto": record}
    metrics = evaluate(cfg, extra)
    metrics["seconds"] = round(sum(c.seconds or 0.0 for c in candidates) + time.perf_counter() - started, 2)
    metrics["verdict"]["text"] = f"{reason}; {metrics['verdict']['text']}"
    atomic_write_json(folder / "metrics.json", metrics)
    add_to_report(folder / "report.md", metrics)
    _print_end(console, candidates, chosen, metrics)
    return chosen.best_val


BLEND = "blend"  # the blend candidate's name and folder


def blend_candidate(cfg: DictConfig, candidates: Sequence[Candidate], settings: AutoSettings, load: Callable[[DictConfig, str], tuple]) -> Candidate:
    """The two best complete candidates composed by the domain's ``auto.blend_network`` into one network, the first
    member's share chosen among ``auto.blend_weights`` on the validation split; written as a candidate (checkpoint
    and metrics.json in ``<run>/candidates/blend/``) so it competes like the others. A failure is a failed candidate."""
    import torch
    from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint
    from sectorkit.core.trainer import build_trainer

    started = time.perf_counter()
    folder = Path(cfg.paths.output_dir) / CANDIDATES_DIR / BLEND
    metric, mode = str(cfg.monitor.metric), str(cfg.monitor.mode)
    done = sorted((c for c in candidates if c.state == "complete" and c.checkpoint), key=lambda c: c.best_val, reverse=mode == "max")
    if len(done) < 2:
        return Candidate(BLEND, "failed", run_dir=str(folder), note="a blend needs two candidates that finished with a checkpoint")
    first, second = done[:2]
    try:
        members = [load_checkpoint(first.checkpoint, bool(cfg.allow_unsafe_checkpoint)),
                   load_checkpoint(second.checkpoint, bool(cfg.allow_unsafe_checkpoint))]
        with open_dict(cfg):
            cfg.ckpt_path = first.checkpoint
        _, _, datamodule, _ = load(cfg, "fit")
        trainer = build_trainer(cfg, devices=1, num_nodes=1, strategy="auto", logger=False)  # the auto run logs its own evaluation
        scores: dict[float, float] = {}
        validated = {}
        for weight in settings.blend_weights:
            validated[weight] = model_from_checkpoint(blend_checkpoint(members, settings.blend_network, weight, BLEND))
            scores[weight] = float(trainer.validate(validated[weight], datamodule=datamodule, verbose=False)[0][f"val/{metric}"])
        weight = (max if mode == "max" else min)(scores, key=scores.get)  # the first listed wins a tie
        checkpoint = blend_checkpoint(members, settings.blend_network, weight, BLEND)
        model = validated[weight]  # as validated: what it fitted on the validation split (e.g. intervals) is shipped
        checkpoint["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        test = {k.removeprefix("test/"): float(v) for k, v in trainer.test(model, datamodule=datamodule, verbose=False)[0].items()
                if k.startswith("test/")}
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        return Candidate(BLEND, "failed", run_dir=str(folder), seconds=round(time.perf_counter() - started, 2),
                         note=f"{type(err).__name__}: {err}")
    path = folder / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)
    how = next((m.blend_summary for m in model.modules() if hasattr(m, "blend_summary")), "scores standardised per row")
    note = (f"{weight:g} x {first.name} + {1 - weight:g} x {second.name} (the two best candidates, {how}; "
            f"validation {metric} by weight: {', '.join(f'{w:g}: {v:.4f}' for w, v in scores.items())})")
    seconds = round(time.perf_counter() - started, 2)
    atomic_write_json(folder / "metrics.json", {"model_name": BLEND, "best_val": scores[weight], "test": test, "epochs": 0, "seconds": seconds,
                                                "checkpoint": str(path), "note": note, "model_config_from": first.run_dir,
                                                "blend": {"members": [first.name, second.name], "weight": weight, "validation": scores}})
    return read_candidate(folder, BLEND)


def blend_checkpoint(members: Sequence[dict[str, Any]], network: str, weight: float, name: str) -> dict[str, Any]:
    """One checkpoint holding two members' networks composed by ``network`` (``members`` and ``weight`` are its
    arguments): the module and data state of the first member, each member's ``net.*`` weights under
    ``net.members.<i>.``, the weight as the network's ``weights`` buffer, and the run record named ``name``. A network
    class with a ``blend_parts(members, weight)`` classmethod composes the members' configs, the state dict and the
    module's hyper-parameter changes itself (weather: each member's whole module, adapter and ridge included)."""
    import torch
    from sectorkit.core.network import network_class
    from sectorkit.core.run_record import RECORD_KEY

    first = members[0]
    hyper = dict(first["hyper_parameters"])
    parts = getattr(network_class({"_target_": network}, "auto.blend_network"), "blend_parts", None)
    if parts is not None:  # members whose forecast needs state outside net.* (the network composes the parts itself)
        composed = parts(members, float(weight))
        state, configs = dict(composed["state_dict"]), composed["members"]
        hyper.update(composed.get("hyper_parameters", {}))
    else:
        state = {k: v for k, v in first["state_dict"].items() if not k.startswith("net.")}
        for index, member in enumerate(members):
            state.update({f"net.members.{index}.{k.removeprefix('net.')}": v for k, v in member["state_dict"].items() if k.startswith("net.")})
        state["net.weights"] = torch.tensor([float(weight), 1.0 - float(weight)])
        configs = [dict(m["hyper_parameters"]["net"]) for m in members]
    kept = {k: v for k, v in first.items() if k not in ("state_dict", "hyper_parameters", "optimizer_states", "lr_schedulers", "callbacks", "loops")}
    hyper["net"] = {"_target_": network, "_recursive_": False,  # the members stay configs: the network builds them
                    "members": configs, "weight": float(weight)}
    record = dict(first.get(RECORD_KEY) or {})
    if record:
        record["model_name"] = name
    return {**kept, "state_dict": state, "hyper_parameters": hyper, **({RECORD_KEY: record} if record else {})}


def chosen_model_config(folder: Path) -> dict[str, Any]:
    """The ``model`` section the candidate in ``folder`` ran with (from its ``.hydra/config.yaml``, resolved
    there), so this run's baselines and report read the chosen model's settings; ``{}`` when it is not saved."""
    saved = folder / ".hydra" / "config.yaml"
    if not saved.is_file():
        return {}
    config = OmegaConf.load(saved)
    try:
        return OmegaConf.to_container(config.model, resolve=True)
    except Exception:  # noqa: BLE001 - a value only its run could resolve: keep the section as written
        return OmegaConf.to_container(config.model, resolve=False)


def copy_atomic(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary file in the same folder and an atomic rename."""
    with atomic_path(target) as partial:
        shutil.copyfile(source, partial)


# --- the candidates table ----------------------------------------------------------------------------------
def candidates_table(candidates: Sequence[Candidate], chosen: Candidate | None, metric: str, mode: str) -> Table:
    """Every candidate's best validation and test score on the primary metric; the chosen one marked."""
    better = "higher" if mode == "max" else "lower"
    table = Table(title=escape(f"model=auto candidates: chosen on validation {metric} ({better} is better)"), title_justify="left")
    for column in ("candidate", "state", f"val {metric}", f"test {metric}", "epochs", "time"):
        table.add_column(escape(column), justify="left" if column in ("candidate", "state") else "right")
    for c in candidates:
        label = f"{c.name} (chosen)" if c is chosen else c.name
        table.add_row(escape(label), c.state, _number(c.best_val), _number(c.test.get(metric)), "–" if c.epochs is None else str(c.epochs),
                      "–" if c.seconds is None else f"{c.seconds:.1f} s", style="bold green" if c is chosen else "dim" if c.state != "complete" else None)
    return table


def candidates_markdown(metrics: dict[str, Any]) -> str:
    """The report's candidates section from ``metrics['auto']``."""
    auto, metric = metrics["auto"], metrics["primary_metric"]
    lines = ["## Candidates (model=auto)", "", f"**{auto['reason']}.** Selection: {auto['selection']}.", "",
             f"| candidate | state | validation {metric} | test {metric} | epochs | time | run |", "|---|---|---|---|---|---|---|"]
    for name, c in auto["candidates"].items():
        label = f"**{name}** (chosen)" if name == auto["chosen"] else name
        time_cell = "–" if c.get("seconds") is None else f"{c['seconds']:.1f} s"
        lines.append(f"| {label} | {c['state']} | {_number(c.get('best_val'))} | {_number(c.get('test', {}).get(metric))} | "
                     f"{'–' if c.get('epochs') is None else c['epochs']} | {time_cell} | `{c.get('run_dir', '')}` |")
    notes = [f"- {name}: {c['note']}" for name, c in auto["candidates"].items() if c.get("note")]
    return "\n".join([*lines, *(["", *notes] if notes else [])])


def add_to_report(path: Path, metrics: dict[str, Any]) -> None:
    """Put the candidates section at the top of report.md (before the verdict) and the verdict with the choice."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").split("\n")
    verdict = next((i for i, line in enumerate(lines) if line.startswith("**Verdict:")), None)
    if verdict is not None:
        lines[verdict] = f"**Verdict: {metrics['verdict']['text']}.**"
    at = verdict if verdict is not None else next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    lines[at:at] = [candidates_markdown(metrics), ""]
    atomic_write_text(path, "\n".join(lines))


def _print_end(console: Console, candidates: Sequence[Candidate], chosen: Candidate, metrics: dict[str, Any]) -> None:
    console.print(candidates_table(candidates, chosen, metrics["primary_metric"], metrics["mode"]))
    console.print(f"[bold]{escape(metrics['verdict']['text'])}[/bold]", soft_wrap=True)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"
