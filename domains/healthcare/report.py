"""Every healthcare figure: per-image heatmap overlays (test and predict), and the report's heatmap grid, per-image
panels (image, mask, map with colour bar), lesion localisation vs the baselines (with a warning at the top of
report.md when a baseline localises better), ROC curves vs the baselines, score histograms and decision
thresholds (test).

Nothing here fits anything. Scores come from the run's predictions table and the baselines' results; a run keeps
one score per image, not the anomaly maps, so the maps of the few images drawn (the grid's top and bottom
cases, and at most ``data.max_heatmaps`` per-image overlays) are recomputed with the tested model's
``forward``, the same inference path as ``predict``, a chunk of images at a time.
"""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from sectorkit.core.io import atomic_path, save_figure  # noqa: E402
from sectorkit.core.reporting import ReportSection, RunContext  # noqa: E402
from sectorkit.domains.healthcare.data import images_per_chunk  # noqa: E402
from sectorkit.domains.healthcare.module import forward_outputs  # noqa: E402

GRID_COLUMNS = 6  # the report's grid: this many highest- and lowest-scored test images
PANEL_CASES = 3  # per-image panels (image, mask, map): this many of the grid's highest and lowest (PANEL_CASES <= GRID_COLUMNS)
CHUNK = 64  # images whose maps are recomputed and drawn at a time
CHUNK_VOXELS = CHUNK * 256 * 256  # at most this many pixels (voxels) a chunk: 64 images up to 256 px, 2 volumes at 128³
OVERLAY_SIDE = 192  # per-image overlays are enlarged (nearest neighbour) to at least this many pixels a side
JET = plt.get_cmap("jet")


def _middle(x: np.ndarray) -> np.ndarray:
    """A 2D view of one (C, *S) array: first channel, middle slice for volumes."""
    x = x[0]
    return x[x.shape[0] // 2] if x.ndim == 3 else x


def heatmap_name(row: int, name: str) -> str:
    """The overlay file of a predictions row, ``heatmaps/<row>_<name>.png``: the row number keeps two inputs
    with the same file name (``test/good/img/0000.png``, ``test/Ungood/img/0000.png``) apart."""
    stem = re.sub(r"\.(nii\.gz|[A-Za-z0-9]+)$", "", name)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_.") or "image"
    return f"heatmaps/{row:05d}_{slug}.png"


def heatmap_rows(scores: np.ndarray, limit: int | None) -> np.ndarray:
    """The rows that get a per-image overlay: the ``limit`` highest scores (every row when ``limit`` is None)."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    return order if limit is None else order[:limit]


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.4) -> Image.Image:
    """One image (C, *S) in grey with its 0..1 anomaly map in the jet colours over it, enlarged to at least
    ``OVERLAY_SIDE`` pixels a side (nearest neighbour)."""
    grey = np.clip(_middle(image), 0, 1)[..., None]
    rgb = (1 - alpha) * grey + alpha * JET(np.clip(_middle(amap), 0, 1))[..., :3]
    picture = Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    scale = max(1, math.ceil(OVERLAY_SIDE / max(rgb.shape[:2])))
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def chunk_size(datamodule: Any) -> int:
    """Images whose maps are recomputed at a time: ``CHUNK``, fewer for large volumes (at most ``CHUNK_VOXELS``
    voxels), so the network's activations stay bounded whatever the volume size."""
    return images_per_chunk(datamodule, CHUNK, CHUNK_VOXELS)


def save_volume_map(path: Path, amap: np.ndarray) -> None:
    """A volume's normalised anomaly map (1, D, H, W) as a NIfTI file: uint8 with scale slope 1/255, so a reader gets
    0..1 (pixel threshold at 0.5) to within 1/255; at the model's image size, identity affine (voxel axes as read)."""
    import nibabel as nib

    picture = nib.Nifti1Image(np.round(np.clip(amap[0], 0, 1) * 255).astype(np.uint8), np.eye(4))
    picture.header.set_slope_inter(1 / 255, 0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(picture.to_bytes(), compresslevel=1))


def save_heatmaps(ctx: RunContext, stage: str, rows: np.ndarray, names: list[str]) -> list[Path]:
    """One PNG per row of ``rows`` under the run's plots (``heatmaps/<row>_<name>.png``): the image with its
    anomaly map overlaid (a volume's middle slice), :func:`chunk_size` images at a time (written as pictures, not
    matplotlib figures: ~10x faster). A volume also gets its whole map, ``heatmaps/<row>_<name>.nii.gz``."""
    paths = []
    chunk = chunk_size(ctx.datamodule)
    for start in range(0, len(rows), chunk):
        picked = rows[start:start + chunk]
        images = np.concatenate([part[0] for part in ctx.datamodule.chunks(stage, picked, chunk)])
        maps = forward_outputs(ctx.module, images, chunk)[1].float().numpy()
        for row, image, amap in zip(picked, images, maps, strict=True):
            path = ctx.plot_path(heatmap_name(int(row), names[row]))
            with atomic_path(path) as tmp:
                overlay(image, amap).save(tmp, format="png", compress_level=1)
            if amap.ndim == 4:
                save_volume_map(path.with_name(path.name.removesuffix(".png") + ".nii.gz"), amap)
            paths.append(path)
    return paths


def overlay_grid(images: np.ndarray, maps: np.ndarray, masks: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                 n: int = GRID_COLUMNS) -> Any:
    """The grid of the picked test images (``n`` highest- then ``n`` lowest-scored) with their maps and mask outlines."""
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, amap, mask, score, label in zip(axes.flat, images, maps, masks, scores, labels, strict=False):
        ax.imshow(_middle(image), cmap="gray")
        ax.imshow(_middle(amap), cmap="jet", alpha=0.35, vmin=0, vmax=1)
        if mask.any():
            ax.contour(_middle(mask), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(f"{'abnormal' if label else 'normal'} {score:.2f}", fontsize=8)
    fig.suptitle("top row: highest scores; bottom row: lowest scores (white: true lesion)")
    return fig


def case_panels(images: np.ndarray, masks: np.ndarray, maps: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                names: list[str]) -> Any:
    """One row per picked image: the image, its ground-truth lesion mask and the model's anomaly map with a colour
    bar (normalised: the pixel threshold sits at 0.5, outlined in white), the image score and threshold in the title."""
    fig, axes = plt.subplots(len(images), 3, figsize=(9, 2.6 * len(images)), squeeze=False)
    for row, (image, mask, amap, score, label, name) in enumerate(zip(images, masks, maps, scores, labels, names, strict=True)):
        left, middle, right = axes[row]
        left.imshow(_middle(image), cmap="gray")
        left.set_title(f"{name} ({'abnormal' if label else 'normal'})", fontsize=8)
        middle.imshow(_middle(mask), cmap="gray", vmin=0, vmax=1)
        middle.set_title("ground-truth mask" if mask.any() else "ground-truth mask (no lesion)", fontsize=8)
        shown = right.imshow(_middle(amap), cmap="jet", vmin=0, vmax=1)
        if (_middle(amap) >= 0.5).any() and (_middle(amap) < 0.5).any():
            right.contour(_middle(amap), levels=[0.5], colors="white", linewidths=0.8)
        fig.colorbar(shown, ax=right, fraction=0.046, pad=0.04).set_label("anomaly (pixel threshold 0.5)", fontsize=7)
        verdict = "flagged" if score >= 0.5 else "not flagged"
        right.set_title(f"score {score:.3f}, threshold 0.500: {verdict}", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


LOCALISATION = {"pixel_auroc": "pixel AUROC", "aupro": "AUPRO", "dice": "Dice"}
LOCALISATION_WARN = ("pixel_auroc", "dice")  # a baseline above the model on either gets a warning
LOCALISATION_TIE = 1e-3  # differences smaller than this are ties


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def localisation_warnings(metrics: dict[str, Any]) -> list[str]:
    """One sentence per baseline whose pixel AUROC or Dice is above the model's (by more than ``LOCALISATION_TIE``):
    its heatmaps point at lesions better, whatever the image-level verdict says."""
    model = metrics.get("test", {})
    warnings = []
    for name, values in metrics.get("baselines", {}).items():
        better = [f"{LOCALISATION[key]} {values[key]:.3f} vs the model's {model[key]:.3f}" for key in LOCALISATION_WARN
                  if _finite(values.get(key)) and _finite(model.get(key)) and values[key] > model[key] + LOCALISATION_TIE]
        if better:
            warnings.append(f"the baseline {name} localises lesions better than the model ({', '.join(better)}); "
                            "the model's heatmaps are the less reliable guide to where a lesion is")
    return warnings


def localisation_section(metrics: dict[str, Any]) -> ReportSection:
    """Pixel-level metrics of the model and each baseline, with a warning when a baseline localises better."""
    rows = {f"{metrics.get('model_name', 'model')} (model)": metrics.get("test", {}),
            **{f"{name} (baseline)": values for name, values in metrics.get("baselines", {}).items()}}
    lines = ["| | " + " | ".join(LOCALISATION.values()) + " |", "|---" * (len(LOCALISATION) + 1) + "|"]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[k]:.4f}" if _finite(values.get(k)) else "–" for k in LOCALISATION) + " |")
    warnings = localisation_warnings(metrics)
    verdict = (" ".join(f"**Warning: {w}.**" for w in warnings) if warnings else
               "No baseline localises lesions better than the model (pixel AUROC and Dice).")
    return ReportSection("Lesion localisation (test, pixel level)", "\n".join(lines) + "\n\n" + verdict, warnings=warnings)


def grid_rows(scores: np.ndarray, n: int = GRID_COLUMNS) -> np.ndarray:
    """The rows the grid shows: the ``n`` highest then the ``n`` lowest scores."""
    order = np.argsort(scores, kind="stable")
    return np.concatenate([order[::-1][:n], order[:n]])


def threshold_table(module: Any) -> str:
    """The image and pixel thresholds in force and the rule that chose each (``threshold_rule``)."""
    lines = ["| | threshold_rule | threshold (raw score) |", "|---|---|---|"]
    for level, value in (("image", module.image_threshold), ("pixel", module.pixel_threshold)):
        lines.append(f"| {level} | {module.threshold_rules[level]} | {float(value):.4g} |")
    return "\n".join(lines)


def threshold_note(module: Any) -> str:
    """What the thresholds mean when validation could not support the configured rule (no abnormal image or no
    lesion mask in the validation split), else an empty string."""
    fell_back = [level for level in ("image", "pixel") if "impossible" in module.threshold_rules[level]]
    if not fell_back:
        return ""
    what = {"image": "no abnormal image", "pixel": "no lesion pixel"}
    reasons = " and ".join(f"{what[level]} ({level} threshold)" for level in fell_back)
    fpr = module.hparams.fpr
    return (f"**The validation split has {reasons}**, so `model.threshold={module.hparams.threshold}` could not be applied: "
            f"the threshold is the {1 - fpr:g} quantile of the normal validation scores at its level (`model.fpr={fpr:g}`: about "
            f"{fpr:.0%} of normal images, or of normal pixels, flagged). Add abnormal images (with masks, for pixels) to the "
            f"validation split for an F1-chosen threshold, or choose this rule explicitly with `model.threshold=fpr`.")


def overlay_text(ctx: RunContext, limit: int | None, written: int) -> str:
    """Where the per-image overlays are and which images have one (``data.max_heatmaps``)."""
    if written == 0:
        return "No per-image overlays (`data.max_heatmaps=0`)."
    folder = ctx.plot_path("heatmaps").relative_to(ctx.run_dir)
    which = "every test image" if limit is None else f"the {written} highest-scored test images (`data.max_heatmaps={limit}`; `null`: every image)"
    return f"Per-image overlays of {which} in `{folder}/` (`<row>_<name>.png`, rows of the predictions table)."


def build_report(ctx: RunContext) -> list[ReportSection]:
    """Predict: heatmap PNGs of the highest-scored inputs beside the predictions file. Test: the same for test
    images, plus the report's heatmap grid, ROC curves (model vs baselines), per-class score histograms and the
    thresholds. At most ``data.max_heatmaps`` per-image overlays are written (``null``: one per image)."""
    dm, table = ctx.datamodule, ctx.predictions
    stage = "predict" if ctx.stage == "predict" else "test"
    scores, names = table["score"].to_numpy(dtype=float), table["name"].tolist()
    limit = dm.max_heatmaps
    overlays = save_heatmaps(ctx, stage, heatmap_rows(scores, limit), names)
    if ctx.stage == "predict":
        return []
    labels = table["label"].to_numpy()
    picks = grid_rows(scores)
    chunk = chunk_size(dm)
    images, masks, _ = (np.concatenate(parts) for parts in zip(*dm.chunks("test", picks, chunk), strict=True))
    maps = forward_outputs(ctx.module, images, chunk)[1].float().numpy()
    grid = save_figure(overlay_grid(images, maps, masks, scores[picks], labels[picks]), ctx.plot_path("heatmaps.png"))
    cases = np.r_[0:PANEL_CASES, GRID_COLUMNS:GRID_COLUMNS + PANEL_CASES]
    cases = cases[cases < len(picks)]
    panels = save_figure(case_panels(images[cases], masks[cases], maps[cases], scores[picks[cases]], labels[picks[cases]],
                                     [names[i] for i in picks[cases]]), ctx.plot_path("case_panels.png"))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    curves = {ctx.metrics["model_name"]: scores}
    curves.update({f"{name} (baseline)": result.predictions["scores"][: len(scores)] for name, result in ctx.baselines.items()})
    for name, s in curves.items():
        if 0 < labels.sum() < len(labels):
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
    rule = f"`model.threshold={ctx.module.hparams.threshold}`"
    note = threshold_note(ctx.module)
    return [
        ReportSection("Anomaly heatmaps", body=f"Grid: the {GRID_COLUMNS} highest- and lowest-scored test images. {overlay_text(ctx, limit, len(overlays))}",
                      images=[grid]),
        ReportSection("Per-image panels", body=f"The {PANEL_CASES} highest- then the {PANEL_CASES} lowest-scored test images: image, "
                      "ground-truth mask, and the model's anomaly map (white outline: pixels above the pixel threshold).", images=[panels]),
        localisation_section(ctx.metrics),
        ReportSection("ROC curves vs baselines (test, image level)", images=[roc]),
        ReportSection("Score histograms per class", body="Scores are normalised so the validation-chosen threshold sits at 0.5.", images=[hist]),
        ReportSection("Decision thresholds (chosen on validation)",
                      body=f"{threshold_table(ctx.module)}\n\nRule: {rule}; the baselines use the same rule." + (f"\n\n{note}" if note else "")),
    ]
