"""Report sections: metric-vs-K curves (model vs baselines), per-user NDCG distribution, popularity of recommendations,
metrics by user-activity segment (table and plot, cold users stated), example top-K lists beside a few users' histories.

Everything is drawn from what the run already computed: the model's test (or predict) outputs in
``ctx.outputs`` and each baseline's top-K items in ``ctx.baselines``; nothing is scored again.
"""

from __future__ import annotations

import re
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from sectorkit.core.io import save_figure
from sectorkit.core.reporting import ReportSection, RunContext  # also selects matplotlib's non-interactive Agg backend
from sectorkit.domains.retail.metrics import RANKING_METRICS, dense_targets, per_user_metrics, segment_metrics

CURVE_METRICS = ("ndcg", "recall", "hit", "mrr", "precision")


def _by_k(values: dict[str, Any], name: str) -> tuple[list[int], list[float]]:
    pairs = sorted((int(m.group(1)), float(v)) for key, v in values.items() if (m := re.fullmatch(rf"(?:test/)?{name}@(\d+)", key)) and v is not None)
    return [k for k, _ in pairs], [v for _, v in pairs]


def metric_vs_k_figure(model_name: str, model_metrics: dict[str, Any], baselines: dict[str, dict[str, float]]) -> Any:
    """One panel per metric: the model's curve over K next to each baseline's."""
    runs = {f"{model_name} (model)": model_metrics, **baselines}
    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(4 * len(CURVE_METRICS), 3.4))
    for ax, name in zip(axes, CURVE_METRICS):
        for i, (label, values) in enumerate(runs.items()):
            ks, ys = _by_k(values, name)
            ax.plot(ks, ys, marker="o", lw=2.5 if i == 0 else 1.2, label=label)
        ax.set_title(f"{name}@K")
        ax.set_xlabel("K")
    axes[0].legend(fontsize=8)
    return fig


def recommended_items(outputs: list[dict[str, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """The model's ranked items per user ([users, top_k]) and which of them are real recommendations (finite
    score: a user who has seen nearly the whole catalogue gets fewer)."""
    items = torch.cat([o["items"] for o in outputs]).numpy()
    scores = torch.cat([o["scores"] for o in outputs]).numpy()
    return items, np.isfinite(scores)


def per_user_ndcg(items: np.ndarray, datamodule: Any, k: int) -> np.ndarray:
    """Per-user test NDCG@k of ranked ``items`` (rows in the order of the test users)."""
    return per_user_metrics(torch.from_numpy(items[:, :k]), targets_of_test_users(datamodule), [k])[f"ndcg@{k}"].numpy()


def targets_of_test_users(datamodule: Any) -> torch.Tensor:
    """[test users, n_items] bool test items, rows in the order of the test loader."""
    dataset = datamodule.eval_dataset("test")
    return dense_targets(torch.from_numpy(dataset.targets.padded(np.arange(len(dataset.users)), -1)), datamodule.n_items)


def segment_section(datamodule: Any, ranked: dict[str, np.ndarray], k: int, model_name: str = "model") -> ReportSection:
    """Test metrics@``k`` by user-activity segment (``data.segments``) for each recommender's ranked items
    (``ranked``: ``model`` and each baseline's name; rows in the order of the test users): NDCG and Recall
    tables in the text, every ranking metric in ``metrics`` (metrics.json ``breakdowns.user_activity_segments``)."""
    segments = datamodule.test_segments()
    targets = targets_of_test_users(datamodule)
    n = len(segments.names)
    values = {name: segment_metrics(torch.from_numpy(items[:, :k]), targets, segments.codes, n, [k]) for name, items in ranked.items()}
    users = np.bincount(segments.codes, minlength=n)
    rows = [{"segment": segments.names[j], "train_interactions": segments.ranges[j], "users": int(users[j]),
             **{name: {m: values[name][j][f"{m}@{k}"] for m in RANKING_METRICS} for name in ranked}} for j in range(n)]
    header = [f"{model_name} (model)" if name == "model" else name for name in ranked]
    intro = (f"Test users by their number of training interactions: very light has {segments.ranges[0]}, the others are cut "
             "at quantiles of the rest (`data.segments`); each cell averages the users of its segment.")
    lines = [intro]
    for metric, title in (("ndcg", "NDCG"), ("recall", "Recall")):
        lines += ["", f"{title}@{k}:", "", "| segment | training interactions | users | " + " | ".join(header) + " |",
                  "|---" * (len(ranked) + 3) + "|"]
        for row in rows:
            cells = ["–" if row[name][metric] is None else f"{row[name][metric]:.4f}" for name in ranked]
            lines.append(f"| {row['segment']} | {row['train_interactions']} | {row['users']} | " + " | ".join(cells) + " |")
    return ReportSection("Metrics by user activity", "\n".join(lines), metrics={"user_activity_segments": {"k": k, "segments": rows}})


EXAMPLE_USERS = 3  # example top-K lists: the lightest, the median and the heaviest test user by training activity
HISTORY_SHOWN = 5  # latest known items shown per example user


def item_names(datamodule: Any) -> list[str]:
    """Display names of the items: ``id: title`` where the data has titles (the built-in sample's item table or a
    ``title`` column of ``data.items_path``), else the item ids."""
    ids = [str(i) for i in datamodule.item_ids]
    has_items = getattr(datamodule, "item_side_cfg", {}).get("items_path") or datamodule.path is None
    try:
        aligned = datamodule.item_side.aligned if has_items else None
    except Exception:  # noqa: BLE001 - titles are a nicety; ids are always there
        aligned = None
    if aligned is None or "title" not in aligned.columns:
        return ids
    return [f"{i}: {t}" if str(t) else i for i, t in zip(ids, aligned["title"].astype(str))]


def example_rows(activity: np.ndarray, n: int = EXAMPLE_USERS) -> np.ndarray:
    """Test rows of the example users: the lightest, the median and the heaviest by training activity (distinct)."""
    order = np.argsort(activity, kind="stable")
    picks = order[np.linspace(0, len(order) - 1, n).round().astype(int)] if len(order) else order
    return np.array(list(dict.fromkeys(picks.tolist())), dtype=int)


def examples_section(datamodule: Any, items: np.ndarray, real: np.ndarray, k: int) -> ReportSection:
    """A table: for a few test users, their latest known items, the model's top-``k`` (hits in bold) and their
    held-out test items."""
    dataset = datamodule.eval_dataset("test")
    users = np.asarray(dataset.users)
    activity = datamodule.test_segments().activity
    rows = example_rows(activity)
    names = item_names(datamodule)
    history = datamodule.known_history("test").padded(users[rows], -1)
    targets = dataset.targets.padded(rows, -1)
    lines = [f"| user | training interactions | latest known items (newest first) | top {k} of the model (**hit**) | test items |",
             "|---|---|---|---|---|"]
    examples = []
    for j, row in enumerate(rows):
        seen = [int(i) for i in history[j] if i >= 0][::-1]
        held = {int(i) for i in targets[j] if i >= 0}
        top = [int(i) for i, ok in zip(items[row, :k], real[row, :k]) if ok]
        shown = ", ".join(names[i] for i in seen[:HISTORY_SHOWN]) + (f" (+{len(seen) - HISTORY_SHOWN} more)" if len(seen) > HISTORY_SHOWN else "")
        ranked = ", ".join(f"**{names[i]}**" if i in held else names[i] for i in top)
        lines.append(f"| {datamodule.user_ids[users[row]]} | {int(activity[row])} | {shown or '(none: cold user)'} | {ranked} | "
                     f"{', '.join(names[i] for i in sorted(held))} |")
        examples.append({"user": str(datamodule.user_ids[users[row]]), "train_interactions": int(activity[row]), "top": [names[i] for i in top],
                         "hits": sum(i in held for i in top)})
    intro = (f"The lightest, the median and the heaviest test user by training activity: what the model ranked in its top {k} "
             "beside what they had done and what they did next (items they already know are never recommended).")
    return ReportSection("Example recommendations", intro + "\n\n" + "\n".join(lines), metrics={"example_users": examples})


def segment_figure(rows: list[dict[str, Any]], names: list[str], labels: list[str], k: int) -> Any:
    """NDCG@k and Recall@k per user-activity segment, one bar per recommender, users per segment on the axis."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(rows))
    width = 0.8 / max(len(names), 1)
    for ax, metric in zip(axes, ("ndcg", "recall")):
        for i, (name, label) in enumerate(zip(names, labels)):
            values = [np.nan if r[name][metric] is None else r[name][metric] for r in rows]
            ax.bar(x - 0.4 + (i + 0.5) * width, values, width, label=label, color="black" if name == "model" else None)
        ax.set_xticks(x, [f"{r['segment']}\n{r['train_interactions']}\n{r['users']} users" for r in rows], fontsize=7)
        ax.set(xlabel="user segment (training interactions)", ylabel=f"test {metric}@{k}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def popularity_figure(train_items: np.ndarray, recommended: dict[str, np.ndarray], n_items: int) -> tuple[Any, str]:
    """Share of recommendations per item-popularity decile, for each recommender, against the share of training
    interactions; the text describes the first recommender."""
    counts = np.bincount(train_items, minlength=n_items)
    order = np.argsort(-counts, kind="stable")
    decile = np.empty(n_items, dtype=int)
    decile[order] = np.arange(n_items) * 10 // n_items
    catalogue = np.bincount(decile, weights=counts, minlength=10) / max(counts.sum(), 1)
    shares = {name: np.bincount(decile[items], minlength=10) / max(len(items), 1) for name, items in recommended.items()}
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    x = np.arange(10)
    bars = {"training interactions": catalogue, **shares}
    width = 0.8 / len(bars)
    for i, (name, share) in enumerate(bars.items()):
        ax.bar(x - 0.4 + (i + 0.5) * width, share, width, label=name)
    ax.set_xticks(x, [f"{10 * i}-{10 * i + 10}%" for i in x], rotation=45, fontsize=7)
    ax.set_xlabel("item popularity decile (most popular first)")
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    first = next(iter(shares.values()))
    text = (f"{100 * first[0]:.1f}% of recommendations come from the top 10% most popular items, which hold {100 * catalogue[0]:.1f}% "
            "of training interactions.")
    return fig, text


def build_report(ctx: RunContext) -> list[ReportSection]:
    """The retail report sections (after a test), or the popularity figure of the recommendations (after predict)."""
    items, real = recommended_items(ctx.outputs)
    train_items = ctx.datamodule.train_items.numpy()
    n_items = ctx.datamodule.n_items
    if ctx.stage == "predict":
        fig, text = popularity_figure(train_items, {"recommendations": items[real]}, n_items)
        return [ReportSection("Popularity of recommended items", text, [save_figure(fig, ctx.plot_path("popularity.png"))])]

    model_name = ctx.metrics.get("model_name", "model")
    baseline_metrics = {name: result.metrics for name, result in ctx.baselines.items()}
    figure = metric_vs_k_figure(model_name, ctx.metrics["test"], baseline_metrics)
    sections = [ReportSection("Metrics vs K (model vs baselines)", images=[save_figure(figure, ctx.plot_path("metrics_vs_k.png"))])]
    k = min(10 if 10 in ctx.module.ks else max(ctx.module.ks), items.shape[1])
    ndcg = per_user_ndcg(items, ctx.datamodule, k)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(ndcg, bins=20)
    ax.set_xlabel(f"per-user test NDCG@{k}")
    ax.set_ylabel("users")
    body = (f"{len(ndcg)} test users; {100 * np.mean(ndcg == 0):.1f}% get no relevant item in the top {k}; "
            f"median NDCG@{k} {np.median(ndcg):.3f}.")
    sections.append(ReportSection("Per-user NDCG distribution", body, [save_figure(fig, ctx.plot_path("per_user_ndcg.png"))]))
    recommended = {f"{model_name} (model)": items[:, :k][real[:, :k]]}
    recommended.update({name: result.predictions[:, :k].reshape(-1) for name, result in ctx.baselines.items()})
    fig, text = popularity_figure(train_items, recommended, n_items)
    sections.append(ReportSection("Popularity of recommended items", text, [save_figure(fig, ctx.plot_path("popularity.png"))]))
    ranked = {"model": items, **{name: result.predictions for name, result in ctx.baselines.items()}}
    segments = segment_section(ctx.datamodule, ranked, k, model_name)
    rows = segments.metrics["user_activity_segments"]["segments"]
    labels = [f"{model_name} (model)" if name == "model" else name for name in ranked]
    segments.images.append(save_figure(segment_figure(rows, list(ranked), labels, k), ctx.plot_path("segments.png")))
    cold = ctx.datamodule.test_segments().activity == 0
    segments.body += (f"\n\nCold users (no training interaction) among the test users: {int(cold.sum())}"
                      + (f", in the first segment; the model's NDCG@{k} on them is {ndcg[cold].mean():.4f}." if cold.any() else "."))
    sections.append(segments)
    sections.append(examples_section(ctx.datamodule, items, real, k))
    return sections
