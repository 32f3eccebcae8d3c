"""Simple detectors the deep models must beat, evaluated on the run's test split with the model's metrics.

* ``knn``: image score = distance to the nearest normal training image on pixels downsampled to
  ``pool`` per side; pixel map = per-patch kNN distance (each patch vs the training patches at the same
  position, 2D; in 3D the absolute difference to the nearest training volume), smoothed.
* ``pca``: reconstruction error after projecting the downsampled image onto the principal components of the
  normal training images (95 % of variance); pixel map = upsampled absolute error, smoothed.

Scores are thresholded on validation with the model's rule (``model.threshold``, ``model.fpr``), so F1 and
Dice are comparable. Each baseline is fitted once per run on at most ``MAX_TRAIN_IMAGES`` normal training
images (evenly spaced over the split); validation and test images are scored ``CHUNK`` at a time into the
bounded-memory metrics, so a test split of any size is never held whole. Its test scores (one per image; the
maps too with ``keep_maps``, for small benchmark sets) travel in its
:class:`~sectorkit.core.baselines.BaselineResult` to the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from sectorkit.core.baselines import BaselineResult
from sectorkit.core.thresholds import choose_threshold
from sectorkit.domains.healthcare.data import images_per_chunk
from sectorkit.domains.healthcare.metrics import anomaly_metrics
from sectorkit.domains.healthcare.models.common import GaussianBlur

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from sectorkit.domains.healthcare.data import HealthcareDataModule

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # images (N, C, *S), masks (N, 1, *S), labels (N,)
MAX_TRAIN_IMAGES = 1000  # the baselines are fitted on at most this many normal training images (evenly spaced)
CHUNK = 256  # validation and test images scored at a time
MAX_CALIBRATION_PIXELS = 500_000  # pixel thresholds are chosen on an evenly strided sample of at most ~2x this many
MAX_DISTANCES = 2**24  # the kNN baseline's patch distance matrices are computed this many entries at a time
MAX_VOXELS = CHUNK * 256 * 256  # at most this many pixels (voxels) a chunk holds (256 images up to 256 px, 8 volumes
# at 128³), and the training set 4x that (MAX_TRAIN_IMAGES images up to 256 px, 32 volumes at 128³)


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
            self.patches = F.unfold(self.train, self.patch, stride=self.stride).permute(2, 0, 1).contiguous()  # (L, N, P)
        return self

    def score(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(images)
        per_image = len(self.train) * (self.patches.shape[0] if x.ndim == 4 else 1)
        step = max(1, MAX_DISTANCES // per_image)  # bounds the (patches, images, training images) distance matrix
        parts = [self._score(part) for part in x.split(step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _score(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
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


def _chunks(split: Arrays | Iterable[Arrays]) -> Iterator[Arrays]:
    """``CHUNK``-image slices of a split given as arrays, or the chunks of a split given as an iterable."""
    if isinstance(split, tuple) and len(split) == 3 and all(isinstance(a, np.ndarray) for a in split):
        for start in range(0, len(split[0]), CHUNK):
            yield tuple(a[start:start + CHUNK] for a in split)  # type: ignore[misc]
    else:
        yield from split  # type: ignore[misc]


class StridedPixels:
    """An evenly strided sample of aligned pixel streams (map values and mask values) in bounded memory: the pixels
    whose stream position is a multiple of a stride that doubles whenever more than ``2 * limit`` are kept."""

    def __init__(self, limit: int = MAX_CALIBRATION_PIXELS) -> None:
        self.limit, self.seen, self.stride, self.kept = limit, 0, 1, 0
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, *arrays: np.ndarray) -> None:
        flat = [np.asarray(a).reshape(-1) for a in arrays]
        start = (-self.seen) % self.stride
        self.parts.append(tuple(f[start::self.stride].copy() for f in flat))
        self.seen += len(flat[0])
        self.kept += len(self.parts[-1][0])
        if self.kept > 2 * self.limit:
            self.parts = [tuple(a[::2].copy() for a in self.values())]
            self.kept, self.stride = len(self.parts[0][0]), 2 * self.stride

    def values(self) -> tuple[np.ndarray, ...]:
        return tuple(np.concatenate(column) for column in zip(*self.parts, strict=True))


def evaluate_detector(detector: Any, train: np.ndarray | Arrays, val: Arrays | Iterable[Arrays], test: Arrays | Iterable[Arrays],
                      threshold: str = "f1", fpr: float = 0.05, keep_maps: bool = False) -> BaselineResult:
    """Fit on normal training images (``train``: images, or an :data:`Arrays` tuple), pick image and pixel
    thresholds on ``val``, score ``test``: test metrics and test ``scores`` (and ``maps`` with ``keep_maps``).

    ``val`` and ``test`` are arrays or iterables of array chunks; either way they are scored ``CHUNK`` images at
    a time, so only per-image scores and a bounded pixel sample are held."""
    detector.fit(train[0] if isinstance(train, tuple) else train)
    val_scores, val_labels, pixels = [], [], StridedPixels()
    for images, masks, labels in _chunks(val):
        scores, maps = detector.score(images)
        val_scores.append(scores)
        val_labels.append(labels)
        pixels.add(maps, masks)
    image_thr = choose_threshold(np.concatenate(val_scores), np.concatenate(val_labels), threshold, fpr, key="model.threshold").value
    pixel_thr = choose_threshold(*pixels.values(), threshold, fpr, key="model.threshold").value
    metrics = anomaly_metrics()
    test_scores, test_maps = [], []
    for images, masks, labels in _chunks(test):
        scores, maps = detector.score(images)
        flags = (torch.as_tensor(scores >= image_thr).float(), torch.as_tensor(maps >= pixel_thr).float())
        metrics.update((torch.as_tensor(scores), torch.as_tensor(maps), *flags), torch.as_tensor(labels), torch.as_tensor(masks))
        test_scores.append(scores)
        if keep_maps:
            test_maps.append(maps)
    values = {k: float(v) for k, v in metrics.compute().items()}
    predictions = {"scores": np.concatenate(test_scores)}
    if keep_maps:
        predictions["maps"] = np.concatenate(test_maps)
    return BaselineResult(values, predictions=predictions)


def normal_training_images(datamodule: HealthcareDataModule, limit: int = MAX_TRAIN_IMAGES) -> np.ndarray:
    """At most ``limit`` normal training images, evenly spaced over the training split (the detectors model
    normal images only, supervised data included)."""
    labels = np.array([int(r["label"]) for r in datamodule.records["train"]])
    normal = np.flatnonzero(labels == 0)
    picks = normal[np.unique(np.linspace(0, len(normal) - 1, min(len(normal), limit)).round().astype(int))]
    return np.concatenate([chunk[0] for chunk in datamodule.chunks("train", picks, CHUNK)])


BASELINES = {"knn": KNNBaseline, "pca": PCABaseline}


def run_baselines(datamodule: HealthcareDataModule, cfg: DictConfig | None = None,
                  keep_maps: bool = False) -> dict[str, BaselineResult]:
    """Every baseline on the datamodule's splits, thresholded with the run's ``model.threshold`` rule (f1 without ``cfg``)."""
    threshold, fpr = (str(cfg.model.threshold), float(cfg.model.fpr)) if cfg is not None else ("f1", 0.05)
    chunk = images_per_chunk(datamodule, CHUNK, MAX_VOXELS)  # volumes: fewer at a time, so memory stays bounded at 128³
    train = normal_training_images(datamodule, images_per_chunk(datamodule, MAX_TRAIN_IMAGES, 4 * MAX_VOXELS))
    return {name: evaluate_detector(detector(), train, datamodule.chunks("val", batch_size=chunk), datamodule.chunks("test", batch_size=chunk),
                                    threshold, fpr, keep_maps)
            for name, detector in BASELINES.items()}
