"""Pieces shared by the models: a fixed Gaussian blur (export-friendly) and the L1 + SSIM loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import nn


class GaussianBlur(nn.Module):
    """Separable-free fixed Gaussian smoothing of single-channel maps (a conv with a buffer kernel, traces to ONNX)."""

    def __init__(self, spatial_dims: int, sigma: float = 2.0) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        radius = max(1, int(round(3 * sigma)))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(x**2) / (2 * max(sigma, 1e-3) ** 2))
        g = g / g.sum()
        kernel = g
        for _ in range(spatial_dims - 1):
            kernel = kernel[..., None] * g
        self.register_buffer("kernel", kernel[None, None], persistent=False)
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d if self.spatial_dims == 2 else F.conv3d
        pad = (self.radius,) * (2 * self.spatial_dims)
        return conv(F.pad(x, pad, mode="replicate"), self.kernel)


class L1SSIMLoss(nn.Module):
    """``l1_weight * L1 + ssim_weight * (1 - SSIM)`` between an image and its reconstruction (MONAI SSIMLoss)."""

    def __init__(self, spatial_dims: int, ssim_weight: float = 0.5, l1_weight: float = 1.0, win_size: int = 7) -> None:
        super().__init__()
        self.ssim = SSIMLoss(spatial_dims=spatial_dims, data_range=1.0, win_size=win_size)
        self.ssim_weight, self.l1_weight = ssim_weight, l1_weight

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.l1_weight * F.l1_loss(recon, target)
        if self.ssim_weight > 0:
            loss = loss + self.ssim_weight * self.ssim(recon, target)
        return loss


def image_score(amap: torch.Tensor, top_fraction: float = 0.01) -> torch.Tensor:
    """Image score = mean of the top ``top_fraction`` of anomaly-map pixels (a robust maximum)."""
    flat = amap.flatten(1)
    k = max(1, int(flat.shape[1] * top_fraction))
    return flat.topk(k, dim=1).values.mean(dim=1)
