"""Terminal summaries: the registered domains, and the demo that runs every domain's quick pipeline."""

from __future__ import annotations

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
from sectorkit.core.registry import discover


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


def run_demo(names: list[str] | None = None) -> int:
    """Train every (or the named) domain's ``experiment=quick`` on its built-in sample; print model vs baselines."""
    console = Console(width=max(Console().width, 110))
    domains = discover()
    names = names or list(domains)
    unknown = [n for n in names if n not in domains]
    if unknown:
        console.print(f"[red]unknown domain(s): {', '.join(unknown)}; registered: {', '.join(domains)}")
        return 2
    root = Path(os.environ.get("SECTORKIT_ROOT", Path.cwd()))
    demo_dir = root / "outputs" / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    results: dict[str, dict | str] = {}
    for name in names:
        quick = ["experiment=quick"] if "quick" in domains[name].options("experiment") else []
        run_dir = demo_dir / name
        cmd = [sys.executable, "-m", "sectorkit", "train", f"domain={name}", *quick, f'hydra.run.dir="{run_dir}"',
               "trainer.enable_progress_bar=false", "callbacks.model_summary=null"]
        console.rule(f"{name}: {' '.join(cmd[3:])}")
        started = time.perf_counter()
        code = subprocess.call(cmd)
        metrics_file = run_dir / "metrics.json"
        if code == 0 and metrics_file.is_file():
            results[name] = json.loads(metrics_file.read_text()) | {"seconds": time.perf_counter() - started}
        else:
            results[name] = f"failed (exit {code}); see {run_dir}"
    console.print(demo_table(results))
    for name, result in results.items():
        console.print(f"{name}: {result['report'] if isinstance(result, dict) else result}", soft_wrap=True)
    return 0 if all(isinstance(r, dict) for r in results.values()) else 1


def demo_table(results: dict[str, dict | str]) -> Table:
    """One row per domain: the model's primary test metric next to its best baseline."""
    table = Table(title="sectorkit demo: test metrics on each built-in sample", show_lines=True)
    for column in ("domain", "model", "metric", "model score", "best baseline", "baseline score", "time"):
        table.add_column(column, no_wrap=True)
    for name, result in results.items():
        if isinstance(result, str):
            table.add_row(name, "[red]failed", "–", "–", "–", "–", "–")
            continue
        metric, higher = result["primary_metric"], result["mode"] == "max"
        scored = {b: v[metric] for b, v in result.get("baselines", {}).items() if v.get(metric) is not None}
        best = (max if higher else min)(scored, key=scored.get) if scored else None
        model_score = result["test"].get(metric)
        wins = best is not None and model_score is not None and ((model_score > scored[best]) if higher else (model_score < scored[best]))
        colour = "green" if wins else "yellow"
        table.add_row(name, result["model_name"], f"{metric} ({'↑' if higher else '↓'})", f"[{colour}]{_fmt(model_score)}",
                      best or "–", _fmt(scored.get(best)) if best else "–", f"{result['seconds']:.0f} s")
    return table


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
