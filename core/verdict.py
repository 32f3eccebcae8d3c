"""The honest end of a run: the model against each baseline on the primary metric, and one line saying who won."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.table import Table

TIE = 0.001  # relative margins smaller than 0.1 % are ties


@dataclass(frozen=True)
class Verdict:
    """The best baseline on the primary metric, the model's relative margin over it and the sentence to print."""

    text: str
    best_baseline: str | None
    margin: float | None  # > 0: the model is better (relative to the best baseline's value)


def relative_margin(model: float, baseline: float, mode: str) -> float:
    """How much better ``model`` is than ``baseline`` as a share of the baseline (negative: worse)."""
    gain = model - baseline if mode == "max" else baseline - model
    return gain / abs(baseline) if baseline else (math.copysign(math.inf, gain) if gain else 0.0)


def judge(metrics: dict[str, Any]) -> Verdict:
    """The verdict of a run's ``metrics.json`` content."""
    primary, mode = metrics["primary_metric"], metrics["mode"]
    model = metrics["test"].get(primary)
    scored = {name: values[primary] for name, values in metrics.get("baselines", {}).items() if _finite(values.get(primary))}
    if not _finite(model):
        return Verdict(f"the model's test {primary} could not be computed: see report.md", None, None)
    if not scored:
        return Verdict(f"no baseline was scored on {primary}: nothing to compare with", None, None)
    best = (max if mode == "max" else min)(scored, key=scored.get)
    margin = relative_margin(model, scored[best], mode)
    if abs(margin) < TIE:
        text = f"the model ties the best baseline {best} on {primary} ({_percent(margin)})"
    elif margin > 0:
        text = f"the model beats the best baseline {best} by {_percent(margin)} on {primary}"
    else:
        text = f"the baseline {best} beats the model by {_percent(-margin)} on {primary}: see report.md"
    return Verdict(text, best, margin)


def verdict_table(metrics: dict[str, Any]) -> Table:
    """Model and baselines on the primary metric with each one's margin against the model."""
    primary, mode = metrics["primary_metric"], metrics["mode"]
    model = metrics["test"].get(primary)
    table = Table(title=f"test {primary} ({'higher' if mode == 'max' else 'lower'} is better)", title_justify="left")
    for column in ("", primary, "model's margin"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row(f"{metrics['model_name']} (model)", _number(model), "")
    for name, values in metrics.get("baselines", {}).items():
        value = values.get(primary)
        margin = relative_margin(model, value, mode) if _finite(model) and _finite(value) else None
        table.add_row(f"{name} (baseline)", _number(value), "–" if margin is None else _percent(margin, signed=True))
    return table


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _number(value: Any) -> str:
    return f"{value:.4f}" if _finite(value) else "–"


def _percent(value: float, signed: bool = False) -> str:
    return f"{value:+.1%}" if signed else f"{value:.1%}"
