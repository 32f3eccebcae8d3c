"""Pieces shared by the models: a fixed Gaussian blur (export-friendly) and the L1 + SSIM loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import nn


class GaussianBlur(nn.Module):
    """Fixed Gaussian smoothing of single-channel maps with replicate padding, one 1-D pass per axis (convs with a
    buffer kernel, traces to ONNX). Separable: the same sums as the full kernel, ``2r + 1`` instead of ``(2r + 1)^D``
    multiply-adds per pixel (a 128³ volume at sigma 4: 0.6 s instead of 16 s on one CPU thread)."""

    def __init__(self, spatial_dims: int, sigma: float = 2.0) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        radius = max(1, int(round(3 * sigma)))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(x**2) / (2 * max(sigma, 1e-3) ** 2))
        self.register_buffer("kernel", g / g.sum(), persistent=False)
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d if self.spatial_dims == 2 else F.conv3d
        for axis in range(self.spatial_dims):
            shape = [1, 1] + [1] * self.spatial_dims
            shape[2 + axis] = len(self.kernel)
            pad = [0] * (2 * self.spatial_dims)  # F.pad lists the last axis first
            pad[2 * (self.spatial_dims - 1 - axis)] = pad[2 * (self.spatial_dims - 1 - axis) + 1] = self.radius
            x = conv(F.pad(x, pad, mode="replicate"), self.kernel.reshape(shape))
        return x


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
