"""PaDiM: a Gaussian per feature-map position over ResNet features; anomaly map = Mahalanobis distance."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sectorkit.domains.healthcare.models.backbone import ResNetFeatures
from sectorkit.domains.healthcare.models.common import GaussianBlur
from sectorkit.domains.healthcare.models.patchcore import embed


class PaDiMDetector(nn.Module):
    """Memory-based: per-position mean and inverse covariance of ``n_features`` randomly chosen feature channels."""

    memory_based = True

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, weights_path: str | None = None,
                 n_features: int = 64, regularisation: float = 0.01, sigma: float = 4.0, seed: int = 0, max_pool: bool = False) -> None:
        super().__init__()
        self.backbone = ResNetFeatures(spatial_dims, in_channels, weights_path, seed, max_pool=max_pool)
        self.blur = GaussianBlur(spatial_dims, sigma)
        g = torch.Generator().manual_seed(seed)
        n = min(n_features, self.backbone.channels)
        self.register_buffer("channels", torch.randperm(self.backbone.channels, generator=g)[:n])
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("inv_cov", torch.zeros(0))
        self.regularisation = regularisation
        self._collected: list[torch.Tensor] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        return embed(feats, tuple(feats[0].shape[2:]))[:, self.channels]

    @torch.no_grad()
    def collect(self, x: torch.Tensor) -> None:
        self._collected.append(self.features(x).cpu())

    def fit_memory(self) -> None:
        if not self._collected:
            return
        f = torch.cat(self._collected).flatten(2).permute(2, 0, 1)  # (L, N, C)
        self._collected = []
        mean = f.mean(dim=1)
        centred = f - mean[:, None]
        cov = centred.transpose(1, 2) @ centred / max(1, f.shape[1] - 1)
        cov = cov + self.regularisation * torch.eye(f.shape[2])
        self.mean, self.inv_cov = mean.to(self.mean.device), torch.linalg.inv(cov).to(self.mean.device)

    @property
    def fitted(self) -> bool:
        return self.mean.numel() > 0

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("PaDiM is fitted from memory, not by gradient descent")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        delta = f.flatten(2).permute(2, 0, 1) - self.mean[:, None]  # (L, B, C)
        dist = torch.einsum("lbc,lcd,lbd->lb", delta, self.inv_cov, delta).clamp_min(0).sqrt()
        amap = dist.T.reshape(f.shape[0], 1, *f.shape[2:])
        mode = "bilinear" if amap.ndim == 4 else "trilinear"
        return self.blur(F.interpolate(amap, size=x.shape[2:], mode=mode, align_corners=False))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("mean", "inv_cov"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
