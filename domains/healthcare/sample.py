"""Synthetic brain-MRI-like phantoms with planted lesions and pixel-exact masks (the built-in sample).

Each image is a deformed head: background 0, a skull ring (~0.85), grey matter (~0.55), white matter
(~0.70) and two ventricles (~0.25), with per-image anatomy jitter, a smooth elastic deformation of the
coordinate grid, a multiplicative low-order bias field and Gaussian noise (std ``noise``, 0.03 by default).

Abnormal images carry one lesion inside the brain: an irregular blob whose radius (as a fraction of the
image side) is log-uniform in ``radius_range`` (default 0.03..0.15) and whose contrast (intensity added,
hyper- or hypo-intense with equal chance) has magnitude uniform in ``contrast_range`` (default
0.04..0.35, i.e. from ~1.3x the noise std, barely visible, to obvious). The mask is exactly the set of
pixels whose intensity the lesion changed. Lesion-size buckets: ``small`` < 0.06 <= ``medium`` < 0.10 <=
``large``. Everything is vectorised over images and deterministic given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

SIZE_BUCKETS: dict[str, tuple[float, float]] = {"small": (0.0, 0.06), "medium": (0.06, 0.10), "large": (0.10, 1.0)}


@dataclass
class PhantomSet:
    """Images (N, 1, *spatial) float32 in ~[0, 1], masks (N, 1, *spatial) uint8, labels (N,) 0/1, lesion params."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    radius: np.ndarray  # lesion radius / image side (0 for normal images)
    contrast: np.ndarray  # signed lesion contrast (0 for normal images)

    @property
    def size_bucket(self) -> np.ndarray:
        """Lesion-size bucket name per image ('normal' for images without lesion)."""
        out = np.full(len(self.labels), "normal", dtype=object)
        for name, (lo, hi) in SIZE_BUCKETS.items():
            out[(self.labels == 1) & (self.radius >= lo) & (self.radius < hi)] = name
        return out


def _smooth_field(rng: np.random.Generator, n: int, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-max smooth random fields (N, *shape) from Gaussian-filtered white noise."""
    field = gaussian_filter(rng.standard_normal((n, *shape)), sigma=(0, *([sigma] * len(shape))), mode="wrap")
    return field / (np.abs(field).reshape(n, -1).max(axis=1).reshape(n, *([1] * len(shape))) + 1e-8)


def _ellipsoid(coords: np.ndarray, center: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Normalised squared distance sum(((x - c) / a)^2) for coords (N, D, *spatial), center/axes (N, D)."""
    extra = (1,) * (coords.ndim - 2)
    c = center.reshape(*center.shape, *extra)
    a = axes.reshape(*axes.shape, *extra)
    return (((coords - c) / a) ** 2).sum(axis=1)


def make_phantoms(
    n_normal: int,
    n_abnormal: int,
    size: int = 64,
    spatial_dims: int = 2,
    seed: int = 0,
    noise: float = 0.03,
    radius_range: tuple[float, float] = (0.03, 0.15),
    contrast_range: tuple[float, float] = (0.04, 0.35),
    deformation: float = 0.04,
    bias: float = 0.15,
) -> PhantomSet:
    """Generate ``n_normal`` lesion-free and ``n_abnormal`` lesioned phantoms (normals first), deterministic by seed."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    rng = np.random.default_rng(seed)
    n = n_normal + n_abnormal
    d = spatial_dims
    shape = (size,) * d
    axis = np.linspace(-1.0, 1.0, size)
    grid = np.stack(np.meshgrid(*([axis] * d), indexing="ij"))  # (D, *spatial)
    # Elastic deformation: smooth random displacement of the coordinate grid (pixel-exact: shapes are analytic).
    sigma = size / 6
    warp = np.stack([_smooth_field(rng, n, shape, sigma) for _ in range(d)], axis=1) * deformation * 2
    coords = grid[None] + warp  # (N, D, *spatial)

    def vec(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, size=(n, d))

    head_c, head_a = vec(-0.05, 0.05), vec(0.78, 0.9)
    head = _ellipsoid(coords, head_c, head_a)
    brain = _ellipsoid(coords, head_c, head_a * rng.uniform(0.86, 0.9, size=(n, 1)))
    white = _ellipsoid(coords, head_c + vec(-0.03, 0.03), head_a * rng.uniform(0.55, 0.68, size=(n, 1)))
    vent_a = vec(0.06, 0.12)
    vent_a[:, 0] *= 2.2  # elongated along the first axis
    offset = np.zeros((n, d))
    offset[:, -1] = rng.uniform(0.1, 0.16, size=n)
    vents = np.minimum(_ellipsoid(coords, head_c - offset, vent_a), _ellipsoid(coords, head_c + offset, vent_a))

    def level(mean: float, jitter: float = 0.04) -> np.ndarray:
        return rng.uniform(mean - jitter, mean + jitter, size=(n,) + (1,) * d)

    img = np.zeros((n, *shape))
    img = np.where(head <= 1, level(0.85), img)
    img = np.where(brain <= 1, level(0.55), img)
    img = np.where(white <= 1, level(0.70), img)
    img = np.where(vents <= 1, level(0.25), img)
    img = gaussian_filter(img, sigma=(0, *([0.6] * d)))  # partial-volume edges

    # Lesions: irregular blobs inside the white/grey matter of the abnormal images.
    ab = np.arange(n) >= n_normal
    log_lo, log_hi = np.log(radius_range[0]), np.log(radius_range[1])
    radius = np.exp(rng.uniform(log_lo, log_hi, size=n))
    contrast = np.where(ab, rng.uniform(*contrast_range, size=n) * rng.choice([-1.0, 1.0], size=n), 0.0)
    direction = rng.standard_normal((n, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    center = head_c + direction * rng.uniform(0.0, 0.45, size=(n, 1)) * head_a
    # radius in [-1, 1] units is 2 x the fraction; at least 1.5 pixels so every lesion covers some pixels
    r_axes = np.maximum((radius * 2)[:, None] * rng.uniform(0.7, 1.3, size=(n, d)), 3.0 / size)
    lobes = 1 + 0.25 * _smooth_field(rng, n, shape, size / 10)  # irregular boundary
    dist = np.sqrt(_ellipsoid(coords, center, r_axes)) / lobes
    mask = ab.reshape(n, *([1] * d)) & (dist < 1) & (brain <= 1)
    profile = np.clip(1 - dist**4, 0, 1)  # plateau with soft rim; zero outside the mask
    img = img + np.where(mask, contrast.reshape(n, *([1] * d)) * np.maximum(profile, 0.15), 0.0)

    field = 1 + bias * _smooth_field(rng, n, shape, size / 3)  # multiplicative bias field
    img = img * field + rng.normal(0, noise, size=img.shape)
    labels = (mask.reshape(n, -1).any(axis=1)).astype(np.int64)
    radius = np.where(labels == 1, radius, 0.0)
    contrast = np.where(labels == 1, contrast, 0.0)
    return PhantomSet(
        images=np.clip(img, 0, 1.2).astype(np.float32)[:, None],
        masks=mask.astype(np.uint8)[:, None],
        labels=labels,
        radius=radius.astype(np.float32),
        contrast=contrast.astype(np.float32),
    )
