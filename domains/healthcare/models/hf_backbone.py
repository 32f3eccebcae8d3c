"""Pretrained image backbones by name through ``transformers``: DINOv2 ViTs, ResNets and ViT-MAE encoders.

``backbone`` is a Hugging Face hub id (``facebook/dinov2-small``, ``microsoft/resnet-50``) or a local folder written
by ``save_pretrained`` (e.g. the self-supervised backbone of :mod:`~sectorkit.domains.healthcare.models.mae`).
Weights are read as safetensors only (``use_safetensors=True``), from the user's Hugging Face cache
(``HF_HOME``/``HF_HUB_CACHE``); with ``HF_HUB_OFFLINE=1`` nothing is downloaded, and missing weights are one
``ConfigError`` naming the model id, the download command and the local-folder alternative. The backbone is frozen
(always in eval mode): the memory-bank detectors only read its patch features.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sectorkit.core.errors import ConfigError
from torch import nn
from transformers import AutoConfig, Dinov2Model, PreTrainedModel, ResNetModel, ViTMAEModel
from transformers.utils import cached_file

MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {"dinov2": Dinov2Model, "resnet": ResNetModel, "vit_mae": ViTMAEModel}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what DINOv2 and ResNet were trained with


def missing_weights_message(name: str, key: str = "model.net.backbone") -> str:
    """The one-line error for a backbone that is neither a local folder nor in the local cache."""
    return (f"{key}={name}: no local copy of these weights and downloads are off or failed (HF_HUB_OFFLINE, no network); "
            f"fetch them once with `hf download {name}` (`huggingface-cli download {name}` with huggingface_hub < 1.0), "
            f"or set {key}=/path/to/folder (a folder written by save_pretrained, with config.json and model.safetensors)")


def _source(name: str, key: str) -> str:
    """A local folder's path, or the hub id as given."""
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ConfigError(f"{key}={name}: folder has no config.json (expected a folder written by save_pretrained)")
        return str(local)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"{key}={name}: no such folder (expected a hub id like facebook/dinov2-small or a save_pretrained folder)")
    return name


def preprocessing(source: str) -> dict[str, Any]:
    """The model's ``preprocessor_config.json`` (mean, std, size) if it has one, else ``{}`` (read without an image processor class)."""
    try:
        path = cached_file(source, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except OSError:
        return {}
    return json.loads(Path(path).read_text()) if path else {}


def load_backbone(name: str, key: str = "model.net.backbone") -> tuple[PreTrainedModel, dict[str, Any]]:
    """The base model (``Dinov2Model``, ``ResNetModel`` or ``ViTMAEModel``) of ``name`` and its preprocessing settings."""
    source = _source(str(name), key)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        if Path(source).is_dir():
            raise ConfigError(f"{key}={name}: cannot read config.json ({str(exc).splitlines()[0]})") from None
        raise ConfigError(missing_weights_message(name, key)) from None
    cls = MODEL_CLASSES.get(config.model_type)
    if cls is None:
        raise ConfigError(f"{key}={name}: model type {config.model_type!r} is not supported (expected one of {', '.join(MODEL_CLASSES)})")
    extra = {"mask_ratio": 0.0} if config.model_type == "vit_mae" else {}  # every patch, no random masking
    for field, value in extra.items():
        setattr(config, field, value)
    try:
        model = cls.from_pretrained(source, config=config, use_safetensors=True)
    except OSError as exc:
        if Path(source).is_dir():
            raise ConfigError(f"{key}={name}: no model.safetensors in the folder ({str(exc).splitlines()[0]}); "
                              "only safetensors weights are read") from None
        raise ConfigError(missing_weights_message(name, key)) from None
    return model, preprocessing(source)


def default_layers(model: PreTrainedModel) -> tuple[int, ...]:
    """Hidden states read by default: the middle and last block of a ViT, stages 2 and 3 of a ResNet (PatchCore's choice)."""
    config = model.config
    if config.model_type == "resnet":
        n = len(config.hidden_sizes)
        return tuple(sorted({min(2, n), min(3, n)}))
    n = config.num_hidden_layers
    return tuple(sorted({max(1, n // 2), n}))


class PretrainedFeatures(nn.Module):
    """Patch feature maps of a frozen ``transformers`` backbone for grey or colour images in 0..1.

    Images are repeated to the model's channel count (grey → 3), resized to ``input_size`` and normalised with the
    model's mean and std; ``forward`` returns one (B, C, h, w) map per entry of ``layers`` (indices into the
    model's hidden states: 0 is the patch embedding / stem, ``i`` the output of block or stage ``i``; negative
    counts from the last). ``input_size``: ``None`` takes the preprocessor's size, else the config's ``image_size``
    (ViTs), else the data's ``image_size``; a ViT's size is rounded to a multiple of its patch size.
    """

    def __init__(self, model: PreTrainedModel, image_size: int, layers: Sequence[int] | None = None, input_size: int | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, key: str = "model.net") -> None:
        super().__init__()
        self.model = model
        config = model.config
        self.model_type = config.model_type
        self.vit = self.model_type != "resnet"
        self.num_channels = int(config.num_channels)
        count = config.num_hidden_layers if self.vit else len(config.hidden_sizes)
        chosen = tuple(default_layers(model) if not layers else layers)
        self.layers = tuple(int(i) % (count + 1) if int(i) < 0 else int(i) for i in chosen)
        bad = [i for i in chosen if not -count <= int(i) <= count]
        if bad:
            raise ConfigError(f"{key}.layers={list(chosen)}: this backbone has hidden states 0..{count}")
        size = int(input_size or image_size)
        if self.vit:
            patch = int(config.patch_size)
            size = max(patch, round(size / patch) * patch)
        self.input_size = size
        default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if self.model_type != "vit_mae" or self.num_channels == 3 else ((0.5,), (0.25,))
        mean, std = list(mean or default_mean), list(std or default_std)
        if len(mean) != self.num_channels:
            mean, std = [sum(mean) / len(mean)] * self.num_channels, [sum(std) / len(std)] * self.num_channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        if self.vit:
            width = config.hidden_size
            self.channels = width * len(self.layers)
        else:
            widths = [config.embedding_size, *config.hidden_sizes]
            self.channels = sum(widths[i] for i in self.layers)
        self.freeze()

    @classmethod
    def from_name(cls, name: str, image_size: int, layers: Sequence[int] | None = None, input_size: int | None = None,
                  key: str = "model.net") -> PretrainedFeatures:
        """Load ``name`` (hub id or local folder) and read the size, mean and std of its preprocessor config."""
        model, pre = load_backbone(name, f"{key}.backbone")
        size = pre.get("crop_size") or pre.get("size")
        if isinstance(size, dict):
            size = size.get("height") or size.get("shortest_edge")
        if input_size is None and size is None and model.config.model_type != "resnet":
            size = model.config.image_size if isinstance(model.config.image_size, int) else None
        return cls(model, image_size, layers, input_size or size, pre.get("image_mean"), pre.get("image_std"), key)

    def freeze(self) -> None:
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> PretrainedFeatures:  # always eval: dropout off, BatchNorm statistics fixed
        return super().train(False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in 0..1 → the model's pixel values (channels, size, normalisation)."""
        if x.shape[1] != self.num_channels:
            x = x.mean(dim=1, keepdim=True) if x.shape[1] != 1 else x
            x = x.repeat(1, self.num_channels, 1, 1) if self.num_channels != 1 else x
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pixels = self.prepare(x)
        kwargs: dict[str, Any] = {"output_hidden_states": True}
        if self.model_type == "vit_mae":  # ordered "noise" keeps the patches in place (mask_ratio is 0)
            n = (self.input_size // self.model.config.patch_size) ** 2
            kwargs["noise"] = torch.arange(n, device=x.device, dtype=torch.float32).expand(x.shape[0], n)
            kwargs["interpolate_pos_encoding"] = self.input_size != self.model.config.image_size
        states = self.model(pixel_values=pixels, **kwargs).hidden_states
        if not self.vit:
            return [states[i] for i in self.layers]
        side = self.input_size // self.model.config.patch_size
        return [states[i][:, 1:].transpose(1, 2).reshape(x.shape[0], -1, side, side) for i in self.layers]  # drop the CLS token
