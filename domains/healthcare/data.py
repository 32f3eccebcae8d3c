"""The healthcare LightningDataModule: records from a layout (or the phantom sample) through a MONAI chain."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from torch.utils.data import Subset

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.export import ExportGraph
from sectorkit.core.network import Network
from sectorkit.core.progress import phase
from sectorkit.domains.healthcare.models.base import anomaly_network
from sectorkit.domains.healthcare.readers import Record, array_records, list_images, read_splits
from sectorkit.domains.healthcare.sample import make_phantoms
from sectorkit.domains.healthcare.transforms import (
    ImagePreprocessing,
    RawImageModel,
    build_transforms,
    read_raw_image,
    unwrap_data_error,
)

STAGES = ("train", "val", "test")


PHANTOM_CHUNK_VOXELS = 2**22  # phantoms are drawn at most this many pixels (voxels) at a time: 2 volumes at 128³


def images_per_chunk(datamodule: Any, most: int, max_voxels: int) -> int:
    """Images handled at a time: ``most``, fewer for large volumes so a chunk holds at most ``max_voxels`` pixels
    (voxels) of ``datamodule``'s ``image_size`` and ``spatial_dims``; at least one."""
    return max(1, min(most, max_voxels // (int(datamodule.image_size) ** int(datamodule.spatial_dims))))


def phantom_parts(n_normal: int, n_abnormal: int, size: int, spatial_dims: int, seed: int) -> list[tuple[int, int, int]]:
    """``(normal, abnormal, seed)`` of each draw of one split: one draw with ``seed`` when the split fits in
    ``PHANTOM_CHUNK_VOXELS`` (every 2D sample up to 1,024 images at 64 px, as before); else normals then abnormals in
    draws of that many voxels, each with its own seed derived from ``seed``, so the generator's memory is bounded."""
    per_draw = max(1, PHANTOM_CHUNK_VOXELS // size**spatial_dims)
    if n_normal + n_abnormal <= per_draw:
        return [(n_normal, n_abnormal, seed)]
    counts = [(min(per_draw, n_normal - i), 0) for i in range(0, n_normal, per_draw)]
    counts += [(0, min(per_draw, n_abnormal - i)) for i in range(0, n_abnormal, per_draw)]
    return [(a, b, int(np.random.SeedSequence([seed, part]).generate_state(1)[0])) for part, (a, b) in enumerate(counts)]


def phantom_records(n_train: int, n_val: int, n_test: int, size: int, spatial_dims: int, seed: int, supervised: bool = False) -> dict[str, list[Record]]:
    """Sample splits: normal-only train (half abnormal when ``supervised``), val and test half abnormal; lesion radius kept per record."""
    out: dict[str, list[Record]] = {}
    for offset, (stage, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        n_abnormal = 0 if stage == "train" and not supervised else n // 2
        out[stage] = []
        with phase(f"generating {stage} phantoms ({n} images, {size} px)"):
            for n_normal_part, n_abnormal_part, part_seed in phantom_parts(n - n_abnormal, n_abnormal, size, spatial_dims, seed * 1000 + offset):
                ph = make_phantoms(n_normal_part, n_abnormal_part, size=size, spatial_dims=spatial_dims, seed=part_seed)
                buckets, first = ph.size_bucket, len(out[stage])
                out[stage] += [
                    {"image": ph.images[i], "mask": ph.masks[i].astype(np.float32), "label": int(ph.labels[i]),
                     "name": f"{stage}_{first + i:04d}", "radius": float(ph.radius[i]), "contrast": float(ph.contrast[i]), "bucket": str(buckets[i])}
                    for i in range(len(ph.labels))
                ]
    return out


class HealthcareDataModule(SectorDataModule):
    """Normal-only training images and labelled val/test images (+ masks) as ``inputs/mask/target/index`` batches.

    ``path=None`` uses the phantom sample (``sample`` sizes); otherwise ``layout`` auto|folder|medmnist|manifest.
    ``cache``: ``memory`` (MONAI CacheDataset), ``disk`` (PersistentDataset under ``cache_dir``) or ``none``, for
    the splits read every epoch (train, val); the test and predict images are never held in memory (``disk`` or
    read as scored).
    A ``supervised`` network also gets the abnormal training images (half the sample's training split).
    ``max_heatmaps``: how many per-image heatmap overlays a test or predict run writes (the highest-scored
    images; ``None``: every image, 0: none); the report's grid of top and bottom cases is always drawn.
    """

    predict_input = "images"  # setup_predict takes an image array

    def __init__(
        self,
        path: str | None = None,
        layout: str = "auto",
        normal_label: int = 0,
        image_size: int = 64,
        spatial_dims: int = 2,
        channels: int = 1,
        cache: str = "memory",
        augment: bool = False,
        nan_policy: str = "error",
        sample: dict[str, int] | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int = 0,
        cache_dir: str | None = None,
        network: type[Network] | None = None,
        max_heatmaps: int | None = 100,
        allowed_root: str | None = None,
    ) -> None:
        super().__init__(path, batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed, cache_dir,
                         anomaly_network(network) if network is not None else None)
        if cache == "disk" and cache_dir is None:
            raise ConfigError("data.cache=disk needs data.cache_dir (the PersistentDataset folder)")
        self.layout, self.normal_label = layout, normal_label
        self.image_size, self.spatial_dims, self.channels = image_size, spatial_dims, channels
        self.cache, self.augment, self.nan_policy = cache, augment, nan_policy
        self.max_heatmaps = max_heatmaps
        self.allowed_root = allowed_root  # a manifest's files must lie in its own folder, or under this one
        self.sample = {"n_train": 64, "n_val": 32, "n_test": 64, **(sample or {})}
        self.records: dict[str, list[Record]] = {}
        self.datasets: dict[str, Any] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @property
    def scoring_cache(self) -> str:
        """The cache of the splits that are only scored (test, predict): never ``memory``, so a test set of any size
        is read as it is scored instead of being held (``disk`` stays ``disk``)."""
        return "disk" if self.cache == "disk" else "none"

    @property
    def supervised(self) -> bool:
        """Whether the network trains on labels: then the abnormal training images are kept."""
        return self.network is not None and self.network.supervised

    # --- records and datasets ------------------------------------------------------------------
    def _read_records(self) -> dict[str, list[Record]]:
        if self.path is None:
            s = self.sample
            return phantom_records(s["n_train"], s["n_val"], s["n_test"], self.image_size, self.spatial_dims, self.seed, self.supervised)
        return read_splits(self.require_path(), self.layout, self.normal_label, self.seed, self.supervised, self.allowed_root)

    def make_dataset(self, records: list[Record], augment: bool, cache: str | None = None) -> Any:
        """A MONAI dataset over ``records``; loading/check errors surface here as DataErrors naming the file."""
        cache = cache or self.cache
        items = [{**r, "index": i} for i, r in enumerate(records)]
        transform = build_transforms(self.image_size, self.spatial_dims, self.channels, self.nan_policy, augment)
        try:
            if cache == "memory":
                return CacheDataset(items, transform, cache_rate=1.0, num_workers=0, progress=False)
            if cache == "disk":
                Path(self.cache_dir).mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
                dataset = PersistentDataset(items, transform, cache_dir=self.cache_dir)
            else:
                dataset = Dataset(items, transform)
            for i in range(len(dataset)):  # read every file once now so bad input fails before training
                dataset[i]
            return dataset
        except Exception as exc:  # noqa: BLE001
            raise unwrap_data_error(exc) from None

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.path is not None:
            if "predict" not in self.datasets:  # a file or folder of images to score, no labels needed
                self.predict_records(list_images(self.require_path()))
            return
        if not self.records:
            self.records = self._read_records()
        for name in STAGES:
            if name not in self.datasets:
                cache = self.scoring_cache if name == "test" else self.cache
                self.datasets[name] = self.make_dataset(self.records[name], augment=self.augment and name == "train", cache=cache)
        if stage == "predict":
            self.datasets["predict"] = self.datasets["test"]
            self.records["predict"] = self.records["test"]

    def predict_records(self, records: list[Record]) -> None:
        """The images to score (no labels needed), loaded and checked by the scoring transforms."""
        self.records = {"predict": records}
        self.datasets["predict"] = self.make_dataset(records, augment=False, cache=self.scoring_cache)

    def setup_predict(self, rows: np.ndarray, source: str = "request") -> None:
        """Images held in memory, (N, H, W) or (N, C, H, W), scored as an ``.npz`` holding them as ``test_images`` is
        (records ``test_0``, ``test_1``, ...; what ``sectorkit.load(...).predict(images)`` writes)."""
        images = np.asarray(rows)
        if images.ndim not in (3, 4):
            raise DataError(f"{source}: image arrays must be (N, H, W) or (N, C, H, W), got shape {images.shape}")
        self.predict_records(array_records({"test_images": images}))

    def train_dataloader(self) -> Any:
        return self.dataloader(self.datasets["train"], shuffle=True)

    def val_dataloader(self) -> Any:
        return self.dataloader(self.datasets["val"])

    def test_dataloader(self) -> Any:
        return self.dataloader(self.datasets["test"])

    def predict_dataloader(self) -> Any:
        return self.dataloader(self.datasets["predict"])

    def model_kwargs(self) -> dict[str, Any]:
        return {"spatial_dims": self.spatial_dims, "in_channels": self.channels, "image_size": self.image_size}

    # --- images for baselines, reports and benchmarks -----------------------------------------
    def stage_loader(self, stage: str, indices: Sequence[int] | None = None, batch_size: int = 256) -> Any:
        """Batches of one stage (or of its rows ``indices``, in that order) without augmentation or shuffling."""
        dataset = self.datasets[stage]
        if stage == "train" and self.augment:  # the same files without the random affine (checked in setup already)
            items = [{**r, "index": i} for i, r in enumerate(self.records["train"])]
            dataset = Dataset(items, build_transforms(self.image_size, self.spatial_dims, self.channels, self.nan_policy, augment=False))
        if indices is not None:
            dataset = Subset(dataset, list(indices))
        return self.dataloader(dataset, batch_size=batch_size)

    def chunks(self, stage: str, indices: Sequence[int] | None = None,
               batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Images (n, C, *S), masks (n, 1, *S) and labels (n,) of one stage, ``batch_size`` images at a time: what
        the baselines score, so a test split of any size is never held whole."""
        for batch in self.stage_loader(stage, indices, batch_size):
            yield batch["inputs"].numpy(), batch["mask"].numpy(), batch["target"].numpy()

    def arrays(self, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images (N, C, *S), masks (N, 1, *S) and labels (N,) of a whole stage, without augmentation (kept: for
        small sets, e.g. tests and benchmarks; runs use :meth:`chunks`)."""
        if stage not in self._arrays:
            parts = list(self.chunks(stage))
            self._arrays[stage] = tuple(np.concatenate([p[k] for p in parts]) for k in range(3))  # type: ignore[assignment]
        return self._arrays[stage]

    def data_summary(self) -> dict[str, Any]:
        """Per split: images, normal and abnormal images and the abnormal share; the image geometry."""
        splits = {}
        for name in (*STAGES, *(["predict"] if self.path is not None and "predict" in self.records else [])):
            records = self.records.get(name)
            if records is None:
                continue
            labels = [r.get("label") for r in records]
            abnormal = sum(1 for label in labels if label == 1)  # records carry 1 abnormal, 0 normal
            known = sum(1 for label in labels if label is not None)
            facts: dict[str, Any] = {"images": len(records)}
            if known:
                facts.update({"normal": known - abnormal, "abnormal": abnormal, "abnormal share": f"{abnormal / known:.1%}"})
            splits[name] = facts
        geometry = f"{self.spatial_dims}D, {self.channels} channel(s), resized to {self.image_size} px a side"
        return {"source": str(self.path) if self.path else "built-in phantom sample", "facts": {"images": geometry}, "splits": splits}

    def record_frame(self, stage: str) -> pd.DataFrame:
        """One row per record of a stage: name, label and (sample only) lesion radius, contrast and size bucket."""
        return pd.DataFrame(self.records[stage]).drop(columns=["image", "mask"], errors="ignore")

    # --- export contract -------------------------------------------------------------------------
    def export_contract(self) -> dict[str, Any]:
        """The exported graph's input: raw images. The per-image min-max scaling and the area resize to the model's
        image size are inside the graph (:class:`~sectorkit.domains.healthcare.transforms.ImagePreprocessing`, the
        loader's steps in the loader's order), as are the score and map normalisation and both thresholds."""
        size = [self.image_size] * self.spatial_dims
        spatial = ["height", "width"] if self.spatial_dims == 2 else ["depth", "height", "width"]
        layout = "grey (1) or " + ("RGB(A) (3 or 4, averaged to grey in the graph)" if self.channels == 1 else f"{self.channels} channels (grey is repeated)")
        return {
            "images": {"dtype": "float32", "shape": ["batch", "channels", *spatial], "layout": f"channels first: {layout}",
                       "preprocessing": "none: raw intensities of any range (cast 8- or 16-bit pixels to float32) and any spatial size, "
                                        "one size per call; the spatial axes in the order the training images were read (MONAI's "
                                        "LoadImage reads PNG/JPEG files as (width, height); arrays and .npz files as given)",
                       "in_graph": f"non-finite values -> 0; channels as above; each image min-max scaled to [0, 1] over all its "
                                   f"channels and pixels (a constant image -> 0); area resize to {size} (MONAI Resize mode 'area'); "
                                   f"the loader itself refuses NaN under data.nan_policy={self.nan_policy!r}"},
            "image_size": size, "channels": self.channels,
            "outputs": {"score": "(batch,) image anomaly score, normalised: 0.5 is the image threshold",
                        "anomaly_map": f"(batch, 1, {', '.join(map(str, size))}) pixel scores at the model's image size, normalised: "
                                       "0.5 is the pixel threshold",
                        "is_anomalous": "(batch,) 1.0 where the raw image score >= the image threshold",
                        "pixel_is_anomalous": "(batch, 1, ...) 1.0 where the raw pixel score >= the pixel threshold"},
        }

    def raw_images(self, stage: str, rows: Sequence[int]) -> list[torch.Tensor]:
        """The images of ``rows`` of ``stage`` as read, before any check, scaling or resizing: each ``(C, *S)`` float32."""
        return [read_raw_image(self.records[stage][int(i)]["image"]) for i in rows]

    def export_graph(self, model: Any, batch: dict[str, torch.Tensor]) -> ExportGraph:
        """The model behind :class:`~sectorkit.domains.healthcare.transforms.ImagePreprocessing`: raw images in. Traced
        on the raw test images of ``batch`` (those of the first image's size, at most 4); the parity check also runs
        them at another size and intensity range; the outputs must agree with the model on the loader's images."""
        images = self.raw_images("test", batch["index"][:4].tolist())
        same = [k for k, image in enumerate(images) if image.shape == images[0].shape]
        raw = torch.stack([images[k] for k in same])
        with torch.inference_mode():
            reference = list(model(batch["inputs"][same].float()))
        stretched = torch.nn.functional.interpolate(raw, scale_factor=1.5, mode="nearest") * 1000.0 - 7.0
        return ExportGraph(
            module=RawImageModel(model, ImagePreprocessing(self.image_size, self.spatial_dims, self.channels)),
            inputs=(raw,), names=["images"], outputs=list(model.export_outputs),
            dynamic_axes={"images": {0: "batch", 1: "channels", **{2 + k: name for k, name in enumerate(["depth", "height", "width"][-self.spatial_dims:])}}},
            checks=[(stretched[:1],)], reference=reference,
        )

    # --- predict output --------------------------------------------------------------------------
    def predict_frame(self, outputs: Sequence[Any], stage: str) -> pd.DataFrame:
        """One row per image of ``stage`` (test or predict): name, image score (0..1, threshold at 0.5), anomaly
        flag and, on the test split, the label (``outputs``: the module's ``predict_step`` results)."""
        scores = np.array([v for o in outputs for v in o["score"]], dtype=np.float32)
        flags = np.array([v for o in outputs for v in o["is_anomalous"]], dtype=bool)
        records = self.records[stage][: len(scores)]
        frame = pd.DataFrame({"name": [r["name"] for r in records], "score": scores, "is_anomalous": flags})
        if stage == "test":
            frame["label"] = [r["label"] for r in records]
        return frame
