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
    kept there under ``breakdowns``). ``warnings``: sentences that undercut the headline result (a baseline
    localising better than the model, say), shown at the top of report.md, in the terminal and in metrics.json."""

    title: str
    body: str = ""
    images: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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


def data_summary(datamodule: Any) -> dict[str, Any]:
    """The data module's :meth:`~sectorkit.core.datamodule.SectorDataModule.data_summary` (``{}`` when it has none
    or it fails: a missing fact must never cost the report)."""
    try:
        return dict(datamodule.data_summary()) if hasattr(datamodule, "data_summary") else {}
    except Exception as err:  # noqa: BLE001
        return {"source": f"not stated ({type(err).__name__}: {err})"}


def data_markdown(summary: dict[str, Any]) -> str:
    """The "Data" section: the source, whole-data facts as a list and one table row per split."""
    lines = [f"Source: {summary.get('source', 'not stated')}.", ""]
    lines += [f"- {name}: {_fact(value)}" for name, value in summary.get("facts", {}).items()]
    splits = summary.get("splits", {})
    columns: list[str] = []
    for facts in splits.values():
        columns += [k for k in facts if k not in columns]
    if splits:
        lines += ["", "| split | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(_fact(facts.get(c)) for c in columns) + " |" for name, facts in splits.items()]
    return "\n".join(lines).strip()


def write_report(ctx: RunContext, sections: list[ReportSection]) -> Path:
    """Write ``report.md`` in the run folder (atomically). The data module's summary (the "Data" section) and the
    sections' warnings are also put in ``ctx.metrics`` (``data``, ``warnings``) for metrics.json."""
    m = ctx.metrics
    summary = data_summary(ctx.datamodule)
    if summary:
        m["data"] = summary
    warnings = [w for section in sections for w in section.warnings]
    if warnings:
        m["warnings"] = warnings
    lines = [
        f"# {m['domain']} — {m['model_name']}",
        "",
        f"Run folder: `{ctx.run_dir}`  ",
        f"Primary metric: **{m['primary_metric']}** ({'higher' if m['mode'] == 'max' else 'lower'} is better); "
        f"best checkpoint: `{m.get('checkpoint') or 'none (last weights)'}`",
        "",
        *([f"**Verdict: {m['verdict']['text']}.**", ""] if m.get("verdict") else []),
        *([f"> **Smoke run** ({m['smoke_run']}).", ""] if m.get("smoke_run") else []),
        *[f"> **Warning:** {warning}\n" for warning in warnings],
        *[f"**{step} failed:** `{error}` (the model's results above are complete)." for step, error in m.get("failures", {}).items()],
        "",
        "## Test metrics (same split for model and baselines)",
        "",
        metrics_table(m),
        "",
        *(["## Data", "", data_markdown(summary), ""] if summary else []),
    ]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.body:
            lines += [section.body, ""]
        lines += [f"![{Path(img).stem}]({Path(img).relative_to(ctx.run_dir)})" for img in section.images]
        lines.append("")
    lines += ["## Configuration", "", "```yaml", OmegaConf.to_yaml(ctx.cfg, resolve=False).rstrip(), "```", ""]
    return atomic_write_text(ctx.run_dir / "report.md", "\n".join(lines))


def _fact(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else _format(value)


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
