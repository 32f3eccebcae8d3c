"""Anomaly-detection metrics (image AUROC/AP/F1-max/F1, pixel AUROC/AUPRO/Dice) and score normalisation.

Every metric is a torchmetrics ``Metric`` whose ``update(outputs, target, mask)`` takes the model's forward
outputs ``(score, anomaly_map, is_anomalous, pixel_is_anomalous)`` so one MetricCollection serves the model
and the baselines. Pixel metrics are NaN when the evaluated images carry no mask pixels.

Memory is bounded whatever the number of images: image metrics keep one value per image; pixel metrics never
keep the maps. Dice keeps three pixel counts (exact). Pixel AUROC keeps an evenly strided sample of at most
``MAX_PIXELS`` lesion pixels and as many normal pixels (exact below that; AUROC does not depend on the class
ratio, so sampling the two classes separately keeps it unbiased). AUPRO keeps the same sample of normal pixels
(for the false-positive-rate axis) and a fixed-size summary of each lesion region: ``REGION_QUANTILES`` of
its scores, so each region's overlap at a threshold is known to within 1/``REGION_QUANTILES``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import precision_recall_curve
from torchmetrics import Metric, MetricCollection
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MAX_PIXELS = 2_000_000  # per class (pixel AUROC) or of normal pixels (AUPRO): an evenly strided sample beyond this
REGION_QUANTILES = 128  # AUPRO: scores kept per lesion region


def _nan() -> torch.Tensor:
    return torch.tensor(float("nan"))


def _cat(value: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A list state concatenated (a synchronised state is already one tensor)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.cat(value) if value else torch.zeros(0)


class _Buffer:
    """Values appended in place into one tensor that doubles when full: a few allocations for any number of
    updates. (Keeping one small tensor per batch, between the large per-batch maps that are freed, fragments the
    heap: +27 KB of resident memory per test image at 64 px, measured.)"""

    def __init__(self) -> None:
        self.data: torch.Tensor | None = None
        self.size = 0

    def append(self, values: torch.Tensor) -> None:
        values = values.detach().reshape(-1)
        if self.data is None or self.size + len(values) > len(self.data):
            grown = torch.empty(max(1024, 2 * (self.size + len(values))), dtype=values.dtype, device=values.device)
            if self.data is not None:
                grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size:self.size + len(values)] = values.to(self.data.device, self.data.dtype)
        self.size += len(values)

    def replace(self, values: torch.Tensor) -> None:
        self.data, self.size = values, len(values)

    def view(self) -> torch.Tensor:
        return self.data[: self.size] if self.data is not None else torch.zeros(0)


class _Appending(Metric):
    """A metric whose list states grow by appending into :class:`_Buffer` s; each state list holds one view of its
    buffer, so torchmetrics' reset, device moves and distributed gathering see ordinary list states."""

    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self._growing: dict[str, _Buffer] = {}

    def _append(self, name: str, values: torch.Tensor) -> None:
        buffer = self._growing.setdefault(name, _Buffer())
        buffer.append(values)
        setattr(self, name, [buffer.view()])

    def reset(self) -> None:
        super().reset()
        self._growing = {}


def _lesion(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The boolean lesion mask of a batch (all False without masks)."""
    if mask is None:
        return torch.zeros(like.shape, dtype=torch.bool, device=like.device)
    return mask if mask.dtype == torch.bool else mask > 0.5


class _ImageMetric(_Appending):
    """Concatenates the per-image values a metric needs across batches (one value per image)."""

    uses: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        for name in self.uses:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, outputs: Outputs, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        score, _, flag, _ = outputs
        values = {"score": score, "flag": flag, "target": target}
        for name in self.uses:
            self._append(name, values[name].detach().float().reshape(len(score), -1)[:, 0])

    def _cat(self, name: str) -> torch.Tensor:
        return _cat(getattr(self, name))


class ImageAUROC(_ImageMetric):
    """Area under the ROC curve of the image scores."""

    uses = ("score", "target")

    def compute(self) -> torch.Tensor:
        target = self._cat("target").long()
        return binary_auroc(self._cat("score"), target) if 0 < target.sum() < len(target) else _nan()


class ImageAP(_ImageMetric):
    """Average precision of the image scores."""

    uses = ("score", "target")

    def compute(self) -> torch.Tensor:
        target = self._cat("target").long()
        return binary_average_precision(self._cat("score"), target) if target.sum() > 0 else _nan()


class ImageF1Max(_ImageMetric):
    """Best F1 over all image-score thresholds (threshold-free upper bound of F1)."""

    uses = ("score", "target")

    def compute(self) -> torch.Tensor:
        target = self._cat("target").long()
        if target.sum() == 0:
            return _nan()
        precision, recall, _ = precision_recall_curve(target.cpu().numpy(), self._cat("score").cpu().numpy())
        f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
        return torch.tensor(float(f1.max()))


class ImageF1(_ImageMetric):
    """F1 of the exported anomaly flags (the validation-chosen threshold)."""

    uses = ("flag", "target")

    def compute(self) -> torch.Tensor:
        target, flag = self._cat("target"), self._cat("flag")
        tp = (flag * target).sum()
        denom = flag.sum() + target.sum()
        return 2 * tp / denom if denom > 0 else _nan()


class _PixelSample(_Appending):
    """Evenly strided samples of pixel streams in bounded memory.

    Stream ``name`` keeps the pixels whose position in the stream (over every update since the last reset) is a
    multiple of its stride, which starts at 1 and doubles whenever more than ``2 * max_pixels`` are kept, so
    what is kept is always exactly ``stream[::stride]`` with between ``max_pixels`` and ``2 * max_pixels`` values.
    """

    streams: tuple[str, ...] = ()

    def __init__(self, max_pixels: int = MAX_PIXELS) -> None:
        super().__init__()
        self.max_pixels = max_pixels
        for name in self.streams:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._restart()

    def _restart(self) -> None:
        self._seen = dict.fromkeys(self.streams, 0)
        self._stride = dict.fromkeys(self.streams, 1)
        self._kept = dict.fromkeys(self.streams, 0)

    def reset(self) -> None:
        super().reset()
        self._restart()

    def _add(self, name: str, values: torch.Tensor) -> None:
        """Append the sampled part of the next ``values`` (1D) of stream ``name``."""
        stride, seen = self._stride[name], self._seen[name]
        kept = values.detach().float()[(-seen) % stride::stride]
        self._seen[name] = seen + len(values)
        self._append(name, kept)
        self._kept[name] += len(kept)
        if self._kept[name] > 2 * self.max_pixels:
            buffer = self._growing[name]
            buffer.replace(buffer.view()[::2].clone())
            setattr(self, name, [buffer.view()])
            self._kept[name], self._stride[name] = buffer.size, 2 * stride


class PixelAUROC(_PixelSample):
    """Area under the ROC curve of the anomaly-map pixels against the masks (lesion and normal pixels sampled
    separately, each exactly up to ``max_pixels``)."""

    streams = ("lesion", "normal")

    def update(self, outputs: Outputs, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        amap = outputs[1]
        lesion = _lesion(mask, amap)
        self._add("normal", amap[~lesion])
        if lesion.any():
            self._add("lesion", amap[lesion])

    def compute(self) -> torch.Tensor:
        lesion, normal = _cat(self.lesion), _cat(self.normal)
        if len(lesion) == 0 or len(normal) == 0:
            return _nan()
        labels = torch.cat([torch.ones(len(lesion), dtype=torch.long), torch.zeros(len(normal), dtype=torch.long)]).to(lesion.device)
        return binary_auroc(torch.cat([lesion, normal]), labels)


class AUPRO(_PixelSample):
    """Area under the per-region-overlap curve up to ``max_fpr`` (0.3), normalised to 0..1 (MVTec AD definition).

    Kept: the normal-pixel sample and ``quantiles`` scores of every lesion region (see the module docstring)."""

    streams = ("normal",)

    def __init__(self, max_fpr: float = 0.3, n_thresholds: int = 200, quantiles: int = REGION_QUANTILES,
                 max_pixels: int = MAX_PIXELS) -> None:
        super().__init__(max_pixels)
        self.max_fpr, self.n_thresholds, self.quantiles = max_fpr, n_thresholds, quantiles
        self.add_state("regions", default=[], dist_reduce_fx="cat")

    def update(self, outputs: Outputs, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        amap = outputs[1]
        lesion = _lesion(mask, amap)
        self._add("normal", amap[~lesion])
        if lesion.any():
            summary = region_quantiles(amap.detach().float().cpu().numpy(), lesion.cpu().numpy(), self.quantiles)
            self._append("regions", torch.as_tensor(summary, device=amap.device))  # flattened: reshaped in compute

    def compute(self) -> torch.Tensor:
        regions = _cat(self.regions)
        if len(regions) == 0:
            return _nan()
        summaries = regions.cpu().numpy().reshape(-1, self.quantiles)
        return torch.tensor(pro_area(_cat(self.normal).cpu().numpy(), summaries, self.max_fpr, self.n_thresholds))


def _regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected lesion regions of boolean masks (N, 1, *S), numbered from 1; regions never span images."""
    structure = np.zeros((3,) * mask.ndim, dtype=bool)
    structure[1, 1] = ndimage.generate_binary_structure(mask.ndim - 2, 1)
    return ndimage.label(mask, structure=structure)


def region_quantiles(amap: np.ndarray, mask: np.ndarray, quantiles: int = REGION_QUANTILES) -> np.ndarray:
    """(regions, quantiles): the scores of each lesion region of ``mask`` (N, 1, *S) at the ranks
    ``(j + 0.5) / quantiles`` of its sorted scores, so the share of them at or above a threshold is the region's
    overlap at that threshold to within ``1 / quantiles``."""
    regions, n = _regions(mask)
    regions, values = regions.reshape(-1), amap.reshape(-1)
    inside = regions > 0
    region, value = regions[inside] - 1, values[inside]
    order = np.lexsort((value, region))
    region, value = region[order], value[order]
    sizes = np.bincount(region, minlength=n)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ranks = np.floor((np.arange(quantiles) + 0.5) / quantiles * sizes[:, None]).astype(np.int64)
    return value[starts[:, None] + ranks].astype(np.float32)


def pro_area(normal: np.ndarray, regions: np.ndarray, max_fpr: float = 0.3, n_thresholds: int = 200) -> float:
    """AUPRO from normal-pixel scores and per-region score summaries of equal length (each row one region)."""
    normal = np.sort(normal.reshape(-1))
    thresholds = np.quantile(normal, np.linspace(1 - max_fpr, 1, n_thresholds))
    fpr = 1 - np.searchsorted(normal, thresholds, side="left") / len(normal)  # share of normal pixels >= threshold
    values = np.sort(regions.reshape(-1))
    pro = 1 - np.searchsorted(values, thresholds, side="left") / len(values)  # equal-length rows: mean region overlap
    return _area(fpr, pro, max_fpr)


def _area(fpr: np.ndarray, pro: np.ndarray, max_fpr: float) -> float:
    order = np.argsort(fpr)
    fpr, pro = np.concatenate([fpr[order], [max_fpr]]), np.concatenate([pro[order], [pro[order][-1]]])
    keep = fpr <= max_fpr
    return float(np.trapezoid(pro[keep], fpr[keep]) / max_fpr)


def aupro(amap: np.ndarray, mask: np.ndarray, max_fpr: float = 0.3, n_thresholds: int = 200) -> float:
    """Exact AUPRO of flattened scores ``amap`` against boolean masks (N, 1, *S), with per-region histograms."""
    regions, n_regions = _regions(mask)
    regions = regions.reshape(-1)
    normal = regions == 0
    thresholds = np.quantile(amap[normal], np.linspace(1 - max_fpr, 1, n_thresholds))
    bins = np.searchsorted(thresholds, amap, side="right")  # pixel >= thresholds[j] for j < bins
    per_region = np.bincount(regions * (n_thresholds + 1) + bins, minlength=(n_regions + 1) * (n_thresholds + 1)).reshape(n_regions + 1, -1)
    above = per_region[:, ::-1].cumsum(axis=1)[:, ::-1][:, 1:]  # counts with score >= thresholds[j]
    sizes = per_region.sum(axis=1, keepdims=True)
    return _area(above[0] / sizes[0], (above[1:] / sizes[1:]).mean(axis=0), max_fpr)


class Dice(Metric):
    """Dice of the exported pixel flags against the masks, over all pixels (exact: three pixel counts)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        for name in ("overlap", "flagged", "lesion"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, outputs: Outputs, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        flagged = outputs[3] > 0.5
        lesion = _lesion(mask, flagged)
        self.overlap += (flagged & lesion).sum()
        self.flagged += flagged.sum()
        self.lesion += lesion.sum()

    def compute(self) -> torch.Tensor:
        if self.lesion == 0:
            return _nan()
        return 2 * self.overlap.double() / (self.flagged + self.lesion)


def anomaly_metrics(max_pixels: int = MAX_PIXELS) -> MetricCollection:
    """The domain's MetricCollection (names without stage prefix); ``max_pixels`` bounds the pixel samples."""
    return MetricCollection({
        "image_auroc": ImageAUROC(), "image_ap": ImageAP(), "image_f1_max": ImageF1Max(), "image_f1": ImageF1(),
        "pixel_auroc": PixelAUROC(max_pixels), "aupro": AUPRO(max_pixels=max_pixels), "dice": Dice(),
    }, compute_groups=False)


def normalise(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Map raw scores to 0..1 with the threshold at 0.5: ``sigmoid(4 (x - threshold) / (high - low))``.

    Strictly increasing (unlike a clamped min-max), so rankings and AUROC are unchanged by normalisation."""
    return torch.sigmoid(4.0 * (values - threshold) / (high - low).clamp_min(1e-12))
