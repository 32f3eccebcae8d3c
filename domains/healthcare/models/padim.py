"""PaDiM: a Gaussian per feature-map position over ResNet features; anomaly map = Mahalanobis distance."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from sectorkit.domains.healthcare.models.base import MemoryBankNetwork
from sectorkit.domains.healthcare.models.backbone import ResNetFeatures
from sectorkit.domains.healthcare.models.common import GaussianBlur
from sectorkit.domains.healthcare.models.patchcore import embed


class PaDiMDetector(MemoryBankNetwork):
    """Per-position mean and inverse covariance of ``n_features`` randomly chosen feature channels.

    Training streams: each batch adds to per-position sums of the features and of their outer products (float64,
    on the features' device), so memory is ``positions x n_features^2`` whatever the number of training images."""

    bank_buffers = ("mean", "inv_cov")

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, weights_path: str | None = None,
                 n_features: int = 64, regularisation: float = 0.01, sigma: float = 4.0, seed: int = 0, max_pool: bool = False) -> None:
        super().__init__(spatial_dims, in_channels, image_size)
        self.set_up(ResNetFeatures(spatial_dims, in_channels, weights_path, seed, max_pool=max_pool), spatial_dims, n_features,
                    regularisation, sigma, seed)

    def set_up(self, backbone: nn.Module, spatial_dims: int, n_features: int, regularisation: float, sigma: float, seed: int) -> None:
        """The feature extractor (with a ``channels`` count), the blur, ``n_features`` channels drawn with ``seed`` and
        the empty statistics the training fills."""
        self.backbone = backbone
        self.blur = GaussianBlur(spatial_dims, sigma)
        g = torch.Generator().manual_seed(seed)
        n = min(n_features, self.backbone.channels)
        self.register_buffer("channels", torch.randperm(self.backbone.channels, generator=g)[:n])
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("inv_cov", torch.zeros(0))
        self.regularisation = regularisation

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        return embed(feats, tuple(feats[0].shape[2:]))[:, self.channels]

    @torch.no_grad()
    def collect(self, images: torch.Tensor) -> None:
        f = self.features(images).flatten(2).permute(2, 0, 1).double()  # (L, B, C)
        if not self._collected:  # [count, sum, sum of outer products]
            self._collected = [0, f.new_zeros(f.shape[0], f.shape[2]), f.new_zeros(f.shape[0], f.shape[2], f.shape[2])]
        count, total, outer = self._collected
        self._collected = [count + f.shape[1], total + f.sum(1), torch.baddbmm(outer, f.transpose(1, 2), f)]

    def fit_memory(self) -> None:
        if not self._collected:
            return
        count, total, outer = self._collected
        self._collected = []
        mean = total / count
        cov = (outer - count * mean[:, :, None] * mean[:, None, :]) / max(1, count - 1)
        cov = cov.float() + self.regularisation * torch.eye(cov.shape[2], device=cov.device)
        self.mean, self.inv_cov = mean.float().to(self.mean.device), torch.linalg.inv(cov).to(self.mean.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        delta = f.flatten(2).permute(2, 0, 1) - self.mean[:, None]  # (L, B, C)
        dist = torch.einsum("lbc,lcd,lbd->lb", delta, self.inv_cov, delta).clamp_min(0).sqrt()
        amap = dist.T.reshape(f.shape[0], 1, *f.shape[2:])
        mode = "bilinear" if amap.ndim == 4 else "trilinear"
        return self.blur(F.interpolate(amap, size=x.shape[2:], mode=mode, align_corners=False))
