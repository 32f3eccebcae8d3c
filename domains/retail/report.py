"""Report sections: metric-vs-K curves (model vs baselines), per-user NDCG distribution, popularity of recommendations."""

from __future__ import annotations

import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from sectorkit.core.io import save_figure  # noqa: E402
from sectorkit.core.reporting import ReportSection, RunContext  # noqa: E402
from sectorkit.domains.retail.metrics import dense_targets, per_user_metrics  # noqa: E402

CURVE_METRICS = ("ndcg", "recall", "hit", "mrr", "precision")


def _by_k(values: dict[str, Any], name: str) -> tuple[list[int], list[float]]:
    pairs = sorted((int(m.group(1)), float(v)) for key, v in values.items() if (m := re.fullmatch(rf"(?:test/)?{name}@(\d+)", key)) and v is not None)
    return [k for k, _ in pairs], [v for _, v in pairs]


def metric_vs_k_figure(metrics: dict[str, Any]) -> Any:
    """One panel per metric: the model's curve over K next to each baseline's."""
    runs = {f"{metrics.get('model_name', 'model')} (model)": metrics["test"], **metrics.get("baselines", {})}
    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(4 * len(CURVE_METRICS), 3.4))
    for ax, name in zip(axes, CURVE_METRICS):
        for i, (label, values) in enumerate(runs.items()):
            ks, ys = _by_k(values, name)
            ax.plot(ks, ys, marker="o", lw=2.5 if i == 0 else 1.2, label=label)
        ax.set_title(f"{name}@K")
        ax.set_xlabel("K")
    axes[0].legend(fontsize=8)
    return fig


@torch.no_grad()
def per_user_and_recommendations(module: Any, datamodule: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per-user test NDCG@k of the model and every recommended item index (top-k for each test user)."""
    module.eval()
    ndcg, recommended = [], []
    for batch in datamodule.test_dataloader():
        batch = {key: v.to(module.device) for key, v in batch.items()}
        top = torch.topk(module(*module.batch_inputs(batch)), k, dim=1).indices
        ndcg.append(per_user_metrics(top, dense_targets(batch["targets"], module.n_items), [k])[f"ndcg@{k}"].cpu())
        recommended.append(top.reshape(-1).cpu())
    return torch.cat(ndcg).numpy(), torch.cat(recommended).numpy()


def popularity_figure(train_items: np.ndarray, recommended: np.ndarray, n_items: int) -> tuple[Any, str]:
    """Share of recommendations vs share of training interactions per item-popularity decile."""
    counts = np.bincount(train_items, minlength=n_items)
    order = np.argsort(-counts, kind="stable")
    decile = np.empty(n_items, dtype=int)
    decile[order] = np.arange(n_items) * 10 // n_items
    catalogue = np.bincount(decile, weights=counts, minlength=10) / max(counts.sum(), 1)
    recs = np.bincount(decile[recommended], minlength=10) / max(len(recommended), 1)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    x = np.arange(10)
    ax.bar(x - 0.2, catalogue, 0.4, label="training interactions")
    ax.bar(x + 0.2, recs, 0.4, label="recommendations")
    ax.set_xticks(x, [f"{10 * i}-{10 * i + 10}%" for i in x], rotation=45, fontsize=7)
    ax.set_xlabel("item popularity decile (most popular first)")
    ax.set_ylabel("share")
    ax.legend()
    text = f"{100 * recs[0]:.1f}% of recommendations come from the top 10% most popular items, which hold {100 * catalogue[0]:.1f}% of training interactions."
    return fig, text


def build_report(ctx: RunContext) -> list[ReportSection]:
    """The retail report sections."""
    sections = [ReportSection("Metrics vs K (model vs baselines)", images=[save_figure(metric_vs_k_figure(ctx.metrics), ctx.plot_path("metrics_vs_k.png"))])]
    if ctx.module is None or ctx.datamodule is None:
        return sections
    k = 10 if 10 in ctx.module.ks else max(ctx.module.ks)
    ndcg, recommended = per_user_and_recommendations(ctx.module, ctx.datamodule, k)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(ndcg, bins=20)
    ax.set_xlabel(f"per-user test NDCG@{k}")
    ax.set_ylabel("users")
    body = f"{len(ndcg)} test users; {100 * np.mean(ndcg == 0):.1f}% get no relevant item in the top {k}; median NDCG@{k} {np.median(ndcg):.3f}."
    sections.append(ReportSection("Per-user NDCG distribution", body, [save_figure(fig, ctx.plot_path("per_user_ndcg.png"))]))
    fig, text = popularity_figure(ctx.datamodule.train_items.numpy(), recommended, ctx.module.n_items)
    sections.append(ReportSection("Popularity of recommended items", text, [save_figure(fig, ctx.plot_path("popularity.png"))]))
    return sections
