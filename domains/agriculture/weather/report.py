"""Weather sections of report.md and the weather figures: per-horizon errors against every baseline and fan
charts after a test, the next days' forecast fans for ``predict``. The only place weather figures are drawn."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from sectorkit.core.io import save_figure
from sectorkit.core.reporting import ReportSection, RunContext  # also selects matplotlib's non-interactive Agg backend
from sectorkit.domains.agriculture.metrics import score_forecasts, scores_by_series
from sectorkit.domains.agriculture.weather.data import WeatherDataModule


def build_report(ctx: RunContext) -> list[ReportSection]:
    """After a test: the per-horizon table and plot, the per-station metrics of the model and every baseline (also
    kept in metrics.json under ``breakdowns.test_by_series``) and the fan charts, from the run's test outputs and
    baseline forecasts. After ``predict``: the forecast plot beside the predictions file (no section)."""
    dm: WeatherDataModule = ctx.datamodule
    if ctx.stage == "predict":
        save_figure(forecast_figure(dm, ctx.predictions), ctx.plot_path("forecast.png"))
        return []
    preds = torch.cat([torch.as_tensor(o) for o in ctx.outputs]).numpy()
    origins, h = dm.origins["test"], dm.horizon
    target = dm.panel.target[origins[:, None] + np.arange(1, h + 1)]
    scale = dm.stats.mase_scale[dm.panel.series_index[origins]]
    model = score_forecasts(preds, target, scale, dm.quantiles)
    baselines = {name: score_forecasts(result.predictions, target, scale, dm.quantiles) for name, result in ctx.baselines.items()}
    error_plot = save_figure(per_horizon_figure(model, baselines), ctx.plot_path("per_horizon_mae.png"))
    fan = save_figure(fan_figure(dm, preds), ctx.plot_path("fan_charts.png"))
    body = (
        "MAE per horizon on the rolling-origin test backtest (one origin per day). MASE scale: in-sample "
        "one-day naive MAE on the training span, so values above 1 at longer horizons are normal. Baseline "
        "intervals come from per-horizon quantiles of their validation errors.\n\n" + per_horizon_table(model, baselines)
    )
    by_series = series_breakdown(dm, preds, {name: result.predictions for name, result in ctx.baselines.items()})
    return [
        ReportSection("Per-horizon errors vs baselines", body, [error_plot]),
        ReportSection(
            "Per-station test metrics",
            "Each station's test origins scored on their own (the pooled metrics above weigh stations by their number "
            "of test origins; per-horizon values in metrics.json, `breakdowns.test_by_series`).\n\n"
            + series_table(by_series),
            metrics={"test_by_series": by_series},
        ),
        ReportSection("Fan charts (10-90 % band, median, actual)", "", [fan]),
    ]


def series_breakdown(dm: WeatherDataModule, preds: np.ndarray, baselines: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per series: its number of test origins and the test metrics of the model and of every baseline on its own
    origins (means over horizons, and MAE, pinball and coverage per horizon)."""
    origins, h = dm.origins["test"], dm.horizon
    target = dm.panel.target[origins[:, None] + np.arange(1, h + 1)]
    series = dm.panel.series_index[origins]
    scale = dm.stats.mase_scale[series]

    def score(forecasts: np.ndarray) -> dict[str, dict]:
        return scores_by_series(np.asarray(forecasts), target, scale, series, dm.stats.series, dm.quantiles)

    model = score(preds)
    others = {name: score(forecasts) for name, forecasts in baselines.items()}
    return {
        name: {
            "n_origins": entry.pop("n_origins"),
            "model": entry,
            "baselines": {b: {k: v for k, v in others[b][name].items() if k != "n_origins"} for b in others},
        }
        for name, entry in model.items()
    }


def series_table(by_series: dict[str, dict]) -> str:
    """Markdown: per station, the model and every baseline (MAE, pinball, coverage, MASE), then the model's MAE per
    horizon at each station."""
    lines = ["| station | origins | forecaster | MAE | pinball | coverage | MASE |", "|---" * 7 + "|"]
    for station, entry in by_series.items():
        rows = {"**model**": entry["model"], **entry["baselines"]}
        for name, scores in rows.items():
            lines.append(
                f"| {station} | {entry['n_origins']} | {name} | {scores['mae']:.3f} | {scores['pinball']:.3f} | "
                f"{scores['coverage']:.3f} | {scores['mase']:.3f} |"
            )
    h = len(next(iter(by_series.values()))["model"]["per_horizon"]["mae"]) if by_series else 0
    lines += ["", "| station | model MAE " + " | ".join(f"h{i}" for i in range(1, h + 1)) + " |", "|---" * (h + 1) + "|"]
    for station, entry in by_series.items():
        lines.append(f"| {station} | " + " | ".join(f"{v:.3f}" for v in entry["model"]["per_horizon"]["mae"]) + " |")
    return "\n".join(lines)


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
