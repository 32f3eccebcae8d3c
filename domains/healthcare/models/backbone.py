"""A MONAI ResNet-18 feature extractor (no torchvision) with optional local ImageNet weights.

``weights_path`` may point to a ResNet-18 state dict saved by torchvision or MONAI (keys ``conv1``,
``layer1.0.conv1``...; ``module.``/``backbone.`` prefixes are stripped, 3-channel ``conv1`` weights are
summed to the input channel count). Nothing is downloaded. Without weights the documented fallback is a
seeded random initialisation: random convolutional features still separate local texture and intensity
well on small grey images (measured in benchmarks/healthcare.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets import ResNet
from torch import nn

from sectorkit.core.errors import ConfigError


def load_local_weights(net: nn.Module, path: str | Path, in_channels: int) -> int:
    """Load matching tensors from a local state dict into ``net``; returns how many were loaded."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.net.weights_path={path}: no such file (ImageNet weights are only read from a local file)")
    state = torch.load(file, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = net.state_dict()
    loaded = {}
    for key, value in state.items():
        name = key.removeprefix("module.").removeprefix("backbone.")
        if name == "conv1.weight" and value.ndim == 4 and value.shape[1] != in_channels:
            value = value.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels
        if name in own and own[name].shape == value.shape:
            loaded[name] = value
    if not loaded:
        raise ConfigError(f"model.net.weights_path={path}: no tensor matches a ResNet-18 (expected keys like conv1.weight, layer1.0.conv1.weight)")
    net.load_state_dict(loaded, strict=False)
    return len(loaded)


class ResNetFeatures(nn.Module):
    """Frozen ResNet-18 trunk returning ``layers`` feature maps (layer1 at 1/2, layer2 at 1/4 of the input size;
    twice finer with ``max_pool=False``, for small lesions on small images)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, weights_path: str | None = None, seed: int = 0, layers: tuple[str, ...] = ("layer1", "layer2"),
                 max_pool: bool = True) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = ResNet(block="basic", layers=[2, 2, 2, 2], block_inplanes=[64, 128, 256, 512], spatial_dims=spatial_dims,
                              n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=1, num_classes=1,
                              no_max_pool=not max_pool)
        self.loaded = load_local_weights(self.net, weights_path, in_channels) if weights_path else 0
        self.layers = tuple(layers)
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNetFeatures:  # always eval: BatchNorm statistics stay fixed
        return super().train(False)

    @property
    def channels(self) -> int:
        return sum({"layer1": 64, "layer2": 128, "layer3": 256}[name] for name in self.layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        x = n.act(n.bn1(n.conv1(x)))
        if not n.no_max_pool:
            x = n.maxpool(x)
        out = []
        for name in ("layer1", "layer2", "layer3"):
            x = getattr(n, name)(x)
            if name in self.layers:
                out.append(x)
            if len(out) == len(self.layers):
                break
        return out
