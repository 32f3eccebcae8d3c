"""Report sections (heatmap overlays, ROC curves vs baselines, score histograms) and heatmap PNGs for predict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from sectorkit.core.io import save_figure  # noqa: E402
from sectorkit.core.reporting import ReportSection  # noqa: E402


def _middle(x: np.ndarray) -> np.ndarray:
    """A 2D view of one (C, *S) array: first channel, middle slice for volumes."""
    x = x[0]
    return x[x.shape[0] // 2] if x.ndim == 3 else x


def save_heatmaps(images: np.ndarray, maps: np.ndarray, names: list[str], folder: Path) -> list[str]:
    """One PNG per image: the image in grey with the 0..1 anomaly map overlaid; returns the file paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, amap, name in zip(images, maps, names, strict=True):
        path = folder / (Path(name).name.split(".")[0] + "_heatmap.png")
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.imshow(_middle(image), cmap="gray")
        ax.imshow(_middle(amap), cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.axis("off")
        paths.append(str(save_figure(fig, path)))
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


def build_report(ctx: Any) -> list[ReportSection]:
    """Heatmap grid, ROC curves (model vs baselines) and per-class score histograms on the test split."""
    from sectorkit.domains.healthcare.baselines import run_baselines
    from sectorkit.domains.healthcare.module import predict_outputs

    dm, module = ctx.datamodule, ctx.module
    images, masks, labels = dm.arrays("test")
    scores, maps, _, _ = (t.numpy() for t in predict_outputs(module, dm.test_dataloader()))
    grid = save_figure(overlay_grid(images, maps, masks, scores, labels), ctx.plot_path("heatmaps.png"))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    curves = {ctx.metrics.get("model_name", "model"): scores}
    curves.update({f"{k} (baseline)": v["scores"] for k, v in run_baselines(dm).items()})
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
    return [
        ReportSection("Anomaly heatmaps", images=[grid]),
        ReportSection("ROC curves vs baselines (test, image level)", images=[roc]),
        ReportSection("Score histograms per class", body="Scores are normalised so the validation-chosen threshold sits at 0.5.", images=[hist]),
    ]
