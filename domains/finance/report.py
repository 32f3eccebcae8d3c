"""Finance sections of report.md and the only place finance figures are drawn: after a test, ROC/PR curves of
model vs baselines, score distributions, the confusion matrix at the saved alert threshold and permutation
feature importance; after a predict, the distribution of the predicted scores."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_curve

from sectorkit.core.errors import ConfigError
from sectorkit.core.io import save_figure
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
