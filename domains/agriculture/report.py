"""Report sections: fan charts and per-horizon errors for weather, predicted vs actual for yield."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from sectorkit.core.io import save_figure  # noqa: E402
from sectorkit.core.reporting import ReportSection, RunContext  # noqa: E402
from sectorkit.domains.agriculture.baselines import evaluate_weather_baselines, yield_baseline_predictions  # noqa: E402
from sectorkit.domains.agriculture.data import WeatherDataModule, YieldDataModule  # noqa: E402
from sectorkit.domains.agriculture.metrics import score_forecasts  # noqa: E402


def predict_test(module: Any, datamodule: Any) -> np.ndarray:
    """The module's test-span outputs, in data-loader order."""
    return torch.cat(module.predict_loader(datamodule.test_dataloader())).numpy()


def build_report(ctx: RunContext) -> list[ReportSection]:
    """The agriculture sections of report.md (weather or yield, following the run's data module)."""
    if isinstance(ctx.datamodule, YieldDataModule):
        return yield_sections(ctx)
    return weather_sections(ctx)


# --- weather -----------------------------------------------------------------------------------------
def weather_sections(ctx: RunContext) -> list[ReportSection]:
    dm: WeatherDataModule = ctx.datamodule
    preds = predict_test(ctx.module, dm)
    origins, h = dm.origins["test"], dm.horizon
    target = dm.panel.target[origins[:, None] + np.arange(1, h + 1)]
    scale = dm.stats.mase_scale[dm.panel.series_index[origins]]
    model = score_forecasts(preds, target, scale, dm.quantiles)
    baselines = evaluate_weather_baselines(dm.panel, dm.origins, h, dm.quantiles, per_horizon=True)
    table = per_horizon_table(model, baselines)
    error_plot = ctx.plot_path("per_horizon_mae.png")
    save_figure(per_horizon_figure(model, baselines), error_plot)
    fan = ctx.plot_path("fan_charts.png")
    save_figure(fan_figure(dm, preds), fan)
    body = (
        "MAE per horizon on the rolling-origin test backtest (one origin per day). MASE scale: in-sample "
        "one-day naive MAE on the training span, so values above 1 at longer horizons are normal. Baseline "
        "intervals come from per-horizon quantiles of their validation errors.\n\n" + table
    )
    return [
        ReportSection("Per-horizon errors vs baselines", body, [error_plot]),
        ReportSection("Fan charts (10-90 % band, median, actual)", "", [fan]),
    ]


def per_horizon_table(model: dict, baselines: dict[str, dict]) -> str:
    """Markdown: MAE (and pinball) per horizon for the model and every baseline."""
    h = len(model["per_horizon"]["mae"])
    lines = ["| | metric | " + " | ".join(f"h{i}" for i in range(1, h + 1)) + " | mean |", "|---" * (h + 3) + "|"]
    rows = {"**model**": model, **baselines}
    for name, scores in rows.items():
        for metric in ("mae", "pinball"):
            values = scores["per_horizon"][metric]
            lines.append(
                f"| {name} | {metric} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {scores[metric]:.3f} |"
            )
    return "\n".join(lines)


def per_horizon_figure(model: dict, baselines: dict[str, dict]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4))
    h = np.arange(1, len(model["per_horizon"]["mae"]) + 1)
    for name, scores in baselines.items():
        ax.plot(h, scores["per_horizon"]["mae"], marker="o", lw=1, alpha=0.7, label=name)
    ax.plot(h, model["per_horizon"]["mae"], marker="s", lw=2.5, color="black", label="model")
    ax.set(xlabel="horizon (days)", ylabel="MAE", title="Test MAE per horizon")
    ax.legend(fontsize=8)
    return fig


def fan_figure(
    dm: WeatherDataModule, preds: np.ndarray, n_series: int = 3, n_fans: int = 4, spacing: int = 10
) -> plt.Figure:
    """For up to ``n_series`` series: actuals over the last part of the test span with forecast fans from a
    few origins."""
    origins = dm.origins["test"]
    series_ids = np.unique(dm.panel.series_index[origins])[:n_series]
    fig, axes = plt.subplots(len(series_ids), 1, figsize=(9, 3 * len(series_ids)), squeeze=False)
    h = dm.horizon
    for ax, s in zip(axes[:, 0], series_ids):
        idx = np.flatnonzero(dm.panel.series_index[origins] == s)
        chosen = idx[-1 - spacing * np.arange(n_fans)[::-1]]
        chosen = chosen[chosen >= idx[0]]
        start, end = origins[chosen[0]] - 2 * h, origins[chosen[-1]] + h
        rows = np.arange(start, end + 1)
        ax.plot(dm.panel.dates[rows], dm.panel.target[rows], color="black", lw=1, label="actual")
        for k, i in enumerate(chosen):
            dates = dm.panel.dates[origins[i] + 1 : origins[i] + 1 + h]
            ax.fill_between(
                dates,
                preds[i, :, 0],
                preds[i, :, -1],
                color="tab:blue",
                alpha=0.25,
                label="10-90 %" if k == 0 else None,
            )
            ax.plot(
                dates, preds[i, :, preds.shape[-1] // 2], color="tab:blue", lw=1.5, label="median" if k == 0 else None
            )
        ax.set_title(f"{dm.stats.series[s]}: {dm.target}")
        ax.legend(fontsize=8, loc="upper left")
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig


# --- yield -------------------------------------------------------------------------------------------
def yield_sections(ctx: RunContext) -> list[ReportSection]:
    dm: YieldDataModule = ctx.datamodule
    test = dm.frames["test"]
    history = pd.concat([dm.frames["train"], dm.frames["val"]])
    pred = predict_test(ctx.module, dm)
    base = yield_baseline_predictions(history, test)
    path = ctx.plot_path("yield_predicted_vs_actual.png")
    save_figure(yield_figure(test, pred, base), path)
    by_year = test.assign(model=pred, **base).groupby("year")[["yield", "model", *base]].mean()
    body = (
        "Test years are predicted from earlier years only (one expanding-window cut). Mean over regions "
        "per year:\n\n" + frame_markdown(by_year.round(3))
    )
    return [ReportSection("Yield: predicted vs actual per year", body, [path])]


def yield_figure(test: pd.DataFrame, pred: np.ndarray, base: dict[str, np.ndarray]) -> plt.Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.scatter(test["yield"], pred, s=18, label="model")
    left.scatter(test["yield"], base["linear_trend"], s=12, alpha=0.6, label="linear trend")
    lo, hi = float(min(test["yield"].min(), pred.min())), float(max(test["yield"].max(), pred.max()))
    left.plot([lo, hi], [lo, hi], color="gray", lw=1)
    left.set(xlabel="actual yield", ylabel="predicted yield", title="Region-years of the test span")
    left.legend(fontsize=8)
    yearly = test.assign(model=pred, **base).groupby("year")[["yield", "model", *base]].mean()
    right.plot(yearly.index, yearly["yield"], color="black", marker="o", label="actual")
    right.plot(yearly.index, yearly["model"], marker="s", label="model")
    for name in base:
        right.plot(yearly.index, yearly[name], lw=1, alpha=0.7, label=name)
    right.set(xlabel="year", ylabel="mean yield over regions", title="Per year")
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


def forecast_figure(
    dm: WeatherDataModule, forecast: pd.DataFrame, history_days: int = 60, max_series: int = 6
) -> plt.Figure:
    """The last ``history_days`` of each series and its next-H-days forecast fan (for ``predict``)."""
    series = list(dict.fromkeys(forecast["series_id"]))[:max_series]
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 2.8 * len(series)), squeeze=False)
    names = np.asarray(dm.stats.series)[dm.panel.series_index]
    qcols = [c for c in forecast.columns if c.startswith("q")]
    for ax, sid in zip(axes[:, 0], series):
        rows = np.flatnonzero(names == sid)[-history_days:]
        ax.plot(dm.panel.dates[rows], dm.panel.target[rows], color="black", lw=1, label="observed")
        f = forecast[forecast["series_id"] == sid]
        ax.fill_between(
            f["date"], f[qcols[0]], f[qcols[-1]], color="tab:blue", alpha=0.3, label=f"{qcols[0]}-{qcols[-1]}"
        )
        ax.plot(f["date"], f[qcols[len(qcols) // 2]], color="tab:blue", lw=2, label="median forecast")
        ax.set_title(f"{sid}: next {f['horizon'].max()} days of {dm.target}")
        ax.legend(fontsize=8, loc="upper left")
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig


def yield_forecast_figure(history: pd.DataFrame, forecast: pd.DataFrame) -> plt.Figure:
    """Yield history per region with next season's predicted yield (for ``predict``)."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (region, g) in enumerate(history.groupby("region")):
        color = f"C{i % 10}"
        ax.plot(g["year"], g["yield"], color=color, lw=1, alpha=0.7)
        f = forecast[forecast["region"] == region]
        ax.scatter(f["year"], f["predicted_yield"], color=color, marker="*", s=90, label=str(region))
    ax.set(xlabel="year", ylabel="yield", title="Yield history (lines) and forecast (stars)")
    ax.legend(fontsize=7, ncol=2)
    return fig
