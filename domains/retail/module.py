"""The retail LightningModule: one recommendation network, on-device negative sampling, full-ranking metrics."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection

from sectorkit.core.module import SectorModule, plain_container
from sectorkit.core.network import build_network, network_class
from sectorkit.domains.retail.metrics import RankingMetrics, mask_scores
from sectorkit.domains.retail.models.base import NEGATIVE_SAMPLING_LOSSES, recommender_network
from sectorkit.domains.retail.ranking import BlockScorer, ItemSets, masked_topk


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
    """Full-ranking recommender around the network of the ``net`` config (a ``RecommenderNetwork``).

    The training interactions arrive once through :meth:`prepare_fit` and are kept as buffers (so negatives,
    graphs and the popularity fallback work the same after loading a checkpoint). The network's declared
    ``input_type`` and ``loss_type`` decide how a batch becomes a loss and whether negatives are sampled.
    """

    export_outputs = ("scores",)  # (batch, n_items): every item's score, known items at -inf

    def __init__(
        self,
        net: dict[str, Any],
        n_users: int,
        n_items: int,
        n_train: int,
        max_seq_len: int = 50,
        n_negatives: int = 1,
        ks: list[int] = (5, 10, 20),
        top_k: int = 10,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        channels_last: bool = False,
        item_text_dim: int = 0,
        eval_chunk: int = 1024,
    ) -> None:
        # plain containers so checkpoints load with weights_only=True (hparams are read from these locals)
        net, optimizer, scheduler, ks = (plain_container(x) for x in (net, optimizer, scheduler, ks))
        network = recommender_network(network_class(net))
        self.n_users, self.n_items = n_users, n_items
        self.ks = [int(k) for k in ks if int(k) <= n_items]
        self.top_k = min(top_k, n_items)
        optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
        super().__init__(optimizer=optimizer, scheduler=scheduler, compile=compile, channels_last=channels_last)
        self.save_hyperparameters()
        sizes = {"n_users": n_users, "n_items": n_items, **({"max_seq_len": max_seq_len} if network.input_type == "sequence" else {})}
        if network.uses_item_text:  # the item text vectors themselves arrive in prepare_fit and live in the net's buffers
            sizes["item_text_dim"] = item_text_dim
        self.net = build_network(net, **sizes)
        self.n_negatives = n_negatives
        self.eval_chunk = max(int(eval_chunk), 1)  # users scored at once in validation/test (x catalogue floats)
        self.register_buffer("train_users", torch.zeros(n_train, dtype=torch.long))
        self.register_buffer("train_items", torch.zeros(n_train, dtype=torch.long))
        self.register_buffer("popularity", torch.zeros(n_items))
        self._sampler: NegativeSampler | None = None

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"ranking": RankingMetrics(self.ks, self.n_items)})

    # --- training data kept with the model -----------------------------------------------------
    def prepare_fit(self, state: dict[str, Any]) -> None:
        """Store the training interactions ``state['users']``, ``state['items']`` (from ``training_state()``):
        negatives exclude them, graph networks propagate over them, the popularity fallback counts them."""
        users, items = state["users"], state["items"]
        self.train_users.copy_(users)
        self.train_items.copy_(items)
        self.popularity.copy_(torch.bincount(items, minlength=self.n_items).float() / max(self.n_users, 1))
        if self.net.uses_item_text:
            self.net.set_item_text(state["item_text"])
        self._index_training_data(self.train_users, self.train_items)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild the sampler and the graph from the checkpoint's training interactions (runs before, or right
        after, the buffers are loaded, depending on the caller)."""
        state = checkpoint["state_dict"]
        self._index_training_data(state["train_users"].to(self.device), state["train_items"].to(self.device))

    def _index_training_data(self, users: torch.Tensor, items: torch.Tensor) -> None:
        self._sampler = NegativeSampler(users, items, self.n_items)
        if self.net.needs_graph:
            self.net.set_graph(users, items)

    def sample_negatives(self, users: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Uniform items the users have not interacted with in training, of ``shape``."""
        if self._sampler is None:
            raise RuntimeError("RecommenderModule.prepare_fit(datamodule.training_state()) must be called before training")
        return self._sampler(users, shape)

    # --- training ------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users, input_type = batch["users"], self.net.input_type
        negatives_needed = self.net.loss_type in NEGATIVE_SAMPLING_LOSSES
        if input_type == "sequence":
            negatives = self.sample_negatives(users, tuple(batch["targets"].shape)) if negatives_needed else None
            return self.net.loss(batch["history"], batch["targets"], negatives)
        if input_type == "user_vector":
            return self.net.loss(users)
        return self.net.loss(users, batch["items"], self.sample_negatives(users, (len(users), self.n_negatives)))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        if self.net.memory_bank:  # fitted in closed form in prepare_fit (EASE): no loss, no optimizer step
            return None
        return super().training_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.net.memory_bank:
            self.trainer.should_stop = True  # nothing changes after the first epoch

    # --- inference -----------------------------------------------------------------------------
    def forward(self, users: torch.Tensor, history: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
        """Scores over the catalogue with ``exclude`` items at -inf; unknown users (-1, or no history for
        sequence models) get log-popularity scores (the popularity fallback). ``history`` and ``exclude`` both
        hold the user's known history (the data module's ``known_history``: at test, train + validation items);
        the network reads as much of ``history`` as its ``history_input`` declares."""
        fallback = self.fallback_mask(users, history)
        scores = self.net.score_all(users.clamp(min=0), history)
        popular = torch.log(self.popularity + 1e-9).expand_as(scores)
        scores = torch.where(fallback[:, None], popular, scores)
        return mask_scores(scores, exclude)

    def fallback_mask(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Which users get the popularity fallback: unknown ones (sequence models: those without history)."""
        if self.net.input_type == "sequence":
            return (history == self.n_items).all(1)
        return users < 0

    def batch_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return batch["users"], batch["history"], batch["exclude"]

    def export_dynamic_axes(self, inputs: tuple[torch.Tensor, ...]) -> list[dict[int, str]]:
        """Users vary in number, histories and excluded-item lists in length."""
        return [{0: "batch"}, {0: "batch", 1: "history"}, {0: "batch", 1: "excluded"}]

    def update_metrics(self, metrics: MetricCollection, batch: dict[str, torch.Tensor]) -> None:
        """Each user's top-``max(ks)`` through :func:`~sectorkit.domains.retail.ranking.masked_topk`, ``eval_chunk``
        users at a time (at most ``eval_chunk`` x catalogue scores exist at once, masked in place); hits are looked
        up in the batch's target keys, so no [batch, catalogue] target matrix is built. The same top-K lists and
        metrics as ``torch.topk`` over :meth:`forward`'s scores."""
        users, history, exclude = self.batch_inputs(batch)
        known = ItemSets.from_padded(exclude, self.n_items)
        targets = ItemSets.from_padded(batch["targets"], self.n_items)
        scorer = self.rows_scorer(users, history)
        for rows in torch.arange(len(users), device=users.device).split(self.eval_chunk):
            _, top = masked_topk(scorer, rows, max(self.ks), self.n_items, known)
            metrics.update(top, None, self.popularity, hits=targets.contains(rows, top), n_true=targets.counts(rows))

    def rows_scorer(self, users: torch.Tensor, history: torch.Tensor) -> BlockScorer:
        """Unmasked scores of the batch rows ``rows`` (the popularity fallback included, as in :meth:`forward`)."""

        def score(rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
            scores = self.net.score_all(users[rows].clamp(min=0), history[rows])
            if scores._base is not None:  # a view of the network's own tensors: copy it before it is masked in place
                scores = scores.clone()
            fallback = self.fallback_mask(users[rows], history[rows])
            if fallback.any():
                scores[fallback] = torch.log(self.popularity + 1e-9).to(scores.dtype)
            return scores[:, start:stop]

        return score

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        scores = self(*self.batch_inputs(batch))
        top = torch.topk(scores, self.top_k, dim=1)
        return {"items": top.indices.cpu(), "scores": top.values.cpu(), "fallback": self.fallback_mask(batch["users"], batch["history"]).cpu()}
