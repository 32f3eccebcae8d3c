"""AnomalyDINO-style detector: patch kNN of test patches against the normal training patches, no training.

Damm et al. (AnomalyDINO, WACV 2025): DINOv2 patch features of the normal images form the memory bank; a test
patch's anomaly score is its cosine distance to the nearest normal patch. Background patches (mean input intensity
below ``background``, the dark outside of a scan) score 0, a simple stand-in for the paper's masking. The bank keeps
at most ``max_bank`` patches (a seeded random subset beyond that), so memory is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from sectorkit.domains.healthcare.models.base import MemoryBankNetwork
from sectorkit.domains.healthcare.models.common import GaussianBlur
from sectorkit.domains.healthcare.models.hf_backbone import PretrainedFeatures
from sectorkit.domains.healthcare.models.patchcore_pretrained import check_2d


class AnomalyDINODetector(MemoryBankNetwork):
    """Cosine-distance patch kNN on a frozen ``backbone`` (default ``facebook/dinov2-small``, last block)."""

    bank_buffers = ("bank",)

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, backbone: str = "facebook/dinov2-small",
                 layers: Sequence[int] | None = (-1,), input_size: int | None = None, max_bank: int = 50000, background: float = 0.05,
                 sigma: float = 2.0, seed: int = 0, chunk: int = 4096) -> None:
        super().__init__(spatial_dims, in_channels, image_size)
        check_2d(spatial_dims)
        self.backbone = self.build_backbone(backbone, image_size, layers, input_size)
        self.blur = GaussianBlur(spatial_dims, sigma)
        self.max_bank, self.background, self.seed, self.chunk = max_bank, background, seed, chunk
        self.register_buffer("bank", torch.zeros(0, self.backbone.channels))

    def build_backbone(self, backbone: str, image_size: int, layers: Sequence[int] | None, input_size: int | None) -> PretrainedFeatures:
        return PretrainedFeatures.from_name(backbone, image_size, layers, input_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised patch features (B, C, h, w)."""
        return F.normalize(torch.cat(self.backbone(x), dim=1), dim=1)

    def foreground(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """(B, h*w) bool: patches whose mean input intensity is above ``background``."""
        h, w = (int(s) for s in size)  # fixed by the backbone's input size: constants in an exported graph
        side = self.backbone.input_size
        grey = F.interpolate(x.mean(dim=1, keepdim=True), size=(side, side), mode="bilinear", align_corners=False)
        if side % h == 0 and side % w == 0:  # mean over each patch's pixels
            grey = F.avg_pool2d(grey, (side // h, side // w))
        else:
            grey = F.interpolate(grey, size=(h, w), mode="bilinear", align_corners=False)
        return (grey > self.background).flatten(1)

    @torch.no_grad()
    def collect(self, images: torch.Tensor) -> None:
        f = self.features(images)
        keep = self.foreground(images, f.shape[2:]).flatten()
        patches = f.movedim(1, -1).reshape(-1, f.shape[1])
        self._collected.append(patches[keep if keep.any() else slice(None)].float().cpu())

    def fit_memory(self) -> None:
        if not self._collected:
            return
        patches = torch.cat(self._collected)
        self._collected = []
        if len(patches) > self.max_bank:
            patches = patches[torch.randperm(len(patches), generator=torch.Generator().manual_seed(self.seed))[: self.max_bank]]
        self.bank = patches.to(self.bank.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        flat = f.movedim(1, -1).reshape(-1, f.shape[1])
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            sim = (flat @ self.bank.T).max(dim=1).values
        else:
            sim = torch.cat([(part @ self.bank.T).max(dim=1).values for part in flat.split(self.chunk)])
        dist = (1 - sim).clamp_min(0) * self.foreground(x, f.shape[2:]).flatten().float()
        amap = dist.reshape(f.shape[0], 1, *f.shape[2:])
        return self.blur(F.interpolate(amap, size=x.shape[2:], mode="bilinear", align_corners=False))
