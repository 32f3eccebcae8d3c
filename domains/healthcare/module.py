"""The Lightning module: an anomaly model + normalisation statistics and thresholds stored as buffers.

``forward(images)`` is the whole inference path shared by predict and ONNX export: it returns
``(score, anomaly_map, is_anomalous, pixel_is_anomalous)`` where score and map are normalised to 0..1 with
the validation-chosen thresholds at 0.5, so an exported model makes exactly the decisions ``predict`` makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import MetricCollection

from sectorkit.core.errors import ConfigError
from sectorkit.core.module import SectorModule, plain_container
from sectorkit.domains.healthcare.metrics import anomaly_metrics, choose_threshold, normalise
from sectorkit.domains.healthcare.models.common import image_score

Batch = dict[str, torch.Tensor]
NETWORKS = ("autoencoder", "vae", "patchcore", "padim", "classifier")


def build_network(network: str, spatial_dims: int, in_channels: int, image_size: int, network_kwargs: dict[str, Any]) -> torch.nn.Module:
    """The ``nn.Module`` named by ``model.network``."""
    if network == "autoencoder":
        from sectorkit.domains.healthcare.models.autoencoder import AutoEncoderDetector

        return AutoEncoderDetector(spatial_dims, in_channels, **network_kwargs)
    if network == "vae":
        from sectorkit.domains.healthcare.models.vae import VAEDetector

        return VAEDetector(spatial_dims, in_channels, image_size, **network_kwargs)
    if network in ("patchcore", "padim"):
        from sectorkit.domains.healthcare.models.padim import PaDiMDetector
        from sectorkit.domains.healthcare.models.patchcore import PatchCoreDetector

        cls = PatchCoreDetector if network == "patchcore" else PaDiMDetector
        return cls(spatial_dims, in_channels, image_size, **network_kwargs)
    if network == "classifier":
        from sectorkit.domains.healthcare.models.classifier import ClassifierDetector

        return ClassifierDetector(spatial_dims, in_channels, **network_kwargs)
    raise ConfigError(f"model.network={network!r}; expected one of {', '.join(NETWORKS)}")


class AnomalyDetector(SectorModule):
    """Trains on normal images; thresholds and normalisation come from the validation split.

    ``threshold``: ``f1`` (adaptive, maximises F1 on validation) or ``fpr`` (normal-image false-positive rate
    ``fpr``). Pixel thresholds follow the same rule on validation masks (or normal pixels when no masks).
    """

    def __init__(
        self,
        network: str = "autoencoder",
        network_kwargs: dict[str, Any] | None = None,
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
        if threshold not in ("f1", "fpr"):
            raise ConfigError(f"model.threshold={threshold!r}; expected f1 or fpr")
        # plain containers only: checkpoints are read back with torch.load(weights_only=True)
        network_kwargs, optimizer, scheduler = (plain_container(v) for v in (network_kwargs, optimizer, scheduler))
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        self.network = build_network(network, spatial_dims, in_channels, image_size, dict(network_kwargs or {}))
        self.trainable = any(p.requires_grad for p in self.network.parameters()) and not getattr(self.network, "memory_based", False)
        self.automatic_optimization = self.trainable
        if not self.trainable:
            # memory-based models take no gradient steps; a no-op optimizer step per batch keeps Lightning's
            # global_step moving, which ModelCheckpoint needs to save the fitted memory bank
            self.step_anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)
        for name in ("image_min", "image_max", "image_threshold", "pixel_min", "pixel_max", "pixel_threshold"):
            self.register_buffer(name, torch.tensor(0.0 if "min" in name else 1.0 if "max" in name else 0.5))
        self._val_raw: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def build_metrics(self) -> MetricCollection:
        return anomaly_metrics()

    def batch_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return (batch["inputs"],)

    # --- inference -----------------------------------------------------------------------------
    def raw_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (un-normalised) image score (B,) and anomaly map (B, 1, *S)."""
        amap = self.network(images)
        return image_score(amap, self.hparams.top_fraction), amap

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        score, amap = self.raw_outputs(images)
        score_n = normalise(score, self.image_min, self.image_max, self.image_threshold)
        map_n = normalise(amap, self.pixel_min, self.pixel_max, self.pixel_threshold)
        return score_n, map_n, (score >= self.image_threshold).float(), (amap >= self.pixel_threshold).float()

    # --- training ------------------------------------------------------------------------------
    def training_loss(self, batch: Batch) -> torch.Tensor:
        if getattr(self.network, "supervised", False):
            return self.network.loss(batch["inputs"], batch["target"])
        return self.network.loss(batch["inputs"])

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.trainable:
            return super().training_step(batch, batch_idx)
        self.network.collect(batch["inputs"])  # memory-based models: gather embeddings, fit at epoch end
        self.optimizers().step()
        return torch.zeros((), device=self.device)

    def on_validation_epoch_start(self) -> None:
        if not self.trainable:  # validation runs before on_train_epoch_end: fit the memory bank here
            self.network.fit_memory()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if not self.trainable:
            self.network.fit_memory()
            if self._trainer is not None:  # one pass over the normal images fills the memory bank: stop
                self.trainer.should_stop = True

    def on_test_epoch_start(self) -> None:
        if not self.trainable:
            self.network.fit_memory()

    @property
    def ready(self) -> bool:
        """False for a memory-based model that has not seen training images yet (Lightning's sanity check)."""
        return self.trainable or bool(self.network.fitted)

    def configure_optimizers(self) -> Any:
        return super().configure_optimizers() if self.trainable else torch.optim.SGD([self.step_anchor], lr=0.0)

    # --- validation: thresholds and normalisation ---------------------------------------------
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if not self.ready:
            return
        score, amap = self.raw_outputs(batch["inputs"])
        self._val_raw.append((score.detach().cpu(), amap.detach().cpu(), batch["target"].cpu(), batch["mask"].cpu()))
        self.val_metrics.update((score, amap, torch.zeros_like(score), torch.zeros_like(amap)), batch["target"], batch["mask"])

    def on_validation_epoch_end(self) -> None:
        if self._val_raw:
            self.calibrate(*(torch.cat(parts) for parts in zip(*self._val_raw)))
            self._val_raw.clear()
        if not self.ready:
            return
        values = {k: v.float() for k, v in self.val_metrics.compute().items() if k.split("/")[-1] not in ("image_f1", "dice")}
        self.log_dict(values, prog_bar=True)
        self.val_metrics.reset()

    def calibrate(self, scores: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> None:
        """Choose image and pixel thresholds and min/max normalisation statistics on validation outputs."""
        method, fpr = self.hparams.threshold, self.hparams.fpr
        s, y = scores.double().numpy(), labels.numpy()
        flat = maps.flatten().double().numpy()
        step = max(1, len(flat) // 500_000)
        m = masks.flatten().numpy()[::step]
        self.image_threshold.fill_(choose_threshold(s, y, method, fpr))
        self.pixel_threshold.fill_(choose_threshold(flat[::step], m if m.any() else None, method, fpr))
        self.image_min.fill_(float(s.min()))
        self.image_max.fill_(float(s.max()))
        self.pixel_min.fill_(float(np.quantile(flat[::step], 0.0)))
        self.pixel_max.fill_(float(np.quantile(flat[::step], 1.0)))

    def update_metrics(self, metrics: MetricCollection, batch: Batch) -> None:
        metrics.update(self(*self.batch_inputs(batch)), batch["target"], batch["mask"])

    def on_test_epoch_end(self) -> None:
        self._log_and_reset(self.test_metrics)




def predict_outputs(module: AnomalyDetector, loader: Sequence[Batch]) -> tuple[torch.Tensor, ...]:
    """Concatenated forward outputs of ``module`` over ``loader`` (eval mode, no grad)."""
    return tuple(torch.cat(parts) for parts in zip(*module.predict_loader(loader)))
