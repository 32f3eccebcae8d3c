"""What every healthcare network is: built with the image geometry, it maps images to a raw anomaly map.

``forward(images)`` returns the raw anomaly map (B, 1, *S), higher where the image looks abnormal; the
module turns it into an image score, normalises both and applies the validation-chosen thresholds.
Trainable networks implement ``loss`` (on normal images, or on labels when ``supervised``); memory-bank
networks are filled from the normal training images by ``collect`` and ``fit_memory``, without gradients.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from sectorkit.core.errors import ConfigError
from sectorkit.core.network import Network


class AnomalyNetwork(Network):
    """Base class of the healthcare networks: trained on normal images only unless ``supervised``.

    Every network is built with the data's ``spatial_dims`` (2 or 3), ``in_channels`` and ``image_size``.
    """

    supervised: ClassVar[bool] = False

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.image_size = spatial_dims, in_channels, image_size

    def loss(self, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss of a batch (``target``, 0 normal / 1 abnormal, only for supervised networks)."""
        raise NotImplementedError


class MemoryBankNetwork(AnomalyNetwork):
    """A network fitted by storing features of the normal training images (no optimizer, no gradient steps).

    ``collect`` gathers the features of one training batch, ``fit_memory`` turns everything gathered into the
    bank. ``bank_buffers`` name the buffers whose size is only known after fitting (restored from checkpoints
    at their saved size).
    """

    memory_bank: ClassVar[bool] = True
    bank_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64) -> None:
        super().__init__(spatial_dims, in_channels, image_size)
        self._collected: list[torch.Tensor] = []

    def collect(self, images: torch.Tensor) -> None:
        """Gather the features of one batch of normal training images."""
        raise NotImplementedError

    def fit_memory(self) -> None:
        """Build the bank from the gathered features (a no-op when nothing was gathered since the last fit)."""
        raise NotImplementedError

    @property
    def fitted(self) -> bool:
        """Whether the bank holds anything yet."""
        return all(getattr(self, name).numel() > 0 for name in self.bank_buffers)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in self.bank_buffers:
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def anomaly_network(cls: type[Network], key: str = "model.net") -> type[AnomalyNetwork]:
    """``cls`` checked to be a healthcare network."""
    if not issubclass(cls, AnomalyNetwork):
        raise ConfigError(f"{key}._target_: {cls.__name__} is not a healthcare network (expected a subclass of {AnomalyNetwork.__module__}.AnomalyNetwork)")
    return cls
