"""Supervised classifier (MONAI DenseNet121 or ResNet-18) for data with abnormal training labels.

It learns normal vs abnormal directly: being ``supervised``, the data module keeps the abnormal training
images for it. It gives image scores only: its anomaly map is the image probability broadcast over the
image, so pixel metrics of this model carry no localisation information.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121, ResNet

from sectorkit.core.errors import ConfigError
from sectorkit.domains.healthcare.models.base import AnomalyNetwork


class ClassifierDetector(AnomalyNetwork):
    """Binary classifier; ``forward`` returns the abnormal probability as a constant map (B, 1, *S)."""

    supervised = True

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, backbone: str = "densenet121", dropout: float = 0.0) -> None:
        super().__init__(spatial_dims, in_channels, image_size)
        if backbone == "densenet121":
            self.net = DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, dropout_prob=dropout)
        elif backbone == "resnet18":
            self.net = ResNet(block="basic", layers=[2, 2, 2, 2], block_inplanes=[64, 128, 256, 512], spatial_dims=spatial_dims,
                              n_input_channels=in_channels, conv1_t_stride=2, num_classes=1)
        else:
            raise ConfigError(f"model.net.backbone={backbone!r}; expected densenet121 or resnet18")

    def loss(self, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.net(images).squeeze(1), target.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(self.net(x)).reshape(-1, *([1] * (x.ndim - 1)))
        return prob.expand(-1, 1, *x.shape[2:])
