"""Finance sections of report.md: ROC/PR curves of model vs baselines, score distributions, the
confusion matrix at the saved alert threshold and permutation feature importance."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_curve  # noqa: E402

from sectorkit.core.io import save_figure  # noqa: E402
from sectorkit.core.reporting import ReportSection, RunContext  # noqa: E402


@torch.no_grad()
def model_scores(module: Any, tensors: dict[str, torch.Tensor], batch_size: int = 65_536) -> np.ndarray:
    """Fraud scores (column 0 of ``forward``) of the module on column tensors, in evaluation mode."""
    module = module.eval().cpu()
    parts = [module(n, c)[:, 0] for n, c in zip(tensors["numeric"].split(batch_size), tensors["categorical"].split(batch_size))]
    return torch.cat(parts).numpy() if parts else np.zeros(0)


def permutation_importance(module: Any, tensors: dict[str, torch.Tensor], names: list[str], seed: int = 0, max_rows: int = 50_000) -> list[tuple[str, float]]:
    """Drop in average precision when one numeric feature is shuffled across test rows (largest first)."""
    n = len(tensors["target"])
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows]
    sub = {k: v[rows] for k, v in tensors.items()}
    y = sub["target"].numpy()
    if y.min() == y.max():
        return []
    base = average_precision_score(y, model_scores(module, sub))
    generator = torch.Generator().manual_seed(seed)
    drops = []
    for j, name in enumerate(names):
        shuffled = sub["numeric"].clone()
        shuffled[:, j] = shuffled[torch.randperm(len(shuffled), generator=generator), j]
        drops.append((name, float(base - average_precision_score(y, model_scores(module, {**sub, "numeric": shuffled})))))
    return sorted(drops, key=lambda item: -item[1])


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


def distribution_figure(y: np.ndarray, s: np.ndarray, threshold: float) -> plt.Figure:
    """Histogram of model scores for legitimate and fraudulent test transactions."""
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 51)
    ax.hist(s[y == 0], bins=bins, alpha=0.6, label="legitimate", density=True)
    ax.hist(s[y == 1], bins=bins, alpha=0.6, label="fraud", density=True)
    ax.axvline(threshold, color="k", ls="--", label=f"alert threshold {threshold:.3f}")
    ax.set(yscale="log", xlabel="fraud score", ylabel="density", title="Score distributions (test)")
    ax.legend()
    return fig


def build_report(ctx: RunContext) -> list[ReportSection]:
    """The finance report sections for one run."""
    dm, module = ctx.datamodule, ctx.module
    tensors = dm.datasets["test"].tensors
    y = tensors["target"].numpy().astype(int)
    scores = {"model": model_scores(module, tensors)}
    if not getattr(dm, "baseline_scores", None):  # the baselines hook keeps its scores; refit if it has not run
        from sectorkit.domains.finance import run_baselines

        run_baselines(dm, ctx.cfg)
    scores.update(dm.baseline_scores)
    sections = []
    if y.min() != y.max():
        path = save_figure(curves_figure(y, scores), ctx.plot_path("roc_pr.png"))
        sections.append(ReportSection("ROC and precision-recall curves (test window)", "Model against the in-run baselines on the same test rows.", [path]))
    threshold = float(module.threshold)
    path = save_figure(distribution_figure(y, scores["model"], threshold), ctx.plot_path("score_distributions.png"))
    sections.append(ReportSection("Score distributions", f"Test transactions: {len(y)}, frauds: {int(y.sum())}.", [path]))
    tn, fp, fn, tp = confusion_matrix(y, scores["model"] >= threshold, labels=[0, 1]).ravel()
    hp = module.hparams
    policy = "max F1" if hp.threshold_policy == "f1" else f"min expected cost (missed fraud {hp.cost_missed_fraud:g}, alert {hp.cost_alert:g})"
    body = (
        f"Threshold {threshold:.4f}, chosen on the validation window by {policy}; saved in the checkpoint and used by predict.\n\n"
        "| | predicted legitimate | predicted fraud (alert) |\n|---|---|---|\n"
        f"| legitimate | {tn} | {fp} |\n| fraud | {fn} | {tp} |\n\n"
        f"Precision {tp / max(tp + fp, 1):.3f}, recall {tp / max(tp + fn, 1):.3f}."
    )
    sections.append(ReportSection("Confusion matrix at the alert threshold", body))
    importance = permutation_importance(module, tensors, dm.fitted["numeric"], seed=int(getattr(dm, "seed", 0)))
    if importance:
        rows = "\n".join(f"| {name} | {drop:+.4f} |" for name, drop in importance)
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(importance) + 1))
        ax.barh([n for n, _ in importance][::-1], [d for _, d in importance][::-1])
        ax.set(xlabel="drop in AP when shuffled", title="Permutation importance (test)")
        path = save_figure(fig, ctx.plot_path("permutation_importance.png"))
        sections.append(ReportSection("Permutation feature importance", "| feature | AP drop |\n|---|---|\n" + rows, [path]))
    return sections
