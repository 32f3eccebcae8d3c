"""PaDiM over a pretrained ``transformers`` backbone (a ResNet by default, as in the PaDiM paper; DINOv2 or a
self-supervised ViT-MAE folder too): a Gaussian per feature position, Mahalanobis distance."""

from __future__ import annotations

from collections.abc import Sequence

from sectorkit.domains.healthcare.models.base import MemoryBankNetwork
from sectorkit.domains.healthcare.models.hf_backbone import PretrainedFeatures
from sectorkit.domains.healthcare.models.padim import PaDiMDetector
from sectorkit.domains.healthcare.models.patchcore_pretrained import check_2d


class PretrainedPaDiM(PaDiMDetector):
    """PaDiM (``n_features`` random channels of the concatenated maps) on a frozen ``backbone`` (hub id or local folder)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, backbone: str = "microsoft/resnet-50",
                 layers: Sequence[int] | None = None, input_size: int | None = None, n_features: int = 100, regularisation: float = 0.01,
                 sigma: float = 4.0, seed: int = 0) -> None:
        MemoryBankNetwork.__init__(self, spatial_dims, in_channels, image_size)  # PaDiM's state, another feature extractor
        check_2d(spatial_dims)
        self.set_up(PretrainedFeatures.from_name(backbone, image_size, layers, input_size), spatial_dims, n_features, regularisation,
                    sigma, seed)
