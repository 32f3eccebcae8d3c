"""A run's report: metrics of the model next to its baselines, plus the domain's own sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from sectorkit.core.io import atomic_write_text, save_figure  # noqa: E402


@dataclass
class ReportSection:
    """One titled part of report.md: markdown text and PNG images (paths inside the run folder), and the numbers
    behind its tables that belong in metrics.json too (``metrics``: e.g. per-series or per-segment test metrics,
    kept there under ``breakdowns``)."""

    title: str
    body: str = ""
    images: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What a domain's report hook is handed: where to write, the config, data and model, and the results.

    ``stage`` is ``test`` after training or evaluation (``metrics`` and ``baselines`` filled in) or ``predict``
    (``metrics`` empty). ``predictions`` is the table :meth:`predict_frame` built and ``outputs`` the raw
    model outputs it was built from; ``baselines`` holds each baseline's result, fitted once in the run.
    """

    run_dir: Path
    cfg: DictConfig
    datamodule: Any
    module: Any
    metrics: dict[str, Any]
    trainer: Any = None
    stage: str = "test"
    predictions: Any = None
    outputs: list[Any] = field(default_factory=list)
    baselines: dict[str, Any] = field(default_factory=dict)
    plots_dir: Path | None = None

    def plot_path(self, name: str) -> Path:
        """Where to save a plot called ``name`` (the run's ``plots/`` folder unless ``plots_dir`` says otherwise)."""
        path = (self.plots_dir or self.run_dir / "plots") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def metrics_table(metrics: dict[str, Any]) -> str:
    """A markdown table: one row for the model and one per baseline, one column per metric."""
    rows = {f"**{metrics['model_name']}** (model)": metrics["test"]}
    rows.update({f"{name} (baseline)": values for name, values in metrics.get("baselines", {}).items()})
    columns: list[str] = []
    for values in rows.values():
        columns += [k for k, v in values.items() if k not in columns and isinstance(v, (int, float))]
    primary = metrics["primary_metric"]
    columns.sort(key=lambda c: (c != primary, c))
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        cells = [_format(values.get(c)) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def primary_metric_plot(ctx: RunContext) -> ReportSection | None:
    """Bar chart of the primary test metric: model vs each baseline."""
    metrics = ctx.metrics
    primary = metrics["primary_metric"]
    names = [metrics["model_name"]] + list(metrics.get("baselines", {}))
    values = [metrics["test"].get(primary)] + [b.get(primary) for b in metrics.get("baselines", {}).values()]
    if len(names) < 2 or any(v is None for v in values):
        return None
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(names)))
    colors = ["tab:blue"] + ["tab:gray"] * (len(names) - 1)
    ax.barh(names[::-1], values[::-1], color=colors[::-1])
    ax.set_xlabel(f"test {primary} ({'higher' if metrics['mode'] == 'max' else 'lower'} is better)")
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:.4g}", va="center")
    path = save_figure(fig, ctx.plot_path("primary_metric.png"))
    return ReportSection("Model vs baselines", images=[path])


def write_report(ctx: RunContext, sections: list[ReportSection]) -> Path:
    """Write ``report.md`` in the run folder (atomically)."""
    m = ctx.metrics
    lines = [
        f"# {m['domain']} — {m['model_name']}",
        "",
        f"Run folder: `{ctx.run_dir}`  ",
        f"Primary metric: **{m['primary_metric']}** ({'higher' if m['mode'] == 'max' else 'lower'} is better); "
        f"best checkpoint: `{m.get('checkpoint') or 'none (last weights)'}`",
        "",
        *([f"**Verdict: {m['verdict']['text']}.**", ""] if m.get("verdict") else []),
        *([f"> **Smoke run** ({m['smoke_run']}).", ""] if m.get("smoke_run") else []),
        *[f"**{step} failed:** `{error}` (the model's results above are complete)." for step, error in m.get("failures", {}).items()],
        "",
        "## Test metrics (same split for model and baselines)",
        "",
        metrics_table(m),
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.body:
            lines += [section.body, ""]
        lines += [f"![{Path(img).stem}]({Path(img).relative_to(ctx.run_dir)})" for img in section.images]
        lines.append("")
    lines += ["## Configuration", "", "```yaml", OmegaConf.to_yaml(ctx.cfg, resolve=False).rstrip(), "```", ""]
    return atomic_write_text(ctx.run_dir / "report.md", "\n".join(lines))


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
