"""Finance sections of report.md and the only place finance figures are drawn: after a test, ROC/PR curves of
model vs baselines, precision/recall/alert volume against the threshold, the cost curve, a reliability diagram,
the ROC at low false-positive rates, score distributions, the confusion matrix at the saved alert threshold and
permutation feature importance; after a predict, the distribution of the predicted scores."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, brier_score_loss, confusion_matrix, precision_recall_curve, roc_curve

from sectorkit.core.errors import ConfigError
from sectorkit.core.io import save_figure
from sectorkit.core.progress import phase
from sectorkit.core.reporting import ReportSection, RunContext  # also selects matplotlib's non-interactive Agg backend


@torch.inference_mode()
def model_scores(module: Any, tensors: dict[str, torch.Tensor], batch_size: int = 65_536) -> np.ndarray:
    """Fraud scores (column 0 of ``forward``) of the module on column tensors, in evaluation mode."""
    module.eval()
    device = module.threshold.device
    parts = [module(n.to(device), c.to(device))[:, 0].cpu()
             for n, c in zip(tensors["numeric"].split(batch_size), tensors["categorical"].split(batch_size))]
    return torch.cat(parts).numpy() if parts else np.zeros(0)


IMPORTANCE_DEFAULTS = {"rows": 10_000, "features": 15, "screen_rows": 1_000}  # ~10 s for the default model on 130 features, one thread


def permutation_importance(module: Any, tensors: dict[str, torch.Tensor], scores: np.ndarray, names: list[str], seed: int = 0,
                           max_rows: int = 10_000, features: int | None = 15, screen_rows: int = 1_000) -> list[tuple[str, float]]:
    """Drop in average precision when one numeric feature is shuffled across test rows (largest first);
    ``scores`` are the model's scores of the unshuffled rows.

    Bounded for wide tables: at most ``max_rows`` test rows (a random subset), and with ``features`` set only that many
    features are scored, those with the largest drop on a cheap screen first: ``screen_rows`` of those rows, half of
    them frauds where there are enough (the same measure on a small sample enriched in frauds, so that it is not
    mostly noise). ``features=None``: every feature is scored.
    """
    n = len(tensors["target"])
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows]
    sub = {k: v[rows] for k, v in tensors.items()}
    y = sub["target"].numpy()
    if y.min() == y.max():
        return []
    sub_scores = scores[rows.numpy()]
    generator = torch.Generator().manual_seed(seed)

    def drops(part: dict[str, torch.Tensor], plain: np.ndarray, columns: list[int]) -> list[float]:
        labels = part["target"].numpy()
        base = average_precision_score(labels, plain)
        out = []
        for j in columns:
            numeric = part["numeric"].clone()
            numeric[:, j] = numeric[torch.randperm(len(numeric), generator=generator), j]
            out.append(float(base - average_precision_score(labels, model_scores(module, {**part, "numeric": numeric}))))
        return out

    candidates = list(range(len(names)))
    if features is not None and features < len(names):
        frauds = np.flatnonzero(y == 1)[: screen_rows // 2]
        pick = np.concatenate([frauds, np.flatnonzero(y == 0)[: screen_rows - len(frauds)]])
        screen = drops({k: v[pick] for k, v in sub.items()}, sub_scores[pick], candidates)
        candidates = sorted(np.argsort(screen, kind="stable")[::-1][:features].tolist())
    scored = drops(sub, sub_scores, candidates)
    return sorted(((names[j], d) for j, d in zip(candidates, scored)), key=lambda item: -item[1])


def importance_settings(cfg: Any) -> dict[str, Any]:
    """``importance.rows`` / ``features`` / ``screen_rows`` of the run's config, with the defaults."""
    given = dict(cfg.get("importance") or {}) if cfg is not None else {}
    unknown = sorted(set(given) - set(IMPORTANCE_DEFAULTS))
    if unknown:
        raise ConfigError(f"importance: unknown key(s) {unknown}; expected {sorted(IMPORTANCE_DEFAULTS)}")
    return {**IMPORTANCE_DEFAULTS, **given}


def curves_figure(y: np.ndarray, scores: dict[str, np.ndarray]) -> plt.Figure:
    """ROC (left) and precision-recall (right) curves, one line per scorer."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        precision, recall, _ = precision_recall_curve(y, s)
        roc_ax.plot(fpr, tpr, label=name)
        pr_ax.plot(recall, precision, label=f"{name} (AP {average_precision_score(y, s):.3f})")
    roc_ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc_ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    pr_ax.axhline(y.mean(), color="k", ls=":", lw=0.8)
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=8)
    return fig


def distribution_figure(groups: dict[str, np.ndarray], threshold: float, stage: str) -> plt.Figure:
    """Histogram of model scores per group of transactions (legitimate, fraud, unlabelled), alert threshold marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 51)
    for name, s in groups.items():
        if len(s):
            ax.hist(s, bins=bins, alpha=0.6, label=name, density=True)
    ax.axvline(threshold, color="k", ls="--", label=f"alert threshold {threshold:.3f}")
    ax.set(yscale="log", xlabel="fraud score", ylabel="density", title=f"Score distributions ({stage})")
    ax.legend()
    return fig


LOW_FPR = 0.05  # the zoomed ROC shows false-positive rates up to this
FPR_POINTS = (0.001, 0.005, 0.01, 0.05)  # the operating points tabulated under it


def threshold_grid(scores: np.ndarray, threshold: float, n: int = 201) -> np.ndarray:
    """Candidate thresholds: evenly spaced on 0..1 and at score quantiles (most scores sit near 0), plus ``threshold``."""
    return np.unique(np.concatenate([np.linspace(0, 1, n), np.quantile(scores, np.linspace(0, 1, n)), [threshold]]))


def alert_counts(y: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alerts (score >= threshold, as the module flags) and caught frauds at each threshold."""
    alerts = len(scores) - np.searchsorted(np.sort(scores), thresholds, side="left")
    frauds = np.sort(scores[y == 1])
    return alerts, len(frauds) - np.searchsorted(frauds, thresholds, side="left")


def threshold_figure(y: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[plt.Figure, dict[str, float]]:
    """Precision, recall (left axis) and alert volume (right axis, share of transactions) against the threshold,
    the saved threshold marked; and the three values at the saved threshold."""
    grid = threshold_grid(scores, threshold)
    alerts, caught = alert_counts(y, scores, grid)
    precision = np.where(alerts > 0, caught / np.maximum(alerts, 1), np.nan)
    recall = caught / max(int(y.sum()), 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(grid, precision, label="precision")
    ax.plot(grid, recall, label="recall")
    ax.set(xlabel="alert threshold (fraud score)", ylabel="precision / recall", ylim=(0, 1.02), title="Precision, recall and alert volume (test)")
    volume = ax.twinx()
    volume.plot(grid, 100 * alerts / max(len(scores), 1), color="tab:gray", ls="--", label="alerts (% of transactions)")
    volume.set(yscale="symlog", ylabel="alerts (% of transactions)")
    ax.axvline(threshold, color="k", lw=1, label=f"saved threshold {threshold:.3f}")
    handles = ax.get_legend_handles_labels()[0] + volume.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center right")
    i = int(np.searchsorted(grid, threshold))
    at = {"precision": float(precision[i]), "recall": float(recall[i]), "alerts": int(alerts[i]),
          "alert_rate": float(alerts[i] / max(len(scores), 1))}
    return fig, at


def cost_figure(y: np.ndarray, scores: np.ndarray, threshold: float, cost_missed: float, cost_alert: float) -> tuple[plt.Figure, dict[str, float]]:
    """Test cost (missed frauds x ``cost_missed`` + alerts x ``cost_alert``) against the threshold, the saved
    threshold and the test-optimal one marked; and both costs."""
    grid = threshold_grid(scores, threshold)
    alerts, caught = alert_counts(y, scores, grid)
    cost = cost_missed * (int(y.sum()) - caught) + cost_alert * alerts
    i, best = int(np.searchsorted(grid, threshold)), int(np.argmin(cost))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(grid, cost, color="tab:red")
    ax.axvline(threshold, color="k", lw=1, label=f"saved threshold {threshold:.3f}: cost {cost[i]:,.0f}")
    ax.plot(grid[best], cost[best], "o", color="tab:green", label=f"lowest test cost {cost[best]:,.0f} at {grid[best]:.3f} (hindsight)")
    ax.set(xlabel="alert threshold (fraud score)", ylabel=f"test cost (missed fraud {cost_missed:g}, alert {cost_alert:g})", title="Cost curve (test)")
    ax.legend(fontsize=8)
    return fig, {"cost": float(cost[i]), "best_cost": float(cost[best]), "best_threshold": float(grid[best]), "no_alert_cost": float(cost_missed * y.sum())}


def reliability_bins(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean score, observed fraud rate and number of transactions in each of ``bins`` quantile bins (tied scores
    share a bin, so there may be fewer). Written out rather than sklearn's ``calibration_curve``, which does not
    return the bin sizes the expected calibration error weighs by."""
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, bins + 1)))
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, max(len(edges) - 2, 0))
    counts = np.bincount(index, minlength=max(len(edges) - 1, 1))
    keep = counts > 0
    predicted = np.bincount(index, weights=scores, minlength=len(counts))[keep] / counts[keep]
    observed = np.bincount(index, weights=y.astype(np.float64), minlength=len(counts))[keep] / counts[keep]
    return predicted, observed, counts[keep]


def calibration_figure(y: np.ndarray, scores: dict[str, np.ndarray], bins: int = 10) -> tuple[plt.Figure, dict[str, dict[str, float]]]:
    """Reliability diagram: observed fraud rate against mean score in ``bins`` quantile bins (equal numbers of
    transactions), log axes, one line per scorer; and each scorer's Brier score and expected calibration error."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    stats = {}
    lo = 1.0
    for name, s in scores.items():
        s = np.clip(np.asarray(s, dtype=np.float64), 0, 1)
        predicted, observed, counts = reliability_bins(y, s, bins)
        ece = float(np.sum(counts * np.abs(observed - predicted)) / max(counts.sum(), 1))
        stats[name] = {"brier": float(brier_score_loss(y, s)), "ece": ece}
        ax.plot(predicted, observed, marker="o", lw=2.5 if name == "model" else 1.2, label=f"{name} (ECE {ece:.3f})")
        positive = np.concatenate([predicted[predicted > 0], observed[observed > 0]])
        lo = min(lo, positive.min()) if len(positive) else lo
    lo = max(lo / 2, 1e-5)
    ax.plot([lo, 1], [lo, 1], "k:", lw=0.8, label="perfectly calibrated")
    ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1), xlabel="mean fraud score in bin", ylabel="observed fraud rate in bin",
           title=f"Reliability ({bins} equal-count bins, test)")
    ax.legend(fontsize=8)
    return fig, stats


def low_fpr_figure(y: np.ndarray, scores: dict[str, np.ndarray], threshold: float, max_fpr: float = LOW_FPR) -> tuple[plt.Figure, dict[str, dict[str, float]]]:
    """The ROC curve up to ``max_fpr`` (where fraud teams operate: alerts are paid for), the model's operating
    point at the saved threshold marked; and each scorer's recall at the false-positive rates of ``FPR_POINTS``."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    recall_at = {}
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        keep = fpr <= max_fpr
        ax.plot(100 * np.append(fpr[keep], max_fpr), np.append(tpr[keep], np.interp(max_fpr, fpr, tpr)),
                lw=2.5 if name == "model" else 1.2, label=name)
        recall_at[name] = {f"{p:g}": float(tpr[fpr <= p].max()) for p in FPR_POINTS}
    model = scores["model"]
    alert = model >= threshold
    point_fpr, point_tpr = alert[y == 0].mean(), alert[y == 1].mean()
    if point_fpr <= max_fpr:
        ax.plot(100 * point_fpr, point_tpr, "k*", ms=12, label=f"saved threshold {threshold:.3f}")
    ax.set(xlim=(0, 100 * max_fpr), ylim=(0, 1.02), xlabel="false-positive rate (%)", ylabel="true-positive rate (recall)",
           title=f"ROC at false-positive rates up to {max_fpr:.0%} (test)")
    ax.legend(fontsize=8)
    return fig, recall_at


def operating_sections(ctx: RunContext, y: np.ndarray, scores: dict[str, np.ndarray], threshold: float) -> list[ReportSection]:
    """Threshold, cost, calibration and low-false-positive-rate sections (test, both classes present)."""
    hp = ctx.module.hparams
    fig, at = threshold_figure(y, scores["model"], threshold)
    curves = save_figure(fig, ctx.plot_path("threshold_curves.png"))
    body = (f"At the saved threshold {threshold:.4f}: precision {at['precision']:.3f}, recall {at['recall']:.3f}, "
            f"{at['alerts']} alerts ({at['alert_rate']:.2%} of {len(y)} test transactions).")
    cost_missed, cost_alert = float(hp.cost_missed_fraud), float(hp.cost_alert)
    fig, cost = cost_figure(y, scores["model"], threshold, cost_missed, cost_alert)
    cost_plot = save_figure(fig, ctx.plot_path("cost_curve.png"))
    cost_body = (f"Cost of a missed fraud {cost_missed:g} (`model.cost_missed_fraud`), of an alert {cost_alert:g} (`model.cost_alert`). "
                 f"Test cost at the saved threshold: {cost['cost']:,.0f} (no alerts at all: {cost['no_alert_cost']:,.0f}). "
                 f"The lowest test cost, {cost['best_cost']:,.0f} at threshold {cost['best_threshold']:.4f}, is hindsight on the test "
                 "window, shown for reference; `model.threshold_policy=cost` chooses the threshold by these costs on validation.")
    fig, calibration = calibration_figure(y, scores)
    reliability = save_figure(fig, ctx.plot_path("calibration.png"))
    rows = "\n".join(f"| {name} | {v['brier']:.4f} | {v['ece']:.4f} |" for name, v in calibration.items())
    calibration_body = ("Observed fraud rate against the mean score in ten bins of equal size; on the diagonal a score reads as a "
                        "probability. Weighted training (`model.pos_weight`, balanced sampling) shifts scores upwards.\n\n"
                        f"| scorer | Brier score | expected calibration error |\n|---|---|---|\n{rows}")
    fig, recall_at = low_fpr_figure(y, scores, threshold)
    low = save_figure(fig, ctx.plot_path("roc_low_fpr.png"))
    header = " | ".join(f"recall at {p:.1%} FPR" for p in FPR_POINTS)
    rows = "\n".join(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values.values()) + " |" for name, values in recall_at.items())
    low_body = f"| scorer | {header} |\n" + "|---" * (len(FPR_POINTS) + 1) + f"|\n{rows}"
    return [
        ReportSection("Precision, recall and alert volume against the threshold", body, [curves], metrics={"at_threshold": at}),
        ReportSection("Cost curve", cost_body, [cost_plot], metrics={"cost": cost}),
        ReportSection("Calibration (reliability)", calibration_body, [reliability], metrics={"calibration": calibration}),
        ReportSection(f"ROC at low false-positive rates (up to {LOW_FPR:.0%})", low_body, [low], metrics={"recall_at_fpr": recall_at}),
    ]


def score_groups(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """The predicted scores split by label: legitimate, fraud and (where labels are unknown) unlabelled."""
    scores = table["score"].to_numpy()
    if "label" not in table:
        return {"unlabelled": scores}
    label = table["label"].to_numpy(np.float64)
    return {"legitimate": scores[label == 0], "fraud": scores[label == 1], "unlabelled": scores[np.isnan(label)]}


def threshold_text(module: Any) -> str:
    """How the saved alert threshold was chosen, in words."""
    hp = module.hparams
    costs = f", missed fraud {hp.cost_missed_fraud:g}, alert {hp.cost_alert:g}" if hp.threshold_policy == "cost" else ""
    return f"Threshold {float(module.threshold):.4f}, chosen on the validation window: {module.threshold_rule} (model.threshold_policy={hp.threshold_policy}{costs})"


def build_report(ctx: RunContext) -> list[ReportSection]:
    """The finance report sections for one run (``ctx.stage`` test) or the figure of a predict's scores."""
    table, module = ctx.predictions, ctx.module
    threshold = float(module.threshold)
    path = save_figure(distribution_figure(score_groups(table), threshold, ctx.stage), ctx.plot_path("score_distributions.png"))
    if ctx.stage == "predict":
        return [ReportSection("Score distributions (predict)", f"{len(table)} transactions, {int(table['alert'].sum())} alerts. {threshold_text(module)}.", [path])]
    y = table["label"].to_numpy().astype(int)
    scores = {"model": table["score"].to_numpy(), **{name: result.predictions for name, result in ctx.baselines.items()}}
    sections = []
    if y.min() != y.max():
        curves = save_figure(curves_figure(y, scores), ctx.plot_path("roc_pr.png"))
        sections.append(ReportSection("ROC and precision-recall curves (test window)", "Model against the in-run baselines on the same test rows.", [curves]))
        sections += operating_sections(ctx, y, scores, threshold)
    sections.append(ReportSection("Score distributions", f"Test transactions: {len(y)}, frauds: {int(y.sum())}.", [path]))
    tn, fp, fn, tp = confusion_matrix(y, table["alert"].to_numpy(), labels=[0, 1]).ravel()
    body = (
        f"{threshold_text(module)}; saved in the checkpoint and used by predict.\n\n"
        "| | predicted legitimate | predicted fraud (alert) |\n|---|---|---|\n"
        f"| legitimate | {tn} | {fp} |\n| fraud | {fn} | {tp} |\n\n"
        f"Precision {tp / max(tp + fp, 1):.3f}, recall {tp / max(tp + fn, 1):.3f}."
    )
    sections.append(ReportSection("Confusion matrix at the alert threshold", body))
    dm = ctx.datamodule
    notes = dm.metric_notes()
    if notes:
        body = "\n".join(f"- {name}: {note}" for name, note in notes.items())
        sections.insert(0, ReportSection("Metrics that could not be computed", body, metrics={"metric_notes": notes}))
    settings = importance_settings(ctx.cfg)
    names = dm.fitted["numeric"]
    with phase("permutation importance"):
        importance = permutation_importance(module, dm.datasets["test"].tensors, scores["model"], names, seed=int(dm.seed),
                                            max_rows=int(settings["rows"]), features=settings["features"], screen_rows=int(settings["screen_rows"]))
    if importance:
        rows = "\n".join(f"| {name} | {drop:+.4f} |" for name, drop in importance)
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(importance) + 1))
        ax.barh([n for n, _ in importance][::-1], [d for _, d in importance][::-1])
        ax.set(xlabel="drop in AP when shuffled", title="Permutation importance (test)")
        bars = save_figure(fig, ctx.plot_path("permutation_importance.png"))
        scope = (f"The {len(importance)} of {len(names)} numeric features with the largest drops on a screen of {settings['screen_rows']} rows, half "
                 f"of them frauds where there are enough (importance.features, importance.screen_rows), scored" if len(importance) < len(names)
                 else "All numeric features, scored")
        text = f"{scope} on at most {settings['rows']} test rows (importance.rows).\n\n| feature | AP drop |\n|---|---|\n{rows}"
        sections.append(ReportSection("Permutation feature importance", text, [bars]))
    return sections
