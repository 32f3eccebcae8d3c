"""The Lightning module: an anomaly network + normalisation statistics and thresholds stored as buffers.

``forward(images)`` is the whole inference path shared by predict and ONNX export: it returns
``(score, anomaly_map, is_anomalous, pixel_is_anomalous)`` where score and map are normalised to 0..1 with
the validation-chosen thresholds at 0.5, so an exported model makes exactly the decisions ``predict`` makes.
``predict_step`` keeps only the per-image part (score and flag): a run over any number of images holds one
score per image, and the few maps a report draws are recomputed with :func:`forward_outputs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import MetricCollection

from sectorkit.core.module import SectorModule, plain_container
from sectorkit.core.network import build_network, network_class
from sectorkit.core.thresholds import choose_threshold
from sectorkit.domains.healthcare.metrics import anomaly_metrics, normalise
from sectorkit.domains.healthcare.models.base import anomaly_network
from sectorkit.domains.healthcare.models.common import image_score

Batch = dict[str, torch.Tensor]
Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MAX_CALIBRATION_PIXELS = 500_000  # pixel thresholds are chosen on an evenly strided subset beyond this many pixels


class AnomalyDetector(SectorModule):
    """Trains on normal images (or on labels, for a supervised network); thresholds and normalisation come from
    the validation split.

    ``net``: the network config (``_target_`` an :class:`~sectorkit.domains.healthcare.models.base.AnomalyNetwork`).
    ``threshold``: ``f1`` (maximises F1 on validation; without abnormal validation images it falls back to the
    normal-score quantile) or ``fpr`` (the quantile of normal validation scores giving false-positive rate
    ``fpr``), applied to image scores and, against the validation masks, to pixels. ``top_fraction``: the
    image score is the mean of this top share of the anomaly map.
    """

    export_outputs = ("score", "anomaly_map", "is_anomalous", "pixel_is_anomalous")  # normalised: thresholds at 0.5

    def __init__(
        self,
        net: dict[str, Any],
        spatial_dims: int = 2,
        in_channels: int = 1,
        image_size: int = 64,
        threshold: str = "f1",
        fpr: float = 0.05,
        top_fraction: float = 0.01,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        # plain containers only: checkpoints are read back with torch.load(weights_only=True)
        net, optimizer, scheduler = (plain_container(v) for v in (net, optimizer, scheduler))
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        anomaly_network(network_class(net))
        self.net = build_network(net, spatial_dims=spatial_dims, in_channels=in_channels, image_size=image_size)
        for name in ("image_min", "image_max", "image_threshold", "pixel_min", "pixel_max", "pixel_threshold"):
            self.register_buffer(name, torch.tensor(0.0 if "min" in name else 1.0 if "max" in name else 0.5))
        self.threshold_rules = {"image": "not calibrated (0.5)", "pixel": "not calibrated (0.5)"}

    def build_metrics(self) -> MetricCollection:
        return anomaly_metrics()

    # --- inference -----------------------------------------------------------------------------
    def raw_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (un-normalised) image score (B,) and anomaly map (B, 1, *S)."""
        amap = self.net(images)
        return image_score(amap, self.hparams.top_fraction), amap

    def decide(self, score: torch.Tensor, amap: torch.Tensor) -> Outputs:
        """Normalised score and map (thresholds at 0.5) and the image and pixel flags of raw outputs."""
        score_n = normalise(score, self.image_min, self.image_max, self.image_threshold)
        map_n = normalise(amap, self.pixel_min, self.pixel_max, self.pixel_threshold)
        return score_n, map_n, (score >= self.image_threshold).float(), (amap >= self.pixel_threshold).float()

    def forward(self, images: torch.Tensor) -> Outputs:
        return self.decide(*self.raw_outputs(images))

    # --- training ------------------------------------------------------------------------------
    def training_loss(self, batch: Batch) -> torch.Tensor:
        if self.net.supervised:
            return self.net.loss(batch["inputs"], batch["target"])
        return self.net.loss(batch["inputs"])

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        if not self.net.memory_bank:
            return super().training_step(batch, batch_idx)
        self.net.collect(batch["inputs"])  # a memory bank: no loss, no optimizer step
        return None

    def on_validation_epoch_start(self) -> None:
        if self.net.memory_bank:  # validation runs before on_train_epoch_end: fill the bank here
            self.net.fit_memory()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.net.memory_bank:
            self.net.fit_memory()
            self.trainer.should_stop = True  # one pass over the normal images fills the bank

    @property
    def ready(self) -> bool:
        """False for a memory bank that has not seen training images yet (Lightning's sanity check)."""
        return not self.net.memory_bank or self.net.fitted

    # --- validation: thresholds and normalisation ---------------------------------------------
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if self.ready:
            super().validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if self.ready:
            super().on_validation_epoch_end()

    def update_metrics(self, metrics: MetricCollection, batch: Batch) -> None:
        """Score a batch with the stored thresholds. A validation epoch is scored in :meth:`calibrate` instead, with
        the thresholds chosen on it, so each validation image passes the network once (Lightning's sanity check,
        which is not calibrated, is scored here)."""
        if metrics is self.val_metrics and not self.trainer.sanity_checking:
            return
        metrics.update(self(batch["inputs"]), batch["target"], batch["mask"])

    def validation_outputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        score, amap = self.raw_outputs(batch["inputs"])
        return {"score": score, "map": amap, "target": batch["target"], "mask": batch["mask"] > 0.5}  # masks kept as booleans

    def calibrate(self, outputs: dict[str, torch.Tensor]) -> None:
        """Choose image and pixel thresholds and min/max normalisation statistics on the validation outputs, then
        score them."""
        score, amap, target, mask = outputs["score"].double(), outputs["map"], outputs["target"], outputs["mask"]
        rule, fpr = self.hparams.threshold, self.hparams.fpr
        step = max(1, amap.numel() // MAX_CALIBRATION_PIXELS)
        pixels, pixel_labels = amap.flatten()[::step].double().numpy(), mask.flatten()[::step].numpy()
        image = choose_threshold(score.numpy(), target.numpy(), rule, fpr, key="model.threshold")
        pixel = choose_threshold(pixels, pixel_labels, rule, fpr, key="model.threshold")
        self.image_threshold.fill_(image.value)
        self.pixel_threshold.fill_(pixel.value)
        self.image_min.fill_(float(score.min()))
        self.image_max.fill_(float(score.max()))
        self.pixel_min.fill_(float(amap.min()))
        self.pixel_max.fill_(float(amap.max()))
        self.threshold_rules = {"image": image.rule, "pixel": pixel.rule}
        device = self.image_threshold.device
        self.val_metrics.update(self.decide(outputs["score"].to(device), outputs["map"].to(device)), target.to(device), mask.to(device))

    def decisions(self) -> dict[str, Any]:
        return {"image_threshold": float(self.image_threshold), "image_threshold_rule": self.threshold_rules["image"],
                "pixel_threshold": float(self.pixel_threshold), "pixel_threshold_rule": self.threshold_rules["pixel"]}

    # --- prediction: one score and flag per image ------------------------------------------------
    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, list]:
        """The normalised image score and the anomaly flag of each image of a batch, as Python lists: a run keeps
        these for every image, so no maps, and no small tensor per batch (thousands of them, kept between the
        freed batches, fragment the heap: +12 KB of resident memory per image at 64 px, measured)."""
        score, _, flag, _ = self(batch["inputs"])
        return {"score": score.float().tolist(), "is_anomalous": (flag > 0.5).tolist()}

    # --- checkpoints: the rule texts travel with the thresholds --------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["threshold_rules"] = dict(self.threshold_rules)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.threshold_rules = dict(checkpoint["threshold_rules"])


def forward_outputs(module: AnomalyDetector, images: torch.Tensor, batch_size: int = 64) -> Outputs:
    """``module``'s forward outputs (score, map, flags) for ``images``, in eval and inference mode on the module's
    device, ``batch_size`` images at a time, on the CPU."""
    device = next((p.device for p in module.parameters()), module.image_threshold.device)
    module.eval()
    parts = []
    with torch.inference_mode():
        for chunk in torch.as_tensor(images).split(batch_size):
            parts.append(tuple(o.cpu() for o in module(chunk.to(device))))
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def predict_outputs(module: AnomalyDetector, loader: Sequence[Batch]) -> Outputs:
    """Concatenated forward outputs of ``module`` over ``loader`` (eval mode, no grad); holds every map, so for
    small sets only (tests, benchmarks)."""
    parts = [forward_outputs(module, batch["inputs"], len(batch["inputs"])) for batch in loader]
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]
