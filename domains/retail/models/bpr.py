"""BPR-MF (Rendle et al., 2009): user and item embeddings, score = dot product, pairwise BPR loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sectorkit.domains.retail.models.base import RecommenderNetwork


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(pos - neg), averaged (RecBole's BPRLoss without its 1e-10 gamma, via logsigmoid)."""
    return -F.logsigmoid(positive - negative).mean()


class BPRMF(RecommenderNetwork):
    """Matrix factorisation trained with BPR against sampled negatives."""

    input_type = "pairwise"
    loss_type = "bpr"

    def __init__(self, n_users: int, n_items: int, embedding_size: int = 64) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, embedding_size)
        self.item_embedding = nn.Embedding(n_items, embedding_size)
        nn.init.xavier_normal_(self.user_embedding.weight)
        nn.init.xavier_normal_(self.item_embedding.weight)

    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """[B] users → [B, n_items] scores."""
        return self.user_embedding(users) @ self.item_embedding.weight.T

    def loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        u = self.user_embedding(users)
        pos = (u * self.item_embedding(positives)).sum(-1)
        neg = (u[:, None, :] * self.item_embedding(negatives)).sum(-1)
        return bpr_loss(pos[:, None], neg)
