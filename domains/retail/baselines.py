"""Non-deep baselines scored with the same full-ranking protocol: MostPop, ItemKNN (cosine) and EASE.

ItemKNN and EASE need an item-item matrix, so they are meant for catalogues up to ~20k items.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from sectorkit.domains.retail.metrics import RankingMetrics, dense_targets, mask_scores


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

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(users), -1).clone()


class ItemKNN:
    """Item-based collaborative filtering: cosine similarity (with ``shrink``), ``k`` neighbours per item."""

    def __init__(self, k: int = 100, shrink: float = 0.0) -> None:
        self.k, self.shrink = k, shrink

    def fit(self, matrix: sparse.csr_matrix) -> "ItemKNN":
        self.matrix = matrix
        x = torch.as_tensor(matrix.T.toarray())
        norms = x.norm(dim=1)
        sim = (x @ x.T) / (norms[:, None] * norms[None, :] + self.shrink + 1e-8)
        sim.fill_diagonal_(0.0)
        k = min(self.k, sim.shape[0] - 1)
        top = torch.topk(sim, k, dim=0)  # keep each item's k most similar neighbours (column-wise, as RecBole)
        self.similarity = torch.zeros_like(sim).scatter_(0, top.indices, top.values)
        return self

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        rows = torch.as_tensor(self.matrix[users.numpy()].toarray())
        return rows @ self.similarity


class EASE:
    """EASE (Steck, 2019): closed-form item-item ridge regression with a zero diagonal; ``reg_weight`` = lambda."""

    def __init__(self, reg_weight: float = 250.0) -> None:
        self.reg_weight = reg_weight

    def fit(self, matrix: sparse.csr_matrix) -> "EASE":
        self.matrix = matrix
        gram = torch.as_tensor((matrix.T @ matrix).toarray(), dtype=torch.float64)
        gram += self.reg_weight * torch.eye(gram.shape[0], dtype=torch.float64)
        precision = torch.linalg.inv(gram)
        weights = -precision / torch.diagonal(precision)[None, :]
        weights.fill_diagonal_(0.0)
        self.weights = weights.float()
        return self

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        rows = torch.as_tensor(self.matrix[users.numpy()].toarray())
        return rows @ self.weights


BASELINES = {"mostpop": MostPop, "itemknn": ItemKNN, "ease": EASE}


def evaluate_scorer(model, dataset, ks: list[int], n_items: int, popularity: torch.Tensor, batch_size: int = 512) -> dict[str, float]:
    """Full-ranking metrics of a fitted baseline over a :class:`UserBatchDataset` (same masking as the model)."""
    metric = RankingMetrics(ks, n_items)
    for start in range(0, len(dataset), batch_size):
        batch = dataset[list(range(start, min(start + batch_size, len(dataset))))]
        scores = mask_scores(model.scores(batch["users"]), batch["exclude"])
        topk = torch.topk(scores, max(metric.ks), dim=1).indices
        metric.update(topk, dense_targets(batch["targets"], n_items), popularity)
    return {k: float(v) for k, v in metric.compute().items()}


def run_baselines(datamodule, ks: list[int], names: list[str] | None = None, settings: dict | None = None, stage: str = "test") -> dict[str, dict[str, float]]:
    """Fit each baseline on the training split and evaluate it on ``stage`` (test masks train + validation items)."""
    settings = settings or {}
    lists = datamodule.lists["train" if stage == "valid" else "train_valid"]
    users = np.repeat(np.arange(datamodule.n_users), lists.lengths())
    seen = interaction_matrix(users, lists.items, datamodule.n_users, datamodule.n_items)
    train = interaction_matrix(datamodule.train_users.numpy(), datamodule.train_items.numpy(), datamodule.n_users, datamodule.n_items)
    popularity = torch.bincount(datamodule.train_items, minlength=datamodule.n_items).float() / max(datamodule.n_users, 1)
    dataset = datamodule.eval_dataset(stage)
    ks = [k for k in ks if k <= datamodule.n_items]
    results = {}
    for name in names or list(BASELINES):
        model = BASELINES[name](**settings.get(name, {})).fit(train)
        if hasattr(model, "matrix"):
            model.matrix = seen  # score from everything the user has shown (train, + validation at test), no refit
        results[name] = evaluate_scorer(model, dataset, ks, datamodule.n_items, popularity)
    return results
