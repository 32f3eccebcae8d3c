"""The retail LightningModule: one recommendation network, on-device negative sampling, full-ranking metrics."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection

from sectorkit.core.errors import ConfigError
from sectorkit.core.module import SectorModule, plain_container
from sectorkit.domains.retail.metrics import RankingMetrics, dense_targets, mask_scores
from sectorkit.domains.retail.models import NETWORKS




class NegativeSampler:
    """Uniform negatives on the model's device, resampling (a few rounds) those the user has interacted with."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_items: int) -> None:
        self.n_items = n_items
        self.keys = torch.sort(users * n_items + items).values

    def __call__(self, users: torch.Tensor, shape: tuple[int, ...], rounds: int = 8) -> torch.Tensor:
        if self.keys.device != users.device:
            self.keys = self.keys.to(users.device)
        negatives = torch.randint(self.n_items, shape, device=users.device)
        owner = users.reshape(users.shape + (1,) * (len(shape) - users.ndim)).expand(shape)
        for _ in range(rounds):
            keys = owner * self.n_items + negatives
            pos = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
            collide = self.keys[pos] == keys
            if not collide.any():
                break
            negatives = torch.where(collide, torch.randint_like(negatives, self.n_items), negatives)
        return negatives


class RecommenderModule(SectorModule):
    """Full-ranking recommender; ``network`` is one of bpr, lightgcn, neumf, multvae, sasrec (``network_kwargs`` its settings)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_train: int,
        network: str = "bpr",
        network_kwargs: dict[str, Any] | None = None,
        n_negatives: int = 1,
        ks: list[int] = (5, 10, 20),
        top_k: int = 10,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        # plain containers so checkpoints load with weights_only=True (hparams are read from these locals)
        network_kwargs, optimizer, scheduler, ks = (plain_container(x) for x in (network_kwargs, optimizer, scheduler, ks))
        if network not in NETWORKS:
            raise ConfigError(f"model.network={network!r}; expected one of {', '.join(NETWORKS)}")
        self.n_users, self.n_items = n_users, n_items
        self.ks = [int(k) for k in ks if int(k) <= n_items]
        self.top_k = min(top_k, n_items)
        optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        self.net = NETWORKS[network](n_users=n_users, n_items=n_items, **(network_kwargs or {}))
        self.kind = self.net.kind
        self.n_negatives = n_negatives
        self.register_buffer("train_users", torch.zeros(n_train, dtype=torch.long))
        self.register_buffer("train_items", torch.zeros(n_train, dtype=torch.long))
        self.register_buffer("popularity", torch.zeros(n_items))
        self._sampler: NegativeSampler | None = None

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"ranking": RankingMetrics(self.ks, self.n_items)})

    # --- training data kept with the model -----------------------------------------------------
    def set_training_data(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Store the training interactions (negatives exclude them; LightGCN propagates over them, Mult-VAE encodes them)."""
        self.train_users.copy_(users)
        self.train_items.copy_(items)
        self.popularity.copy_(torch.bincount(items, minlength=self.n_items).float() / max(self.n_users, 1))
        self._prepare()

    def _prepare(self) -> None:
        self._sampler = NegativeSampler(self.train_users, self.train_items, self.n_items)
        if getattr(self.net, "needs_graph", False):
            self.net.set_graph(self.train_users, self.train_items)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        self.train_users = state["train_users"].clone()
        self.train_items = state["train_items"].clone()
        self._prepare()

    def sampler(self) -> NegativeSampler:
        if self._sampler is None:
            self._prepare()
        return self._sampler  # type: ignore[return-value]

    # --- training ------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "sequence":
            negatives = None
            if getattr(self.net, "loss_type", "ce") == "bce":
                negatives = self.sampler()(batch["users"], tuple(batch["targets"].shape))
            return self.net.loss(batch["history"], batch["targets"], negatives)
        users = batch["users"]
        if self.kind == "autoencoder":
            return self.net.loss(users)  # user batches, or the users of pair batches with repeats (RecBole's MultiVAE)
        if "items" not in batch:
            raise ConfigError(f"model.network={self.hparams.network!r} trains on (user, item) pairs; set data.training=pairs (users is for multvae)")
        negatives = self.sampler()(users, (len(users), self.n_negatives))
        return self.net.loss(users, batch["items"], negatives)

    # --- inference -----------------------------------------------------------------------------
    def forward(self, users: torch.Tensor, history: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
        """Scores over the catalogue with ``exclude`` items at -inf; unknown users (-1, or no history for
        sequence models) get log-popularity scores (the popularity fallback)."""
        fallback = self.fallback_mask(users, history)
        scores = self.net.score_all(users.clamp(min=0), history)
        popular = torch.log(self.popularity + 1e-9).expand_as(scores)
        scores = torch.where(fallback[:, None], popular, scores)
        return mask_scores(scores, exclude)

    def fallback_mask(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.kind == "sequence":
            return (history == self.n_items).all(1)
        return users < 0

    def batch_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return batch["users"], batch["history"], batch["exclude"]

    def export_dynamic_axes(self, inputs: tuple[torch.Tensor, ...]) -> list[dict[int, str]]:
        """Users vary in number, histories and excluded-item lists in length."""
        return [{0: "batch"}, {0: "batch", 1: "history"}, {0: "batch", 1: "excluded"}]

    def update_metrics(self, metrics: MetricCollection, batch: dict[str, torch.Tensor]) -> None:
        scores = self(*self.batch_inputs(batch))
        topk = torch.topk(scores, max(self.ks), dim=1).indices
        metrics.update(topk, dense_targets(batch["targets"], self.n_items), self.popularity)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        scores = self(*self.batch_inputs(batch))
        top = torch.topk(scores, self.top_k, dim=1)
        return {"items": top.indices.cpu(), "scores": top.values.cpu(), "fallback": self.fallback_mask(batch["users"], batch["history"]).cpu()}

    def setup(self, stage: str) -> None:
        """At fit time take the training interactions from the datamodule (they then travel in the checkpoint)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "training_tensors"):
            tensors = datamodule.training_tensors()
            if len(tensors["users"]) == len(self.train_users):
                self.set_training_data(tensors["users"].to(self.device), tensors["items"].to(self.device))
        super().setup(stage)
