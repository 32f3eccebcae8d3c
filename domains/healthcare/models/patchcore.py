"""PatchCore: nearest-neighbour distance of locally aggregated ResNet patch features to a coreset memory bank."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sectorkit.domains.healthcare.models.base import MemoryBankNetwork
from sectorkit.domains.healthcare.models.backbone import ResNetFeatures
from sectorkit.domains.healthcare.models.common import GaussianBlur


def embed(features: list[torch.Tensor], size: tuple[int, ...]) -> torch.Tensor:
    """Concatenate feature maps resized to ``size`` after a 3x3 local average (PatchCore's neighbourhood aggregation)."""
    d = len(size)
    pool = F.avg_pool2d if d == 2 else F.avg_pool3d
    mode = "bilinear" if d == 2 else "trilinear"
    return torch.cat([F.interpolate(pool(f, 3, 1, 1), size=size, mode=mode, align_corners=False) for f in features], dim=1)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances with matmuls only (exports to ONNX, unlike cdist)."""
    return (a.pow(2).sum(-1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(-1)[None]).clamp_min(0)


def greedy_coreset(x: torch.Tensor, size: int, seed: int = 0, projection: int = 64, max_candidates: int = 40000) -> torch.Tensor:
    """Indices of a greedy k-centre coreset of ``x`` (computed on a random projection, as in PatchCore).

    For speed on CPU the greedy search runs over at most ``max_candidates`` randomly drawn patches."""
    if size >= len(x):
        return torch.arange(len(x))
    g = torch.Generator().manual_seed(seed)
    if len(x) > max_candidates:
        subset = torch.randperm(len(x), generator=g)[:max_candidates]
        return subset[greedy_coreset(x[subset], size, seed, projection, max_candidates)]
    proj = x @ (torch.randn(x.shape[1], projection, generator=g) / projection**0.5) if x.shape[1] > projection else x
    proj = proj.contiguous()
    norms = proj.pow(2).sum(1)
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(len(x), (1,), generator=g))
    dist = norms - 2 * proj @ proj[chosen[0]] + norms[chosen[0]]
    for i in range(1, size):
        chosen[i] = dist.argmax()
        c = proj[chosen[i]]
        dist = torch.minimum(dist, norms - 2 * proj @ c + norms[chosen[i]])
    return chosen


class PatchCoreDetector(MemoryBankNetwork):
    """``collect`` gathers patch embeddings of normal images, ``fit_memory`` keeps a greedy coreset of them as the bank;
    forward gives the raw map (distance of each patch to its nearest bank patch)."""

    bank_buffers = ("bank",)

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, weights_path: str | None = None,
                 coreset_size: int = 2000, sigma: float = 4.0, seed: int = 0, max_pool: bool = False, chunk: int = 4096) -> None:
        super().__init__(spatial_dims, in_channels, image_size)
        self.backbone = ResNetFeatures(spatial_dims, in_channels, weights_path, seed, max_pool=max_pool)
        self.blur = GaussianBlur(spatial_dims, sigma)
        self.coreset_size, self.seed, self.chunk = coreset_size, seed, chunk
        self.register_buffer("bank", torch.zeros(0, self.backbone.channels))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embeddings (B, C, *s) at the resolution of the first feature map."""
        feats = self.backbone(x)
        return embed(feats, tuple(feats[0].shape[2:]))

    @torch.no_grad()
    def collect(self, images: torch.Tensor) -> None:
        f = self.features(images)
        self._collected.append(f.movedim(1, -1).reshape(-1, f.shape[1]).float().cpu())

    def fit_memory(self) -> None:
        if not self._collected:
            return
        patches = torch.cat(self._collected)
        self._collected = []
        self.bank = patches[greedy_coreset(patches, self.coreset_size, self.seed)].to(self.bank.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        flat = f.movedim(1, -1).reshape(-1, f.shape[1])
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():  # one graph for any batch size
            dist = squared_distances(flat, self.bank).min(dim=1).values
        else:  # chunks bound the memory of the distance matrix
            dist = torch.cat([squared_distances(part, self.bank).min(dim=1).values for part in flat.split(self.chunk)])
        amap = dist.sqrt().reshape(f.shape[0], 1, *f.shape[2:])
        mode = "bilinear" if amap.ndim == 4 else "trilinear"
        return self.blur(F.interpolate(amap, size=x.shape[2:], mode=mode, align_corners=False))
