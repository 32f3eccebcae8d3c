"""Non-deep baselines scored with the same full-ranking protocol: MostPop, ItemKNN (cosine) and EASE.

Each is fitted on the training interactions and scores users from their known history
(``datamodule.known_history``: training items at validation, training + validation items at test), with no
refit; the same history is masked, for them and for the model, and is what the model's ``history`` holds.
ItemKNN and EASE need an item-item matrix, so they are meant for catalogues up to ~20k items.

For held-out (cold) items, which have no training interactions, the baselines that read item side
information (``data.items_path``): ``text`` (cosine between the mean text vector of the user's known items
and each item's text vector), ``genre`` (the same with multi-hot genres), ``cold_popularity`` (the items'
popularity in the evaluated split itself: an oracle no live system has at launch, the ceiling of "recommend
what turns out popular") and ``random``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from scipy import sparse

from sectorkit.core.baselines import BaselineResult
from sectorkit.core.errors import ConfigError
from sectorkit.domains.retail.metrics import RankingMetrics, dense_targets, mask_scores
from sectorkit.domains.retail.models.ease import ease_weights  # the one closed form, shared with the network

log = logging.getLogger(__name__)


def interaction_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sparse.csr_matrix:
    """Binary user × item CSR matrix."""
    matrix = sparse.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0
    return matrix


class MostPop:
    """Recommend the most interacted-with training items to everyone."""

    def fit(self, matrix: sparse.csr_matrix) -> "MostPop":
        self.counts = torch.as_tensor(np.asarray(matrix.sum(0)).ravel(), dtype=torch.float32)
        return self

    def scores(self, rows: sparse.csr_matrix) -> torch.Tensor:
        """Scores for the users whose shown items are ``rows`` (one binary row per user)."""
        return self.counts.expand(rows.shape[0], -1).clone()


class ItemKNN:
    """Item-based collaborative filtering: cosine similarity (with ``shrink``), ``k`` neighbours per item."""

    def __init__(self, k: int = 100, shrink: float = 0.0) -> None:
        self.k, self.shrink = k, shrink

    def fit(self, matrix: sparse.csr_matrix) -> "ItemKNN":
        x = torch.as_tensor(matrix.T.toarray())
        norms = x.norm(dim=1)
        sim = (x @ x.T) / (norms[:, None] * norms[None, :] + self.shrink + 1e-8)
        sim.fill_diagonal_(0.0)
        k = min(self.k, sim.shape[0] - 1)
        top = torch.topk(sim, k, dim=0)  # keep each item's k most similar neighbours (column-wise, as RecBole)
        self.similarity = torch.zeros_like(sim).scatter_(0, top.indices, top.values)
        return self

    def scores(self, rows: sparse.csr_matrix) -> torch.Tensor:
        """Scores for the users whose shown items are ``rows`` (one binary row per user)."""
        return torch.as_tensor(rows.toarray()) @ self.similarity


class EASE:
    """EASE (Steck, 2019): closed-form item-item ridge regression with a zero diagonal; ``reg_weight`` = lambda.
    ``device`` (``baselines.ease.device``): where the closed form is solved (``cpu``, ``cuda``); scoring is on the CPU."""

    def __init__(self, reg_weight: float = 250.0, device: str = "cpu") -> None:
        self.reg_weight, self.device = reg_weight, device

    def fit(self, matrix: sparse.csr_matrix) -> "EASE":
        coo = matrix.tocoo()
        users, items = (torch.as_tensor(x, dtype=torch.long, device=self.device) for x in (coo.row, coo.col))
        self.weights = ease_weights(users, items, matrix.shape[0], matrix.shape[1], self.reg_weight).cpu()
        return self

    def scores(self, rows: sparse.csr_matrix) -> torch.Tensor:
        """Scores for the users whose shown items are ``rows`` (one binary row per user)."""
        return torch.as_tensor(rows.toarray()) @ self.weights


class RandomScores:
    """Uniform random scores (seeded): the chance level of a ranking."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def fit(self, matrix: sparse.csr_matrix) -> "RandomScores":
        self.n_items = matrix.shape[1]
        return self

    def scores(self, rows: sparse.csr_matrix) -> torch.Tensor:
        return torch.rand(rows.shape[0], self.n_items, generator=self.generator)


class ProfileSimilarity:
    """Content-based: a user's profile is the mean of the (L2-normalised) feature vectors of their known items;
    an item's score is the cosine between that profile and its own vector. Needs no training interactions of
    the scored item, so it ranks cold items."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = torch.nn.functional.normalize(features.float(), dim=1)

    def fit(self, matrix: sparse.csr_matrix) -> "ProfileSimilarity":
        return self

    def scores(self, rows: sparse.csr_matrix) -> torch.Tensor:
        profile = torch.nn.functional.normalize(torch.as_tensor(rows.toarray()) @ self.features, dim=1)
        return profile @ self.features.T


class SplitPopularity:
    """Item popularity counted on the evaluated split's own interactions (an oracle reference for cold items)."""

    def __init__(self, counts: torch.Tensor) -> None:
        self.counts = counts.float()

    def fit(self, matrix: sparse.csr_matrix) -> "SplitPopularity":
        return self

    def scores(self, rows: sparse.csr_matrix) -> torch.Tensor:
        return self.counts.expand(rows.shape[0], -1).clone()


BASELINES = {"mostpop": MostPop, "itemknn": ItemKNN, "ease": EASE, "random": RandomScores}
ITEM_SIDE_BASELINES = ("text", "genre", "cold_popularity")
INTERACTION_ONLY = ("mostpop", "itemknn", "ease")
COLD_ITEM_BASELINES = ("cold_popularity", "genre", "text", "random")


def build_baseline(name: str, settings: dict[str, Any], datamodule: Any, stage: str) -> Any:
    """An unfitted baseline by name; the item-side ones read the datamodule's item text/genres or the split."""
    if name == "text":
        return ProfileSimilarity(datamodule.item_side.text)
    if name == "genre":
        return ProfileSimilarity(datamodule.item_side.genres)
    if name == "cold_popularity":
        return SplitPopularity(torch.bincount(torch.as_tensor(datamodule.lists[stage].items), minlength=datamodule.n_items))
    if name not in BASELINES:
        raise ConfigError(f"baselines.names: unknown baseline {name!r}; expected some of {', '.join([*BASELINES, *ITEM_SIDE_BASELINES])}")
    return BASELINES[name](**settings)


def evaluate_scorer(model: Any, dataset: Any, seen: sparse.csr_matrix, ks: list[int], n_items: int, popularity: torch.Tensor,
                    batch_size: int = 512) -> BaselineResult:
    """Full-ranking metrics of a fitted baseline over a :class:`UserBatchDataset` (same masking as the model) and its
    top-``max(ks)`` items for each of the dataset's users (rows in dataset order)."""
    metric = RankingMetrics(ks, n_items, sync_on_compute=False)  # one process scores every user (rank 0 after a DDP run)
    top_items = []
    for start in range(0, len(dataset), batch_size):
        batch = dataset[list(range(start, min(start + batch_size, len(dataset))))]
        scores = mask_scores(model.scores(seen[batch["users"].numpy()]), batch["exclude"])
        topk = torch.topk(scores, max(metric.ks), dim=1).indices
        metric.update(topk, dense_targets(batch["targets"], n_items), popularity)
        top_items.append(topk)
    predictions = torch.cat(top_items).numpy() if top_items else np.zeros((0, max(metric.ks)), dtype=np.int64)
    return BaselineResult({k: float(v) for k, v in metric.compute().items()}, predictions)


def seen_matrix(datamodule: Any, stage: str) -> sparse.csr_matrix:
    """The binary user x item rows the baselines score ``stage`` users from: their known history."""
    lists = datamodule.known_history(stage)
    users = np.repeat(np.arange(datamodule.n_users), lists.lengths())
    return interaction_matrix(users, lists.items, datamodule.n_users, datamodule.n_items)


def evaluate_baselines(datamodule: Any, ks: list[int], names: list[str] | None = None, settings: dict[str, Any] | None = None,
                       stage: str = "test") -> dict[str, BaselineResult]:
    """Fit each baseline on the training split and evaluate it on ``stage``, scoring from the known history (at
    test: train + validation items, which are also masked): its metrics and its top-``max(ks)`` items per
    evaluated user, in the order of the model's test predictions."""
    settings = settings or {}
    seen = seen_matrix(datamodule, stage)
    train = interaction_matrix(datamodule.train_users.numpy(), datamodule.train_items.numpy(), datamodule.n_users, datamodule.n_items)
    popularity = torch.bincount(datamodule.train_items, minlength=datamodule.n_items).float() / max(datamodule.n_users, 1)
    dataset = datamodule.eval_dataset(stage)
    ks = [k for k in ks if k <= datamodule.n_items]
    return {name: evaluate_scorer(build_baseline(name, settings.get(name, {}), datamodule, stage).fit(train), dataset, seen, ks,
                                  datamodule.n_items, popularity)
            for name in names or list(INTERACTION_ONLY)}


def run_baselines(datamodule: Any, cfg: Any) -> dict[str, BaselineResult]:
    """The domain's baselines hook: ``baselines.names`` with their ``baselines.<name>`` settings at ``metrics.ks``.
    On a ``cold_items`` split, baselines that score from training interactions only (MostPop, ItemKNN, EASE:
    every held-out item scores 0) are replaced by the cold-item ones."""
    settings = OmegaConf.to_container(cfg.baselines, resolve=True) if cfg.get("baselines") else {}
    names = settings.pop("names", None)
    cold_split = getattr(datamodule, "cold_candidates", lambda stage: None)("test") is not None
    if cold_split and any(n in INTERACTION_ONLY for n in names or INTERACTION_ONLY):
        kept = [n for n in names or [] if n not in INTERACTION_ONLY]
        names = kept + [n for n in COLD_ITEM_BASELINES if n not in kept]
        log.warning("cold_items split: %s cannot score held-out items (they have no training interactions); baselines: %s",
                    ", ".join(INTERACTION_ONLY), ", ".join(names))
    return evaluate_baselines(datamodule, list(cfg.metrics.ks), names, settings)
