"""Convolutional autoencoder (MONAI ``AutoEncoder``): anomaly map = smoothed reconstruction error."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import AutoEncoder

from sectorkit.domains.healthcare.models.base import AnomalyNetwork
from sectorkit.domains.healthcare.models.common import GaussianBlur, L1SSIMLoss


class AutoEncoderDetector(AnomalyNetwork):
    """MONAI AutoEncoder trained with L1 + SSIM on normal images; works for 2D and 3D."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, channels: Sequence[int] = (32, 64, 128),
                 strides: Sequence[int] = (2, 2, 2), num_res_units: int = 0, ssim_weight: float = 0.5, sigma: float = 2.0) -> None:
        super().__init__(spatial_dims, in_channels, image_size)
        self.net = AutoEncoder(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=in_channels, channels=tuple(channels),
                               strides=tuple(strides), num_res_units=num_res_units, norm="batch")
        self.criterion = L1SSIMLoss(spatial_dims, ssim_weight=ssim_weight)
        self.blur = GaussianBlur(spatial_dims, sigma)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))

    def loss(self, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.criterion(self.reconstruct(images), images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw anomaly map (B, 1, *S)."""
        return self.blur((x - self.reconstruct(x)).abs().mean(dim=1, keepdim=True))
