"""Every healthcare figure: per-image heatmap overlays (test and predict), and the report's heatmap grid, ROC
curves vs the baselines, score histograms and decision thresholds (test).

Nothing here runs the model or fits a baseline: the figures are drawn from the run's outputs
(``ctx.outputs``, ``ctx.predictions``) and the baselines' results (``ctx.baselines``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from sectorkit.core.io import save_figure  # noqa: E402
from sectorkit.core.reporting import ReportSection, RunContext  # noqa: E402


def _middle(x: np.ndarray) -> np.ndarray:
    """A 2D view of one (C, *S) array: first channel, middle slice for volumes."""
    x = x[0]
    return x[x.shape[0] // 2] if x.ndim == 3 else x


def _concat(outputs: list[Any], index: int) -> np.ndarray:
    """One of the forward outputs (0 score, 1 map) over every batch."""
    return torch.cat([o[index] for o in outputs]).float().numpy()


def heatmap_name(row: int, name: str) -> str:
    """The overlay file of a predictions row, ``heatmaps/<row>_<name>.png``: the row number keeps two inputs
    with the same file name (``test/good/img/0000.png``, ``test/Ungood/img/0000.png``) apart."""
    stem = re.sub(r"\.(nii\.gz|[A-Za-z0-9]+)$", "", name)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_.") or "image"
    return f"heatmaps/{row:05d}_{slug}.png"


def save_heatmaps(ctx: RunContext, images: np.ndarray, maps: np.ndarray, names: list[str]) -> list[Path]:
    """One PNG per image under the run's plots: the image in grey with its 0..1 anomaly map overlaid."""
    paths = []
    for row, (image, amap, name) in enumerate(zip(images, maps, names, strict=True)):
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.imshow(_middle(image), cmap="gray")
        ax.imshow(_middle(amap), cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.axis("off")
        paths.append(save_figure(fig, ctx.plot_path(heatmap_name(row, name))))
    return paths


def overlay_grid(images: np.ndarray, maps: np.ndarray, masks: np.ndarray, scores: np.ndarray, labels: np.ndarray, n: int = 6) -> Any:
    """Highest- and lowest-scored test images with their maps and mask outlines."""
    order = np.argsort(scores)
    picks = np.concatenate([order[::-1][:n], order[:n]])
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.8), squeeze=False)
    for ax, i in zip(axes.flat, picks, strict=False):
        ax.imshow(_middle(images[i]), cmap="gray")
        ax.imshow(_middle(maps[i]), cmap="jet", alpha=0.35, vmin=0, vmax=1)
        if masks[i].any():
            ax.contour(_middle(masks[i]), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(f"{'abnormal' if labels[i] else 'normal'} {scores[i]:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("top row: highest scores; bottom row: lowest scores (white: true lesion)")
    return fig


def threshold_table(module: Any) -> str:
    """The image and pixel thresholds in force and the rule that chose each (``threshold_rule``)."""
    lines = ["| | threshold_rule | threshold (raw score) |", "|---|---|---|"]
    for level, value in (("image", module.image_threshold), ("pixel", module.pixel_threshold)):
        lines.append(f"| {level} | {module.threshold_rules[level]} | {float(value):.4g} |")
    return "\n".join(lines)


def build_report(ctx: RunContext) -> list[ReportSection]:
    """Predict: one heatmap PNG per input beside the predictions file. Test: the same per test image, plus the
    report's heatmap grid, ROC curves (model vs baselines), per-class score histograms and the thresholds."""
    dm = ctx.datamodule
    maps = _concat(ctx.outputs, 1)
    names = ctx.predictions["name"].tolist()
    if ctx.stage == "predict":
        save_heatmaps(ctx, dm.arrays("predict")[0][: len(maps)], maps, names)
        return []
    images, masks, labels = (a[: len(maps)] for a in dm.arrays("test"))
    scores = _concat(ctx.outputs, 0)
    save_heatmaps(ctx, images, maps, names)
    grid = save_figure(overlay_grid(images, maps, masks, scores, labels), ctx.plot_path("heatmaps.png"))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    curves = {ctx.metrics["model_name"]: scores}
    curves.update({f"{name} (baseline)": result.predictions["scores"][: len(scores)] for name, result in ctx.baselines.items()})
    for name, s in curves.items():
        fpr, tpr, _ = roc_curve(labels, s)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=8)
    roc = save_figure(fig, ctx.plot_path("roc.png"))
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist([scores[labels == 0], scores[labels == 1]], bins=20, label=["normal", "abnormal"], alpha=0.8)
    ax.axvline(0.5, color="k", ls="--", lw=0.8, label="threshold")
    ax.set_xlabel("normalised image score")
    ax.legend()
    hist = save_figure(fig, ctx.plot_path("score_histogram.png"))
    folder = ctx.plot_path("heatmaps").relative_to(ctx.run_dir)
    rule = f"`model.threshold={ctx.module.hparams.threshold}`"
    return [
        ReportSection("Anomaly heatmaps", body=f"One overlay per test image in `{folder}/` (`<row>_<name>.png`, rows of the predictions table).",
                      images=[grid]),
        ReportSection("ROC curves vs baselines (test, image level)", images=[roc]),
        ReportSection("Score histograms per class", body="Scores are normalised so the validation-chosen threshold sits at 0.5.", images=[hist]),
        ReportSection("Decision thresholds (chosen on validation)", body=f"{threshold_table(ctx.module)}\n\nRule: {rule}; the baselines use the same rule."),
    ]
