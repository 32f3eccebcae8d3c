"""Crop-yield sections of report.md and the yield figures: predicted vs actual per region-year and per year
after a test, yield history with next season's forecast for ``predict``, axes in the yield's units where known.
The only place yield figures are drawn."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from sectorkit.core.io import save_figure
from sectorkit.core.reporting import ReportSection, RunContext  # also selects matplotlib's non-interactive Agg backend
from sectorkit.domains.agriculture.crop_yield.data import YieldDataModule
from sectorkit.domains.agriculture.crop_yield.protocols import fold_scores


PROTOCOL_TEXT = {
    "last_years": "The last test years are predicted from earlier years only (one fold).",
    "expanding_window": "Expanding window: each test year is predicted by a model fitted on the earlier years only "
    "(one fold per year).",
    "leave_one_year_out": "Leave one year out: each year is predicted by a model fitted on all the other years (one "
    "fold per year).",
}


def build_report(ctx: RunContext) -> list[ReportSection]:
    """After a test: predicted vs actual for the model and the run's baselines (their test predictions), and the
    metrics of each fold of the protocol (also kept in metrics.json under ``breakdowns.test_by_fold``). After
    ``predict`` on a file: the yield history with the forecast season beside the predictions file (no section)."""
    dm: YieldDataModule = ctx.datamodule
    if ctx.stage == "predict":
        if dm.predict_split() == "predict":
            save_figure(yield_forecast_figure(dm.frames["history"], ctx.predictions, yield_label(dm)), ctx.plot_path("forecast.png"))
        return []
    test = dm.frames["test"]
    pred = torch.cat([torch.as_tensor(o) for o in ctx.outputs]).numpy().astype(np.float64)
    base = {name: np.asarray(result.predictions) for name, result in ctx.baselines.items()}
    path = save_figure(yield_figure(test, pred, base, yield_label(dm)), ctx.plot_path("yield_predicted_vs_actual.png"))
    by_year = test.assign(model=pred, **base).groupby("year")[["yield", "model", *base]].mean()
    body = (
        f"{PROTOCOL_TEXT.get(dm.protocol, '')} Each fold's trend, scaling and baselines are fitted on its own years. "
        "Mean over regions per year:\n\n" + frame_markdown(by_year.round(3))
    )
    folds = fold_scores(test, dm.folds, {"model": pred, **base})
    fold_body = (
        f"`data.protocol={dm.protocol}`: {len(dm.folds)} fold(s); the pooled test metrics above score every test row "
        "with its own fold's model. NRMSE per fold (RMSE and MAE in metrics.json, `breakdowns.test_by_fold`):\n\n"
        + fold_table(folds, ["model", *base])
    )
    return [
        ReportSection("Yield: predicted vs actual per year", body, [path]),
        ReportSection("Yield: test metrics per fold", fold_body, metrics={"test_by_fold": folds}),
    ]


def yield_label(dm: YieldDataModule) -> str:
    """The yield column with its units for axis labels: t/ha for the built-in sample; a user's file does not state
    them, so its column name alone."""
    return f"{dm.target} (t/ha)" if dm.path is None else dm.target


def fold_table(folds: list[dict], names: list[str]) -> str:
    """Markdown: one row per fold (its test years and rows) with each predictor's NRMSE, then the mean over folds."""
    lines = ["| fold | test years | rows | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
    for fold in folds:
        years = fold["test_years"]
        label = f"{years[0]}-{years[-1]}" if len(years) > 1 else str(years[0])
        cells = " | ".join(f"{fold[name]['nrmse']:.3f}" for name in names)
        lines.append(f"| {fold['fold']} | {label} | {fold['n']} | {cells} |")
    if len(folds) > 1:
        means = " | ".join(f"{np.mean([fold[name]['nrmse'] for fold in folds]):.3f}" for name in names)
        lines.append(f"| mean over folds | | {sum(f['n'] for f in folds)} | {means} |")
    return "\n".join(lines)


def yield_figure(test: pd.DataFrame, pred: np.ndarray, base: dict[str, np.ndarray], label: str = "yield") -> plt.Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.scatter(test["yield"], pred, s=18, label="model")
    if "linear_trend" in base:
        left.scatter(test["yield"], base["linear_trend"], s=12, alpha=0.6, label="linear trend")
    lo, hi = float(min(test["yield"].min(), pred.min())), float(max(test["yield"].max(), pred.max()))
    left.plot([lo, hi], [lo, hi], color="gray", lw=1)
    left.set(xlabel=f"actual {label}", ylabel=f"predicted {label}", title="Region-years of the test span")
    left.legend(fontsize=8)
    yearly = test.assign(model=pred, **base).groupby("year")[["yield", "model", *base]].mean()
    right.plot(yearly.index, yearly["yield"], color="black", marker="o", label="actual")
    right.plot(yearly.index, yearly["model"], marker="s", label="model")
    for name in base:
        right.plot(yearly.index, yearly[name], lw=1, alpha=0.7, label=name)
    right.set(xlabel="year", ylabel=f"mean {label} over regions", title="Per year")
    right.legend(fontsize=8)
    return fig


def frame_markdown(frame: pd.DataFrame) -> str:
    """A small DataFrame as a markdown table (index first), without the optional ``tabulate`` dependency."""
    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += [
        "| " + " | ".join(map(str, [idx, *row])) + " |" for idx, row in zip(frame.index, frame.to_numpy().tolist())
    ]
    return "\n".join(lines)


def yield_forecast_figure(history: pd.DataFrame, forecast: pd.DataFrame, label: str = "yield") -> plt.Figure:
    """Yield history per region with next season's predicted yield (for ``predict``)."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (region, g) in enumerate(history.groupby("region")):
        color = f"C{i % 10}"
        ax.plot(g["year"], g["yield"], color=color, lw=1, alpha=0.7)
        f = forecast[forecast["region"] == region]
        ax.scatter(f["year"], f["predicted_yield"], color=color, marker="*", s=90, label=str(region))
    ax.set(xlabel="year", ylabel=label, title="Yield history (lines) and forecast (stars)")
    ax.legend(fontsize=7, ncol=2)
    return fig
