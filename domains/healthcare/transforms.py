"""The MONAI dictionary-transform chain, plus the input checks that turn bad files into clear DataErrors.

Documented handling: images of mixed sizes are resized to ``image_size``; RGB(A) images are averaged to one
channel (or grey repeated to ``channels``); 16-bit DICOMs are scaled per image to 0..1 like any other
input; NaNs raise a DataError naming the file unless ``nan_policy='zero'`` (then replaced by 0); a mask
whose size differs from its image raises a DataError naming both files.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandAffined,
    Resized,
    ScaleIntensityd,
)

from sectorkit.core.errors import DataError

# MONAI's optional GPU DICOM decoder announces on every load that it is absent; pydicom decodes instead.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


def _source(data: Mapping[Hashable, Any], key: str = "image") -> str:
    """The file a record came from (its name for in-memory arrays)."""
    value = data.get(f"{key}_path") or data.get("name")
    return str(value)


class SafeLoadd(MapTransform):
    """LoadImaged for the keys that hold file paths; unreadable files raise a DataError naming the file."""

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.loaders = {k: LoadImaged(keys=k, image_only=True) for k in keys}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], str):
                d[f"{key}_path"] = d[key]
                try:
                    d = self.loaders[key](d)
                except Exception as exc:  # noqa: BLE001 - every reader failure is a bad file for the user
                    raise DataError(f"{d[f'{key}_path']}: cannot read this {key} ({type(exc).__name__}: {exc})") from exc
        return d


class ZeroMask:
    """Give a record without a mask an all-zero mask of the image's spatial size (normals, unlabelled data).

    Deliberately not a MONAI ``Transform``: caching datasets (CacheDataset, PersistentDataset) cache the chain up
    to the first such step, so the zeros are made per batch instead of being stored for every maskless image."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if d.get("mask") is None:
            d["mask"] = torch.zeros((1, *d["image"].shape[1:]), dtype=torch.float32)
        return d


class CheckImaged(MapTransform):
    """Spatial dims, finiteness, channel count and mask/image agreement, with errors naming the file."""

    def __init__(self, spatial_dims: int, channels: int, nan_policy: str = "error") -> None:
        super().__init__(["image", "mask"])
        self.spatial_dims, self.channels, self.nan_policy = spatial_dims, channels, nan_policy

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = torch.as_tensor(d["image"]).float()
        src = _source(d)
        if image.ndim != self.spatial_dims + 1:
            raise DataError(
                f"{src}: image has shape {tuple(image.shape[1:])} after adding channels; "
                f"expected {self.spatial_dims}D (data.spatial_dims={self.spatial_dims})"
            )
        if not torch.isfinite(image).all():
            if self.nan_policy != "zero":
                bad = int((~torch.isfinite(image)).sum())
                raise DataError(f"{src}: image contains {bad} NaN/inf values (set data.nan_policy=zero to replace them by 0)")
            image = torch.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
        c = image.shape[0]
        if c != self.channels:
            if self.channels == 1:
                image = image[:3].mean(dim=0, keepdim=True)  # RGB(A) -> grey
            elif c == 1:
                image = image.repeat(self.channels, *([1] * self.spatial_dims))
            else:
                raise DataError(f"{src}: image has {c} channels; expected 1 or data.channels={self.channels}")
        d["image"] = image
        if d.get("mask") is None:
            d.pop("mask", None)  # no mask: ZeroMask adds zeros after the cached part of the chain
            return d
        mask = torch.as_tensor(d["mask"]).float()
        if mask.shape[0] > 1:
            mask = mask.amax(dim=0, keepdim=True)
        if tuple(mask.shape[1:]) != tuple(image.shape[1:]):
            raise DataError(
                f"{_source(d, 'mask')}: mask size {tuple(mask.shape[1:])} does not match its image {src} "
                f"of size {tuple(image.shape[1:])}"
            )
        d["mask"] = (mask > 0).float()
        return d


def deterministic_transforms(image_size: int, spatial_dims: int, channels: int, nan_policy: str) -> list:
    """Load, check, scale to 0..1 and resize (the part a CacheDataset/PersistentDataset caches), then give
    maskless records their all-zero mask (not cached)."""
    size = (image_size,) * spatial_dims
    return [
        SafeLoadd(["image", "mask"]),
        _EnsureChannels(),
        CheckImaged(spatial_dims, channels, nan_policy),
        ScaleIntensityd(keys="image", minv=0.0, maxv=1.0),
        Resized(keys=["image", "mask"], spatial_size=size, mode=("area", "nearest"), allow_missing_keys=True),
        EnsureTyped(keys=["image", "mask"], dtype=torch.float32, track_meta=False, allow_missing_keys=True),
        ZeroMask(),
    ]


class _EnsureChannels(MapTransform):
    """EnsureChannelFirstd for files (uses the reader's channel metadata); in-memory arrays are already channel-first."""

    def __init__(self) -> None:
        super().__init__(["image", "mask"], allow_missing_keys=True)
        self.from_meta = {k: EnsureChannelFirstd(keys=k) for k in ("image", "mask")}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key] is None:
                continue
            if f"{key}_path" in d:
                try:
                    d = self.from_meta[key](d)
                except Exception as exc:  # noqa: BLE001
                    raise DataError(f"{d[f'{key}_path']}: cannot find the channel axis ({exc})") from exc
            else:
                d[key] = torch.as_tensor(np.asarray(d[key], dtype=np.float32))
        return d


def augment_transforms(spatial_dims: int, prob: float = 0.5) -> list:
    """Mild random affine augmentation (rotation, translation, scaling) applied to image and mask together."""
    return [
        RandAffined(
            keys=["image", "mask"],
            prob=prob,
            rotate_range=(0.1,) * (1 if spatial_dims == 2 else 3),
            translate_range=(2,) * spatial_dims,
            scale_range=(0.05,) * spatial_dims,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        EnsureTyped(keys=["image", "mask"], dtype=torch.float32, track_meta=False),
    ]


class ToBatchd(MapTransform):
    """Keep only the tensors a batch carries: ``inputs``, ``mask``, ``target`` (0/1) and ``index`` (record number)."""

    def __init__(self) -> None:
        super().__init__(["image"])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[str, torch.Tensor]:
        return {
            "inputs": torch.as_tensor(data["image"]).float(),
            "mask": torch.as_tensor(data["mask"]).float(),
            "target": torch.tensor(int(data["label"]), dtype=torch.long),
            "index": torch.tensor(int(data["index"]), dtype=torch.long),
        }


def build_transforms(image_size: int, spatial_dims: int, channels: int, nan_policy: str = "error", augment: bool = False) -> Compose:
    """The full chain for one stage (deterministic part first, so caching datasets store it)."""
    chain = deterministic_transforms(image_size, spatial_dims, channels, nan_policy)
    if augment:
        chain += augment_transforms(spatial_dims)
    return Compose([*chain, ToBatchd()])


def unwrap_data_error(exc: BaseException) -> BaseException:
    """The DataError inside MONAI's 'applying transform' RuntimeError chain, or ``exc`` itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DataError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def area_weights(length: torch.Tensor | int, size: int) -> torch.Tensor:
    """``(size, length)`` averaging weights of an area resize from ``length`` to ``size`` samples along one axis:
    output ``i`` is the mean of inputs ``floor(i * length / size)`` to ``ceil((i + 1) * length / size) - 1``, the
    windows of ``torch.nn.functional.interpolate(mode='area')`` (adaptive average pooling) that MONAI's
    ``Resize(mode='area')`` runs. As a matrix built from the input's length it is one graph for every input size."""
    position = torch.arange(length)
    index = torch.arange(size)
    start = torch.div(index * length, size, rounding_mode="floor")
    end = torch.div((index + 1) * length + size - 1, size, rounding_mode="floor")
    inside = (position[None, :] >= start[:, None]) & (position[None, :] < end[:, None])
    return inside.float() / (end - start)[:, None].float()


class ImagePreprocessing(torch.nn.Module):
    """The deterministic part of the chain (:func:`deterministic_transforms`) as tensor operations, for graphs that
    take raw images: ``(batch, C, *S)`` float32 raw intensities of any range and spatial size (one size per batch)
    → ``(batch, channels, image_size, ...)``. Same steps, same order: non-finite values → 0 (``nan_policy='zero'``;
    the loader refuses them under ``'error'``); channels as :class:`CheckImaged` (RGB(A) averaged to one channel,
    grey repeated); each image min-max scaled to [0, 1] over all its channels and pixels (``ScaleIntensity``; a
    constant image → 0); area resize to ``image_size`` along every spatial axis (``Resize(mode='area')``)."""

    def __init__(self, image_size: int, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.image_size, self.spatial_dims, self.channels = int(image_size), int(spatial_dims), int(channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isfinite(images), images, torch.zeros_like(images))
        if self.channels == 1:
            x = x[:, :3].mean(dim=1, keepdim=True)
        else:  # one channel is repeated; `channels` channels stay as they are
            x = x[:, : self.channels] + torch.zeros((1, self.channels) + (1,) * self.spatial_dims, dtype=x.dtype)
        axes = tuple(range(1, x.ndim))
        low, high = x.amin(dim=axes, keepdim=True), x.amax(dim=axes, keepdim=True)
        spread = high - low
        x = torch.where(spread > 0, (x - low) / torch.where(spread > 0, spread, torch.ones_like(spread)), torch.zeros_like(x))
        last = x.ndim - 1
        for axis in range(2, x.ndim):  # one spatial axis at a time: swap it last, average, swap it back
            weights = area_weights(x.shape[axis], self.image_size)
            x = (x.transpose(axis, last) @ weights.T).transpose(axis, last)
        return x


def read_raw_image(image: str | np.ndarray) -> torch.Tensor:
    """An image (a file path or an in-memory array) as read, channels first, before any check, scaling or resizing:
    the raw input an exported graph takes (``(C, *S)`` float32)."""
    loaded = Compose([SafeLoadd(["image"]), _EnsureChannels()])({"image": image, "mask": None})["image"]
    loaded = torch.as_tensor(loaded).float()
    return loaded.as_tensor() if hasattr(loaded, "as_tensor") else loaded


class RawImageModel(torch.nn.Module):
    """``model`` behind :class:`ImagePreprocessing`: the graph an export writes, raw images in, the model's outputs out."""

    def __init__(self, model: torch.nn.Module, preprocessing: ImagePreprocessing) -> None:
        super().__init__()
        self.model, self.preprocessing = model, preprocessing

    def forward(self, images: torch.Tensor) -> Any:
        return self.model(self.preprocessing(images))
