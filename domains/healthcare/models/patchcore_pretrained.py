"""PatchCore over a pretrained ``transformers`` backbone (DINOv2, ResNet, or a self-supervised ViT-MAE folder).

The same memory bank as :class:`~sectorkit.domains.healthcare.models.patchcore.PatchCoreDetector` (3×3 locally
averaged patch features, greedy k-centre coreset, nearest-neighbour distance); only the feature extractor differs:
``backbone`` names a hub id or a ``save_pretrained`` folder (see :mod:`.hf_backbone`), kept frozen.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sectorkit.core.errors import ConfigError
from sectorkit.domains.healthcare.models.base import MemoryBankNetwork
from sectorkit.domains.healthcare.models.common import GaussianBlur
from sectorkit.domains.healthcare.models.hf_backbone import PretrainedFeatures
from sectorkit.domains.healthcare.models.patchcore import PatchCoreDetector


def check_2d(spatial_dims: int, key: str = "model.net.backbone") -> None:
    """The pretrained backbones are 2-D image models."""
    if spatial_dims != 2:
        raise ConfigError(f"{key}: pretrained backbones take 2-D images; data.spatial_dims={spatial_dims} needs a 3-D model (e.g. model=autoencoder)")


class PretrainedPatchCore(PatchCoreDetector):
    """PatchCore whose patch features come from a frozen pretrained backbone (``backbone``: hub id or local folder;
    ``layers``: hidden-state indices, default middle + last ViT block or ResNet stages 2 + 3; ``input_size``: the
    side the images are resized to, default the model's own)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, backbone: str = "facebook/dinov2-small",
                 layers: Sequence[int] | None = None, input_size: int | None = None, coreset_size: int = 2000, sigma: float = 4.0,
                 seed: int = 0, chunk: int = 4096) -> None:
        MemoryBankNetwork.__init__(self, spatial_dims, in_channels, image_size)  # PatchCore's state, another feature extractor
        check_2d(spatial_dims)
        self.backbone = self.build_backbone(backbone, image_size, layers, input_size)
        self.blur = GaussianBlur(spatial_dims, sigma)
        self.coreset_size, self.seed, self.chunk = coreset_size, seed, chunk
        self.register_buffer("bank", torch.zeros(0, self.backbone.channels))

    def build_backbone(self, backbone: str, image_size: int, layers: Sequence[int] | None, input_size: int | None) -> PretrainedFeatures:
        return PretrainedFeatures.from_name(backbone, image_size, layers, input_size)
