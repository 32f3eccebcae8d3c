"""Variational autoencoder (MONAI ``VarAutoEncoder``): L1 + SSIM + KL; anomaly map = smoothed error of the mean reconstruction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import VarAutoEncoder

from sectorkit.domains.healthcare.models.base import AnomalyNetwork
from sectorkit.domains.healthcare.models.common import GaussianBlur, L1SSIMLoss


class VAEDetector(AnomalyNetwork):
    """MONAI VarAutoEncoder; ``kl_weight`` scales the KL term (per latent unit, averaged over the batch)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, channels: Sequence[int] = (32, 64, 128),
                 strides: Sequence[int] = (2, 2, 2), latent_size: int = 64, kl_weight: float = 1e-3, ssim_weight: float = 0.5, sigma: float = 2.0) -> None:
        super().__init__(spatial_dims, in_channels, image_size)
        self.net = VarAutoEncoder(spatial_dims=spatial_dims, in_shape=(in_channels, *([image_size] * spatial_dims)), out_channels=in_channels,
                                  latent_size=latent_size, channels=tuple(channels), strides=tuple(strides), num_res_units=0,
                                  norm="batch", use_sigmoid=True, use_mean_at_inference=True)
        self.criterion = L1SSIMLoss(spatial_dims, ssim_weight=ssim_weight)
        self.blur = GaussianBlur(spatial_dims, sigma)
        self.kl_weight = kl_weight

    def loss(self, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        recon, mu, logvar, _ = self.net(images)
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
        return self.criterion(recon, images) + self.kl_weight * kl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw anomaly map (B, 1, *S) from the mean reconstruction."""
        recon = self.net(x)[0]
        return self.blur((x - recon).abs().mean(dim=1, keepdim=True))
