"""Simple detectors the deep models must beat, evaluated on the run's test split with the model's metrics.

* ``knn``: image score = distance to the nearest normal training image on pixels downsampled to
  ``pool`` per side; pixel map = per-patch kNN distance (each patch vs the training patches at the same
  position, 2D; in 3D the absolute difference to the nearest training volume), smoothed.
* ``pca``: reconstruction error after projecting the downsampled image onto the principal components of the
  normal training images (95 % of variance); pixel map = upsampled absolute error, smoothed.

Scores are thresholded on validation with the model's rule (``model.threshold``, ``model.fpr``), so F1 and
Dice are comparable. Each baseline is fitted once per run; its test scores and maps travel in its
:class:`~sectorkit.core.baselines.BaselineResult` to the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from sectorkit.core.baselines import BaselineResult
from sectorkit.core.thresholds import choose_threshold
from sectorkit.domains.healthcare.metrics import anomaly_metrics
from sectorkit.domains.healthcare.models.common import GaussianBlur

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from sectorkit.domains.healthcare.data import HealthcareDataModule

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def _pool(x: torch.Tensor, size: int) -> torch.Tensor:
    d = x.ndim - 2
    return (F.adaptive_avg_pool2d if d == 2 else F.adaptive_avg_pool3d)(x, (size,) * d)


def _upsample(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return F.interpolate(x, size=shape, mode="bilinear" if len(shape) == 2 else "trilinear", align_corners=False)


class KNNBaseline:
    """kNN on downsampled pixels (image score) + per-patch kNN (pixel map)."""

    def __init__(self, pool: int = 16, patch: int = 8, stride: int = 4, k: int = 1, sigma: float = 2.0) -> None:
        self.pool, self.patch, self.stride, self.k, self.sigma = pool, patch, stride, k, sigma

    def fit(self, train: np.ndarray) -> KNNBaseline:
        self.train = torch.as_tensor(train)
        self.bank = _pool(self.train, self.pool).flatten(1)
        if self.train.ndim == 4:
            self.patches = F.unfold(self.train, self.patch, stride=self.stride).permute(2, 0, 1)  # (L, N, P)
        return self

    def score(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(images)
        dist = torch.cdist(_pool(x, self.pool).flatten(1), self.bank)
        image_score = dist.topk(min(self.k, dist.shape[1]), largest=False).values.mean(1)
        shape = tuple(x.shape[2:])
        if x.ndim == 4:
            patches = F.unfold(x, self.patch, stride=self.stride).permute(2, 0, 1)  # (L, M, P)
            pdist = torch.cdist(patches, self.patches).min(dim=2).values.T  # (M, L)
            weight = torch.ones(len(x), self.patch * self.patch, pdist.shape[1])
            summed = F.fold(pdist[:, None].expand(-1, self.patch * self.patch, -1) * weight, shape, self.patch, stride=self.stride)
            count = F.fold(weight, shape, self.patch, stride=self.stride).clamp_min(1)
            amap = summed / count
        else:
            nearest = dist.argmin(dim=1)
            amap = (x - self.train[nearest]).abs().mean(1, keepdim=True)
        amap = GaussianBlur(len(shape), self.sigma)(amap)
        return image_score.numpy(), amap.numpy()


class PCABaseline:
    """PCA reconstruction error of the downsampled image."""

    def __init__(self, pool: int = 32, variance: float = 0.95, sigma: float = 2.0) -> None:
        self.pool, self.variance, self.sigma = pool, variance, sigma

    def fit(self, train: np.ndarray) -> PCABaseline:
        flat = _pool(torch.as_tensor(train), self.pool).flatten(1).numpy()
        components = self.variance if self.variance < 1 else min(int(self.variance), len(flat) - 1)
        self.pca = PCA(n_components=components, svd_solver="full").fit(flat)
        return self

    def score(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(images)
        small = _pool(x, self.pool)
        flat = small.flatten(1).numpy()
        recon = torch.as_tensor(self.pca.inverse_transform(self.pca.transform(flat)), dtype=torch.float32).reshape(small.shape)
        err = (small - recon).abs().mean(1, keepdim=True)
        amap = GaussianBlur(x.ndim - 2, self.sigma)(_upsample(err, tuple(x.shape[2:])))
        return (err.flatten(1) ** 2).mean(1).numpy(), amap.numpy()


def evaluate_detector(detector: Any, train: Arrays, val: Arrays, test: Arrays, threshold: str = "f1", fpr: float = 0.05) -> BaselineResult:
    """Fit on normal training images, pick image and pixel thresholds on val; test metrics and test ``scores``/``maps``."""
    detector.fit(train[0])
    val_scores, val_maps = detector.score(val[0])
    image_thr = choose_threshold(val_scores, val[2], threshold, fpr, key="model.threshold").value
    pixel_thr = choose_threshold(_subsample(val_maps), _subsample(val[1]), threshold, fpr, key="model.threshold").value
    scores, maps = detector.score(test[0])
    flags = (torch.as_tensor(scores >= image_thr).float(), torch.as_tensor(maps >= pixel_thr).float())
    outputs = (torch.as_tensor(scores), torch.as_tensor(maps), *flags)
    metrics = anomaly_metrics()
    metrics.update(outputs, torch.as_tensor(test[2]), torch.as_tensor(test[1]))
    values = {k: float(v) for k, v in metrics.compute().items()}
    return BaselineResult(values, predictions={"scores": scores, "maps": maps})


def _subsample(values: np.ndarray, limit: int = 500_000) -> np.ndarray:
    flat = np.asarray(values).reshape(-1)
    return flat[:: max(1, len(flat) // limit)]


BASELINES = {"knn": KNNBaseline, "pca": PCABaseline}


def run_baselines(datamodule: HealthcareDataModule, cfg: DictConfig | None = None) -> dict[str, BaselineResult]:
    """Every baseline on the datamodule's splits, thresholded with the run's ``model.threshold`` rule (f1 without ``cfg``)."""
    threshold, fpr = (str(cfg.model.threshold), float(cfg.model.fpr)) if cfg is not None else ("f1", 0.05)
    train, val, test = (datamodule.arrays(s) for s in ("train", "val", "test"))
    train = tuple(a[train[2] == 0] for a in train)  # the detectors model normal images only (supervised data too)
    return {name: evaluate_detector(detector(), train, val, test, threshold, fpr) for name, detector in BASELINES.items()}
