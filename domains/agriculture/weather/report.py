"""Weather sections of report.md and the weather figures: per-horizon errors against every baseline, fan charts
with the baselines' median forecasts beside the model's quantiles, per-quantile coverage (nominal vs observed) and
a PIT histogram after a test, the next days' forecast fans for ``predict``; axes carry the target's units
(``data.expected_units``). The only place weather figures are drawn."""

from __future__ import annotations

from itertools import pairwise

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
    error_plot = save_figure(per_horizon_figure(model, baselines, target_label(dm)), ctx.plot_path("per_horizon_mae.png"))
    baseline_forecasts = {name: np.asarray(result.predictions) for name, result in ctx.baselines.items()}
    fan = save_figure(fan_figure(dm, preds, baselines=baseline_forecasts), ctx.plot_path("fan_charts.png"))
    coverage = {"model": quantile_coverage(preds, target), **{n: quantile_coverage(f, target) for n, f in baseline_forecasts.items()}}
    coverage_plot = save_figure(coverage_figure(dm.quantiles, coverage), ctx.plot_path("quantile_coverage.png"))
    pit = {"model": pit_shares(preds, target), **{n: pit_shares(f, target) for n, f in baseline_forecasts.items()}}
    pit_plot = save_figure(pit_figure(dm.quantiles, pit), ctx.plot_path("pit_histogram.png"))
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
        ReportSection("Fan charts (10-90 % band, median, actual)",
                      f"The model's quantile band and median with each baseline's median forecast (thin lines) from the same origins; "
                      f"{target_label(dm)}.", [fan]),
        ReportSection("Per-quantile coverage (nominal vs observed)", coverage_text(dm.quantiles, coverage), [coverage_plot],
                      metrics={"quantile_coverage": {"quantiles": list(dm.quantiles), **coverage}}),
        ReportSection("PIT histogram", pit_text(dm.quantiles, pit), [pit_plot], metrics={"pit": {"quantiles": list(dm.quantiles), **pit}}),
    ]


def target_label(dm: WeatherDataModule) -> str:
    """The target with its units for axis labels: ``data.expected_units`` when set, else the column name alone."""
    return f"{dm.target} ({dm.expected_units})" if dm.expected_units else dm.target


def quantile_coverage(forecasts: np.ndarray, target: np.ndarray) -> list[float]:
    """Per quantile level, the share of test values at or below that quantile's forecast (``forecasts`` (N, H, Q),
    ``target`` (N, H)): equal to the level for a calibrated forecast."""
    forecasts = np.asarray(forecasts, dtype=np.float64)
    return [float(np.mean(target <= forecasts[..., q])) for q in range(forecasts.shape[-1])]


def pit_shares(forecasts: np.ndarray, target: np.ndarray) -> list[float]:
    """A PIT histogram of quantile forecasts: the share of test values falling below the first quantile, between
    consecutive quantiles and above the last (Q + 1 bins). A calibrated forecast puts the nominal widths there
    (0.1, 0.4, 0.4, 0.1 for the 10/50/90 % quantiles); a U shape means intervals too narrow, a hump too wide."""
    forecasts = np.sort(np.asarray(forecasts, dtype=np.float64), axis=-1)  # crossed quantiles count in order
    bins = (target[..., None] > forecasts).sum(axis=-1).reshape(-1)
    return (np.bincount(bins, minlength=forecasts.shape[-1] + 1) / max(len(bins), 1)).tolist()


def coverage_figure(quantiles: tuple[float, ...], coverage: dict[str, list[float]]) -> plt.Figure:
    """Observed against nominal level of each quantile, one line per forecaster, the diagonal for reference."""
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="calibrated")
    for name, observed in coverage.items():
        ax.plot(quantiles, observed, marker="s" if name == "model" else "o", lw=2.5 if name == "model" else 1, label=name,
                color="black" if name == "model" else None)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal quantile level", ylabel="share of test values below the forecast quantile",
           title="Per-quantile coverage (test)")
    ax.legend(fontsize=8)
    return fig


def pit_figure(quantiles: tuple[float, ...], pit: dict[str, list[float]]) -> plt.Figure:
    """PIT histograms binned at the quantile levels, as densities (share / bin width: 1 everywhere when calibrated)."""
    edges = np.array([0.0, *quantiles, 1.0])
    widths = np.diff(edges)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / len(pit)
    for i, (name, shares) in enumerate(pit.items()):
        ax.bar(np.arange(len(widths)) - 0.4 + (i + 0.5) * width, np.asarray(shares) / widths, width,
               color="black" if name == "model" else None, label=name)
    ax.axhline(1.0, color="k", ls=":", lw=0.8, label="calibrated")
    ax.set_xticks(np.arange(len(widths)), [f"{lo:g}-{hi:g}" for lo, hi in pairwise(edges)])
    ax.set(xlabel="PIT bin (between forecast quantile levels)", ylabel="density (share / bin width)", title="PIT histogram (test)")
    ax.legend(fontsize=8)
    return fig


def coverage_text(quantiles: tuple[float, ...], coverage: dict[str, list[float]]) -> str:
    """Markdown: observed share below each quantile forecast, per forecaster."""
    lines = [("Share of test values (every origin and horizon) at or below each quantile forecast; a calibrated forecaster "
              "matches the nominal level."), "", "| forecaster | " + " | ".join(f"q{q:g} (nominal {q:g})" for q in quantiles) + " |",
             "|---" * (len(quantiles) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |" for name, values in coverage.items()]
    return "\n".join(lines)


def pit_text(quantiles: tuple[float, ...], pit: dict[str, list[float]]) -> str:
    """Markdown: the PIT shares per bin and the nominal ones."""
    edges = [0.0, *quantiles, 1.0]
    header = [f"{lo:g}-{hi:g}" for lo, hi in pairwise(edges)]
    lines = [("Where each test value falls among its forecast quantiles (probability integral transform binned at the "
              "quantile levels). Flat density is calibrated; a U shape means intervals too narrow, a hump too wide."), "",
             "| forecaster | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|",
             "| nominal | " + " | ".join(f"{hi - lo:.3f}" for lo, hi in pairwise(edges)) + " |"]
    lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |" for name, values in pit.items()]
    return "\n".join(lines)


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


def per_horizon_figure(model: dict, baselines: dict[str, dict], label: str = "target") -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4))
    h = np.arange(1, len(model["per_horizon"]["mae"]) + 1)
    for name, scores in baselines.items():
        ax.plot(h, scores["per_horizon"]["mae"], marker="o", lw=1, alpha=0.7, label=name)
    ax.plot(h, model["per_horizon"]["mae"], marker="s", lw=2.5, color="black", label="model")
    ax.set(xlabel="horizon (days)", ylabel=f"MAE of {label}", title="Test MAE per horizon")
    ax.legend(fontsize=8)
    return fig


def fan_figure(
    dm: WeatherDataModule, preds: np.ndarray, n_series: int = 3, n_fans: int = 4, spacing: int = 10,
    baselines: dict[str, np.ndarray] | None = None,
) -> plt.Figure:
    """For up to ``n_series`` series: actuals over the last part of the test span with forecast fans from a
    few origins, and each baseline's median forecast (``baselines``: (N, H, Q) per name) from the same origins."""
    origins = dm.origins["test"]
    series_ids = np.unique(dm.panel.series_index[origins])[:n_series]
    fig, axes = plt.subplots(len(series_ids), 1, figsize=(11.5, 3 * len(series_ids)), squeeze=False)
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
            for j, (name, forecast) in enumerate((baselines or {}).items()):
                ax.plot(dates, forecast[i, :, forecast.shape[-1] // 2], color=f"C{(j + 1) % 10}", lw=0.9, ls="--",
                        label=f"{name} (median)" if k == 0 else None)
        ax.set_title(f"{dm.stats.series[s]}: {dm.target}")
        ax.set_ylabel(target_label(dm))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
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
        ax.set_ylabel(target_label(dm))
        ax.legend(fontsize=8, loc="upper left")
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig
