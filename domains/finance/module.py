"""The Lightning module: preprocessing, network, score and alert flag in one ``forward``.

``forward(numeric, categorical)`` takes raw numeric features (NaN allowed) and categorical codes and
returns a (batch, 2) tensor: column 0 the fraud score in [0, 1], column 1 the alert flag (score >=
the threshold chosen on validation). Standardisation statistics and the threshold are buffers, so
they travel with the checkpoint and the ONNX export.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection

from sectorkit.core.module import SectorModule, plain_container
from sectorkit.core.network import MemberEnsemble, build_network, network_class
from sectorkit.core.thresholds import choose_threshold
from sectorkit.domains.finance.losses import classification_loss
from sectorkit.domains.finance.metrics import build_metrics
from sectorkit.domains.finance.models.base import fraud_network

Batch = dict[str, torch.Tensor]


class FraudModule(SectorModule):
    """Fraud scorer around the network ``net`` names: supervised (logits, e.g. ``EmbeddingMLP``) or unsupervised
    (reconstruction errors, ``TabularAutoencoder``), as the network class declares."""

    export_outputs = ("score_and_alert",)  # (batch, 2): the fraud score and the alert flag

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        feature_mean: list[float],
        feature_std: list[float],
        net: dict[str, Any],
        log_features: list[bool] | None = None,
        bin_edges: list[list[float]] | None = None,
        ensemble: int = 1,
        loss: str = "bce",
        pos_weight: float | str | None = None,
        class_ratio: float = 1.0,
        focal_gamma: float = 2.0,
        focal_alpha: float | None = 0.25,
        threshold_policy: str = "f1",
        cost_missed_fraud: float = 100.0,
        cost_alert: float = 1.0,
        top_k: int = 100,
        fpr: float = 0.01,
        with_cards: bool = True,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        self.top_k, self.fpr, self.with_cards = top_k, fpr, with_cards
        # plain containers only: checkpoints are read back with torch.load(weights_only=True)
        net, optimizer, scheduler, cardinalities = (plain_container(v) for v in (net, optimizer, scheduler, cardinalities))
        feature_mean, feature_std, log_features, bin_edges = (plain_container(v) for v in (feature_mean, feature_std, log_features, bin_edges))
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        # test metrics that cannot be computed (a test window without fraud) are NaN, not torchmetrics' 0
        self.test_metrics = build_metrics(top_k, fpr, with_cards, undefined_as_nan=True).clone(prefix="test/")
        self.save_hyperparameters()
        self.network = fraud_network(network_class(net))
        sizes: dict[str, Any] = {"n_numeric": n_numeric, "cardinalities": list(cardinalities)}
        if self.network.uses_bin_edges:
            sizes["bin_edges"] = bin_edges
        # ensemble > 1: several networks trained side by side, scores averaged (one checkpoint, one ONNX graph)
        if int(ensemble) == 1:
            self.net = build_network(net, **sizes)
        else:
            self.net = MemberEnsemble(lambda: build_network(net, **sizes), int(ensemble))
        self.register_buffer("feature_mean", torch.tensor(feature_mean, dtype=torch.float32).reshape(-1))
        self.register_buffer("feature_std", torch.tensor(feature_std, dtype=torch.float32).reshape(-1).clamp_min(1e-6))
        self.register_buffer("log_mask", torch.tensor(log_features or [False] * n_numeric, dtype=torch.bool).reshape(-1))
        self.register_buffer("threshold", torch.tensor(0.5))
        self.register_buffer("error_scale", torch.tensor(1.0))
        self.threshold_rule = "default 0.5 (not chosen on validation)"
        if pos_weight == "auto":
            pos_weight = class_ratio
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    # --- inference path ---------------------------------------------------------------------
    def standardise(self, numeric: torch.Tensor) -> torch.Tensor:
        """Signed log1p on flagged columns, then (x - mean) / std; NaN -> 0 (the training mean)."""
        x = torch.where(self.log_mask, torch.sign(numeric) * torch.log1p(numeric.abs()), numeric)
        x = (x - self.feature_mean) / self.feature_std
        return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def raw_score(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Logit (supervised) or reconstruction error (unsupervised), one row per ensemble member: (members, batch)."""
        raw = self.net(self.standardise(numeric), categorical)
        if isinstance(self.net, MemberEnsemble) and self.network.stacked_members:  # (ensemble, members, batch)
            return raw.flatten(0, 1)
        return raw if isinstance(self.net, MemberEnsemble) or self.network.stacked_members else raw.unsqueeze(0)

    def score(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Fraud score in [0, 1] (the mean over ensemble members)."""
        raw = self.raw_score(numeric, categorical)
        if not self.network.supervised:
            return (1.0 - torch.exp(-raw / self.error_scale)).mean(0)
        return torch.sigmoid(raw).mean(0)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        score = self.score(numeric, categorical)
        return torch.stack([score, (score >= self.threshold).to(score.dtype)], dim=1)

    def batch_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return batch["numeric"], batch["categorical"]

    # --- training ---------------------------------------------------------------------------
    def build_metrics(self) -> MetricCollection:
        return build_metrics(self.top_k, self.fpr, self.with_cards)

    def prepare_fit(self, state: dict[str, Any]) -> None:
        """A network fitted in closed form (``memory_bank``, e.g. the logistic regression) fits here, from the data
        module's ``arrays`` (train and valid splits)."""
        if self.network.memory_bank and "arrays" in state:
            for net in self.net.members if isinstance(self.net, MemberEnsemble) else [self.net]:
                net.fit(state["arrays"])

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        return None if self.network.memory_bank else super().training_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.network.memory_bank:
            self.trainer.should_stop = True  # fitted before training: one pass chooses the threshold on validation

    def training_loss(self, batch: Batch) -> torch.Tensor:
        if not self.network.supervised:
            legit = batch["target"] == 0
            error = self.raw_score(batch["numeric"][legit], batch["categorical"][legit]).mean(0)
            with torch.no_grad():  # running mean of legitimate errors: the score's scale
                self.error_scale.mul_(0.99).add_(0.01 * error.detach().mean().clamp_min(1e-6))
            return error.mean()
        logits = self.raw_score(batch["numeric"], batch["categorical"])  # (members, batch): each member's mean loss, averaged
        hp = self.hparams
        return classification_loss(logits, batch["target"].expand_as(logits), hp.loss, self.pos_weight, hp.focal_gamma, hp.focal_alpha)

    def update_metrics(self, metrics: MetricCollection, batch: Batch) -> None:
        scores = self.score(*self.batch_inputs(batch))
        target = batch["target"].long()
        for name, metric in metrics.items(keep_base=True):
            if name.endswith(f"cp_at_{self.top_k}"):
                metric.update(scores, target, batch["card"], batch["day"])
            else:
                metric.update(scores, target)

    # --- alert threshold --------------------------------------------------------------------
    def validation_outputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"score": self.score(*self.batch_inputs(batch)), "target": batch["target"]}

    def calibrate(self, outputs: dict[str, torch.Tensor]) -> None:
        """The alert threshold chosen on the validation scores by ``threshold_policy`` (``fpr``: the quantile of the
        legitimate scores that flags ``fpr`` of them, also the fallback when validation holds no fraud)."""
        hp = self.hparams
        chosen = choose_threshold(outputs["score"].numpy(), outputs["target"].numpy(), rule=hp.threshold_policy, fpr=hp.fpr,
                                  cost_missed=hp.cost_missed_fraud, cost_alert=hp.cost_alert, key="model.threshold_policy")
        value = chosen.value
        self.threshold.fill_(value)
        self.threshold_rule = chosen.rule
        self.log("val/threshold", value)

    def decisions(self) -> dict[str, Any]:
        return {"alert_threshold": float(self.threshold), "threshold_rule": self.threshold_rule}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["threshold_rule"] = self.threshold_rule

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.threshold_rule = checkpoint["threshold_rule"]
