"""Anomaly-detection metrics (image AUROC/AP/F1-max/F1, pixel AUROC/AUPRO/Dice) and score normalisation.

Every metric is a torchmetrics ``Metric`` whose ``update(outputs, target, mask)`` takes the model's forward
outputs ``(score, anomaly_map, is_anomalous, pixel_is_anomalous)`` so one MetricCollection serves the model
and the baselines. Pixel metrics are NaN when the evaluated images carry no mask pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import precision_recall_curve
from torchmetrics import Metric, MetricCollection
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MAX_PIXELS = 4_000_000  # pixel AUROC uses an evenly strided subset beyond this many pixels (bounded memory)


class _AnomalyMetric(Metric):
    """Concatenates what a metric needs across batches."""

    full_state_update = False
    higher_is_better = True
    uses: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        for name in self.uses:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, outputs: Outputs, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        score, amap, flag, pflag = outputs
        values = {"score": score, "flag": flag, "target": target, "map": amap, "pflag": pflag, "mask": mask}
        for name in self.uses:
            value = values[name]
            if value is None:
                value = torch.zeros_like(amap)
            value = value.detach().float()
            if name in ("score", "flag", "target"):
                value = value.reshape(len(score), -1).squeeze(-1)
            getattr(self, name).append(value)

    def _cat(self, name: str) -> torch.Tensor:
        value = getattr(self, name)
        return torch.cat(value) if isinstance(value, list) else value


def _nan() -> torch.Tensor:
    return torch.tensor(float("nan"))


class ImageAUROC(_AnomalyMetric):
    """Area under the ROC curve of the image scores."""

    uses = ("score", "target")

    def compute(self) -> torch.Tensor:
        target = self._cat("target").long()
        return binary_auroc(self._cat("score"), target) if 0 < target.sum() < len(target) else _nan()


class ImageAP(_AnomalyMetric):
    """Average precision of the image scores."""

    uses = ("score", "target")

    def compute(self) -> torch.Tensor:
        target = self._cat("target").long()
        return binary_average_precision(self._cat("score"), target) if target.sum() > 0 else _nan()


class ImageF1Max(_AnomalyMetric):
    """Best F1 over all image-score thresholds (threshold-free upper bound of F1)."""

    uses = ("score", "target")

    def compute(self) -> torch.Tensor:
        target = self._cat("target").long()
        if target.sum() == 0:
            return _nan()
        precision, recall, _ = precision_recall_curve(target.cpu().numpy(), self._cat("score").cpu().numpy())
        f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
        return torch.tensor(float(f1.max()))


class ImageF1(_AnomalyMetric):
    """F1 of the exported anomaly flags (the validation-chosen threshold)."""

    uses = ("flag", "target")

    def compute(self) -> torch.Tensor:
        target, flag = self._cat("target"), self._cat("flag")
        tp = (flag * target).sum()
        denom = flag.sum() + target.sum()
        return 2 * tp / denom if denom > 0 else _nan()


class PixelAUROC(_AnomalyMetric):
    """Area under the ROC curve of the anomaly-map pixels against the masks."""

    uses = ("map", "mask")

    def compute(self) -> torch.Tensor:
        amap, mask = self._cat("map").flatten(), self._cat("mask").flatten().long()
        if mask.sum() == 0:
            return _nan()
        step = max(1, len(amap) // MAX_PIXELS)
        return binary_auroc(amap[::step], mask[::step])


class AUPRO(_AnomalyMetric):
    """Area under the per-region-overlap curve up to ``max_fpr`` (0.3), normalised to 0..1 (MVTec AD definition)."""

    uses = ("map", "mask")

    def __init__(self, max_fpr: float = 0.3, n_thresholds: int = 200) -> None:
        super().__init__()
        self.max_fpr, self.n_thresholds = max_fpr, n_thresholds

    def compute(self) -> torch.Tensor:
        amap = self._cat("map").cpu().numpy().reshape(-1)
        mask = self._cat("mask").cpu().numpy() > 0
        if not mask.any():
            return _nan()
        return torch.tensor(aupro(amap, mask, self.max_fpr, self.n_thresholds))


def aupro(amap: np.ndarray, mask: np.ndarray, max_fpr: float = 0.3, n_thresholds: int = 200) -> float:
    """AUPRO of flattened scores ``amap`` against boolean masks (N, 1, *S): vectorised with per-region histograms."""
    structure = np.zeros((3,) * mask.ndim, dtype=bool)
    structure[1, 1] = ndimage.generate_binary_structure(mask.ndim - 2, 1)  # regions never span images
    regions, n_regions = ndimage.label(mask, structure=structure)
    regions = regions.reshape(-1)
    normal = regions == 0
    thresholds = np.quantile(amap[normal], np.linspace(1 - max_fpr, 1, n_thresholds))
    bins = np.searchsorted(thresholds, amap, side="right")  # pixel >= thresholds[j] for j < bins
    per_region = np.bincount(regions * (n_thresholds + 1) + bins, minlength=(n_regions + 1) * (n_thresholds + 1)).reshape(n_regions + 1, -1)
    above = per_region[:, ::-1].cumsum(axis=1)[:, ::-1][:, 1:]  # counts with score >= thresholds[j]
    sizes = per_region.sum(axis=1, keepdims=True)
    fpr = above[0] / sizes[0]
    pro = (above[1:] / sizes[1:]).mean(axis=0)
    order = np.argsort(fpr)
    fpr, pro = np.concatenate([fpr[order], [max_fpr]]), np.concatenate([pro[order], [pro[order][-1]]])
    keep = fpr <= max_fpr
    return float(np.trapezoid(pro[keep], fpr[keep]) / max_fpr)


class Dice(_AnomalyMetric):
    """Dice of the exported pixel flags against the masks, over all test pixels."""

    uses = ("pflag", "mask")

    def compute(self) -> torch.Tensor:
        pred, mask = self._cat("pflag").flatten(), self._cat("mask").flatten()
        if mask.sum() == 0:
            return _nan()
        return 2 * (pred * mask).sum() / (pred.sum() + mask.sum())


def anomaly_metrics() -> MetricCollection:
    """The domain's MetricCollection (names without stage prefix)."""
    return MetricCollection({
        "image_auroc": ImageAUROC(), "image_ap": ImageAP(), "image_f1_max": ImageF1Max(), "image_f1": ImageF1(),
        "pixel_auroc": PixelAUROC(), "aupro": AUPRO(), "dice": Dice(),
    }, compute_groups=False)


def normalise(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Map raw scores to 0..1 with the threshold at 0.5: ``sigmoid(4 (x - threshold) / (high - low))``.

    Strictly increasing (unlike a clamped min-max), so rankings and AUROC are unchanged by normalisation."""
    return torch.sigmoid(4.0 * (values - threshold) / (high - low).clamp_min(1e-12))
