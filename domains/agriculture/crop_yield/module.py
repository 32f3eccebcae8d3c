"""The crop-yield LightningModule: one yield network per fold of the evaluation protocol, each between its fold's
yield standardisation statistics, so ``forward`` maps raw features and the region's trend to a yield in the data's
units, predicted by the fold that held the row out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import MetricCollection

from sectorkit.core.errors import ConfigError
from sectorkit.core.module import SectorModule, plain_container
from sectorkit.core.network import MemberEnsemble, build_network
from sectorkit.domains.agriculture.metrics import NRMSE

Batch = dict[str, torch.Tensor]


class YieldRegressor(SectorModule):
    """Season yield from weather aggregates + trend features with the network ``net`` names (e.g.
    :class:`~sectorkit.domains.agriculture.models.yield_mlp.YieldMLP`); outputs yield in the data's units.

    ``folds``: one network per fold of the data's protocol (``data.protocol``; one for ``last_years``), trained
    side by side in one fit, each on its own fold's training rows (``batch["mask"]``) and validated on its own
    validation years, so one early-stopping epoch and one checkpoint serve every fold. ``forward`` takes each
    row's inputs for every fold and the fold that tests it and returns that fold's prediction: every test year
    is predicted by the model that did not see it. A row of fold -1 (a season no fold saw, e.g. next year's in
    ``predict``) gets the mean of every fold's prediction. ``y_mean``/``y_std``: one value per fold.
    """

    export_outputs = ("yield",)  # (batch,) in the yield's units

    def __init__(
        self,
        net: dict[str, Any],
        n_features: int = 1,
        y_mean: float | Sequence[float] = 0.0,
        y_std: float | Sequence[float] = 1.0,
        folds: int = 1,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        net, optimizer, scheduler = plain_container(net), plain_container(optimizer), plain_container(scheduler)
        y_mean, y_std = plain_container(y_mean), plain_container(y_std)
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        self.net = MemberEnsemble(lambda: build_network(net, n_features=int(n_features)), int(folds))
        mean = torch.as_tensor(y_mean, dtype=torch.float32).reshape(-1).expand(int(folds)).clone()
        std = torch.as_tensor(y_std, dtype=torch.float32).reshape(-1).expand(int(folds)).clone()
        self.register_buffer("y_mean", mean)
        self.register_buffer("y_std", std)
        self.register_buffer("fold_ids", torch.arange(int(folds)))
        # a network fitted in closed form (models/yield_classical.py): one epoch, no optimizer, no gradient steps
        self.gradient_free = not any(p.requires_grad for p in self.parameters())

    def prepare_fit(self, state: dict[str, Any]) -> None:
        """Networks fitted in closed form (``fit``) fit each fold on its own training rows and choose their
        settings on its own validation rows (``datamodule.training_state()``), in the fold's standardised units."""
        if "train" not in state:
            return
        for k, member in enumerate(self.net.members):
            if not hasattr(member, "fit"):
                continue
            mean, std = float(self.y_mean[k]), float(self.y_std[k])
            rows = []
            for split in (state["train"], state["val"]):
                used = split["mask"][:, k]
                rows.append((torch.as_tensor(split["features"][used, k]), torch.as_tensor((split["trend"][used, k] - mean) / std),
                             torch.as_tensor((split["target"][used] - mean) / std)))
            member.fit(*rows)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        return None if self.gradient_free else super().training_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.gradient_free:
            self.trainer.should_stop = True  # fitted before training: one validation pass scores it

    @property
    def n_folds(self) -> int:
        return len(self.net.members)

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"yield": NRMSE()})

    def batch_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return batch["features"], batch["trend"], batch["fold"]

    def fold_outputs(self, features: torch.Tensor, trend: torch.Tensor) -> torch.Tensor:
        """Every fold's network output ``(B, K)`` in standardised yield units; ``features (B, K, F)``, ``trend
        (B, K)`` in data units."""
        if not torch.jit.is_tracing() and features.shape[1] != self.n_folds:  # a Python check, left out of exports
            raise ConfigError(
                f"the data has {features.shape[1]} fold(s) and the model {self.n_folds}; use the data.protocol the "
                "model was trained with"
            )
        z = (trend - self.y_mean) / self.y_std
        return torch.stack([member(features[:, k], z[:, k]) for k, member in enumerate(self.net.members)], dim=1)

    def forward(self, features: torch.Tensor, trend: torch.Tensor, fold: torch.Tensor) -> torch.Tensor:
        """Yield in data units from the fold ``fold`` names (the mean over folds where it is -1)."""
        pred = self.fold_outputs(features, trend) * self.y_std + self.y_mean
        chosen = (fold.unsqueeze(1) == self.fold_ids).to(pred.dtype)
        unseen = (fold < 0).to(pred.dtype).unsqueeze(1) / self.n_folds
        return (pred * (chosen + unseen)).sum(dim=1)

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """Mean over folds of each fold's MSE on its own training rows of the batch (standardised units)."""
        z = self.fold_outputs(batch["features"], batch["trend"])
        target = (batch["target"].unsqueeze(1) - self.y_mean) / self.y_std
        mask = batch["mask"].to(z.dtype)
        per_fold = ((z - target) ** 2 * mask).sum(0) / mask.sum(0).clamp_min(1)
        return per_fold.mean()

    def update_metrics(self, metrics: MetricCollection, batch: Batch) -> None:
        """Validation scores each fold on its own validation rows (pooled over folds); test scores ``forward``,
        each row predicted by the fold that held it out."""
        if metrics is self.val_metrics:
            pred = self.fold_outputs(batch["features"], batch["trend"]) * self.y_std + self.y_mean
            mask = batch["mask"].bool()
            metrics.update(pred[mask], batch["target"].unsqueeze(1).expand_as(pred)[mask])
        else:
            metrics.update(self(*self.batch_inputs(batch)), batch["target"])
