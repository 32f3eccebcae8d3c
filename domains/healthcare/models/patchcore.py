"""PatchCore: nearest-neighbour distance of locally aggregated ResNet patch features to a coreset memory bank."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sectorkit.domains.healthcare.models.base import MemoryBankNetwork
from sectorkit.domains.healthcare.models.backbone import ResNetFeatures
from sectorkit.domains.healthcare.models.common import GaussianBlur
from sectorkit.domains.healthcare.models.knn import greedy_coreset, nearest_distances, squared_distances


def embed(features: list[torch.Tensor], size: tuple[int, ...]) -> torch.Tensor:
    """Concatenate feature maps resized to ``size`` after a 3x3 local average (PatchCore's neighbourhood aggregation)."""
    d = len(size)
    pool = F.avg_pool2d if d == 2 else F.avg_pool3d
    mode = "bilinear" if d == 2 else "trilinear"
    return torch.cat([F.interpolate(pool(f, 3, 1, 1), size=size, mode=mode, align_corners=False) for f in features], dim=1)


class PatchCoreDetector(MemoryBankNetwork):
    """``collect`` gathers patch embeddings of normal images, ``fit_memory`` keeps a greedy coreset of them as the bank;
    forward gives the raw map (distance of each patch to its nearest bank patch).

    ``max_bank_patches`` (None: keep every training patch, on the CPU, until the coreset) caps the patches held
    before the coreset: a uniform random subset of that many is kept as batches arrive (each patch gets a seeded
    random key, the smallest keys stay), on the network's device, so training memory no longer grows with the
    training set. The greedy coreset then runs on that device over at most ``coreset_candidates`` of them.
    The test search is exact: ``chunk`` test patches against ``bank_chunk`` bank patches at a time."""

    bank_buffers = ("bank",)
    max_bank_patches: int | None = None
    coreset_candidates: int = 40000
    bank_chunk: int = 16384

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, weights_path: str | None = None,
                 coreset_size: int = 2000, sigma: float = 4.0, seed: int = 0, max_pool: bool = False, chunk: int = 4096,
                 max_bank_patches: int | None = None, coreset_candidates: int = 40000, bank_chunk: int = 16384) -> None:
        super().__init__(spatial_dims, in_channels, image_size)
        self.backbone = ResNetFeatures(spatial_dims, in_channels, weights_path, seed, max_pool=max_pool)
        self.blur = GaussianBlur(spatial_dims, sigma)
        self.coreset_size, self.seed, self.chunk = coreset_size, seed, chunk
        self.max_bank_patches, self.coreset_candidates, self.bank_chunk = max_bank_patches, coreset_candidates, bank_chunk
        self.register_buffer("bank", torch.zeros(0, self.backbone.channels))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embeddings (B, C, *s) at the resolution of the first feature map."""
        feats = self.backbone(x)
        return embed(feats, tuple(feats[0].shape[2:]))

    @torch.no_grad()
    def collect(self, images: torch.Tensor) -> None:
        f = self.features(images)
        patches = f.movedim(1, -1).reshape(-1, f.shape[1]).float()
        if self.max_bank_patches is None:
            self._collected.append(patches.cpu())
            return
        if not self._collected:  # [kept patches, their random keys, the key generator]
            generator = torch.Generator(patches.device).manual_seed(self.seed)
            self._collected = [patches[:0], patches.new_zeros(0), generator]
        kept, keys, generator = self._collected
        kept, keys = torch.cat([kept, patches]), torch.cat([keys, torch.rand(len(patches), device=patches.device, generator=generator)])
        if len(kept) > self.max_bank_patches:
            keep = torch.topk(keys, self.max_bank_patches, largest=False).indices.sort().values  # arrival order kept
            kept, keys = kept[keep], keys[keep]
        self._collected = [kept, keys, generator]

    def fit_memory(self) -> None:
        if not self._collected:
            return
        patches = self._collected[0] if self.max_bank_patches is not None else torch.cat(self._collected)
        self._collected = []
        index = greedy_coreset(patches, self.coreset_size, self.seed, max_candidates=self.coreset_candidates)
        self.bank = patches[index].to(self.bank.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        flat = f.movedim(1, -1).reshape(-1, f.shape[1])
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():  # one graph for any batch size
            dist = squared_distances(flat, self.bank).min(dim=1).values
        else:  # exact, in blocks of test and bank patches: bounded memory, cost linear in the test patches
            dist = nearest_distances(flat, self.bank, self.chunk, self.bank_chunk)
        amap = dist.sqrt().reshape(f.shape[0], 1, *f.shape[2:])
        mode = "bilinear" if amap.ndim == 4 else "trilinear"
        return self.blur(F.interpolate(amap, size=x.shape[2:], mode=mode, align_corners=False))
