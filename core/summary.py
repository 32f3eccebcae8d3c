"""Terminal summaries: the registered domains, and the demo that runs every domain's quick pipeline."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sectorkit.core.config import compose_config
from sectorkit.core.registry import Domain, discover


def print_domains() -> None:
    """A table of every registered domain: models, datasets, experiments, defaults and primary metric."""
    table = Table(title="sectorkit domains", show_lines=True)
    for column in ("domain", "models", "data", "experiments", "primary metric"):
        table.add_column(column, no_wrap=True)
    descriptions = []
    for name, domain in discover().items():
        cfg = compose_config(domain, return_hydra_config=True)
        choices = cfg.hydra.runtime.choices
        mark = lambda options, default: "\n".join(f"{o} *" if o == default else o for o in options)  # noqa: E731
        metric = f"{cfg.monitor.metric} ({'higher' if cfg.monitor.mode == 'max' else 'lower'} is better)"
        table.add_row(name, mark(domain.options("model"), choices.get("model")), mark(domain.options("data"), choices.get("data")),
                      "\n".join(domain.options("experiment")), metric)
        descriptions.append(f"[bold]{name}[/bold]: {domain.description}")
    console = Console(width=max(Console().width, 110))
    console.print(table)
    console.print("* default", *descriptions, sep="\n")
    console.print("Run one: sectorkit train domain=<domain> [model=<model>] [data=<data>] [experiment=<experiment>]")


DEMO_EXPERIMENTS = ("demo", "quick")  # a domain's experiment=demo (chosen so its model is expected to win), else quick
SWEEP_TRIALS = 4


def demo_experiment(domain: Domain) -> str | None:
    """The experiment the demo runs for ``domain``: its ``demo`` experiment, else ``quick``, else none."""
    offered = domain.options("experiment")
    return next((e for e in DEMO_EXPERIMENTS if e in offered), None)


def experiment_note(domain: Domain, experiment: str | None) -> str:
    """The leading comment of the experiment's file (what it runs and why it was chosen), as one line."""
    if experiment is None:
        return ""
    lines = (domain.config_dir / "experiment" / f"{experiment}.yaml").read_text().splitlines()
    comments = [line.lstrip("#").strip() for line in itertools.takewhile(lambda row: row.startswith("#"), lines)]
    return " ".join(c for c in comments if c and not c.startswith("@package"))


def run_demo(names: list[str] | None = None, sweep: str | None = None) -> int:
    """Train every (or the named) domain's demo configuration on its built-in sample (``experiment=demo``, else
    ``quick``), print model vs baselines with each run's verdict, then a short Optuna search on the quick
    experiment of the domain ``sweep`` names (when it is among the demo's domains; None: the domain whose demo run
    was fastest; ``none``: no search)."""
    console = Console(width=max(Console().width, 150))  # the summary table unclipped in logs too
    domains = discover()
    names = names or list(domains)
    unknown = [n for n in names if n not in domains]
    if unknown:
        console.print(f"[red]unknown domain(s): {', '.join(unknown)}; registered: {', '.join(domains)}")
        return 2
    started_all = time.perf_counter()
    root = Path(os.environ.get("SECTORKIT_ROOT", Path.cwd()))
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    demo_dir = root / "outputs" / "demo" / stamp
    results: dict[str, dict | str] = {}
    quiet = ["trainer.enable_progress_bar=false", "callbacks.model_summary=null"]
    for name in names:
        experiment = demo_experiment(domains[name])
        run_dir = demo_dir / name
        cmd = [sys.executable, "-m", "sectorkit", "train", f"domain={name}", *([f"experiment={experiment}"] if experiment else []),
               f'hydra.run.dir="{run_dir}"', *quiet]
        console.rule(f"{name}: sectorkit {' '.join(cmd[3:6 if experiment else 5])}")
        note = experiment_note(domains[name], experiment)
        if note:
            console.print(f"[dim]{note}[/dim]", soft_wrap=True)
        started = time.perf_counter()
        code = subprocess.call(cmd)
        metrics_file = run_dir / "metrics.json"
        if code == 0 and metrics_file.is_file():
            seconds = time.perf_counter() - started
            results[name] = json.loads(metrics_file.read_text()) | {"seconds": seconds, "experiment": experiment or "-", "note": note}
        else:
            results[name] = f"failed (exit {code}); see {run_dir}"
    if sweep is None:  # the domain whose demo run was fastest: the search costs a few of its runs
        finished = {n: r["seconds"] for n, r in results.items() if isinstance(r, dict) and "quick" in domains[n].options("experiment")}
        sweep = min(finished, key=finished.get) if finished else None
    searched = demo_sweep(console, names, domains, sweep, demo_dir, stamp, quiet)
    console.rule("sectorkit demo: summary")
    console.print(demo_table(results))
    for name, result in results.items():
        if isinstance(result, dict):
            verdict = result.get("verdict") or {}
            console.print(f"[bold]{name}[/bold] ({result['experiment']}): {verdict.get('text', '')}", soft_wrap=True)
            if not (verdict.get("margin") or 0) > 0 and result.get("note"):  # the model did not win: say what the config expects
                console.print(f"  about this configuration: {result['note']}", soft_wrap=True)
            console.print(f"  report: {result['report']}", soft_wrap=True)
        else:
            console.print(f"[bold]{name}[/bold]: {result}", soft_wrap=True)
    if searched:
        console.print(f"search: {searched}", soft_wrap=True)
    console.print(f"demo time: {time.perf_counter() - started_all:.0f} s (outputs in {demo_dir})", soft_wrap=True)
    return 0 if all(isinstance(r, dict) for r in results.values()) and not (searched or "").startswith("failed") else 1


def demo_sweep(console: Console, names: list[str], domains: dict[str, Domain], sweep: str | None, demo_dir: Path, stamp: str,
               quiet: list[str]) -> str | None:
    """A short Optuna search on one domain's quick experiment (its own study, so every demo searches afresh); the
    search prints its table over the trials and the best configuration. Returns where its summary is, or None."""
    name = sweep
    if name not in names or "quick" not in domains[name].options("experiment"):
        return None
    if importlib.util.find_spec("optuna") is None:
        console.print('[yellow]search skipped: hparams_search=optuna needs optuna: pip install "sectorkit[sweep]"')
        return None
    folder = demo_dir / f"{name}_search"
    cmd = [sys.executable, "-m", "sectorkit", "train", "-m", f"domain={name}", "experiment=quick", "hparams_search=optuna",
           f"sweep.n_trials={SWEEP_TRIALS}", f"sweep.study_name=demo/{name}/{stamp}", f'hydra.sweep.dir="{folder}"', *quiet]
    console.rule(f"{name}: sectorkit {' '.join(cmd[3:9])}")
    code = subprocess.call(cmd)
    return str(folder / "sweep_summary.md") if code == 0 else f"failed (exit {code}); see {folder}"


def demo_table(results: dict[str, dict | str]) -> Table:
    """One row per domain: the model's primary test metric next to its best baseline."""
    table = Table(title="sectorkit demo: test metrics on each built-in sample", show_lines=True)
    for column in ("domain", "experiment", "model", "metric", "model score", "best baseline", "baseline score", "time"):
        table.add_column(column, no_wrap=True)
    for name, result in results.items():
        if isinstance(result, str):
            table.add_row(name, "–", "[red]failed", "–", "–", "–", "–", "–")
            continue
        metric, higher = result["primary_metric"], result["mode"] == "max"
        scored = {b: v[metric] for b, v in result.get("baselines", {}).items() if v.get(metric) is not None}
        best = (max if higher else min)(scored, key=scored.get) if scored else None
        model_score = result["test"].get(metric)
        wins = best is not None and model_score is not None and ((model_score > scored[best]) if higher else (model_score < scored[best]))
        colour = "green" if wins else "yellow"
        table.add_row(name, result.get("experiment", "-"), result["model_name"], f"{metric} ({'↑' if higher else '↓'})",
                      f"[{colour}]{_fmt(model_score)}",
                      best or "–", _fmt(scored.get(best)) if best else "–", f"{result['seconds']:.0f} s")
    return table


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
