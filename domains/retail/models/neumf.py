"""NeuMF (He et al., 2017): a GMF branch and an MLP branch over user/item embeddings, fused by a linear layer.

Trained pointwise with binary cross-entropy against sampled negatives. Full-catalogue scoring runs the
MLP over (user, item) pairs in item chunks so memory stays bounded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sectorkit.domains.retail.models.base import RecommenderNetwork


class NeuMF(RecommenderNetwork):
    """GMF + MLP towers, trained pointwise: BCE on positives and sampled negatives."""

    input_type = "pointwise"
    loss_type = "bce"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_size: int = 64,
        mlp_hidden: list[int] = (128, 64),
        dropout: float = 0.1,
        chunk_items: int = 4096,
    ) -> None:
        super().__init__()
        self.chunk_items = chunk_items
        self.user_gmf = nn.Embedding(n_users, embedding_size)
        self.item_gmf = nn.Embedding(n_items, embedding_size)
        self.user_mlp = nn.Embedding(n_users, embedding_size)
        self.item_mlp = nn.Embedding(n_items, embedding_size)
        layers: list[nn.Module] = []
        width = 2 * embedding_size
        for hidden in mlp_hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(embedding_size + width, 1)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=0.01)

    def pair_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for aligned (user, item) tensors of any equal shape."""
        gmf = self.user_gmf(users) * self.item_gmf(items)
        mlp = self.mlp(torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1))
        return self.head(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)

    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        n_items = self.item_gmf.num_embeddings
        chunks = []
        for start in range(0, n_items, self.chunk_items):
            items = torch.arange(start, min(start + self.chunk_items, n_items), device=users.device)
            chunks.append(self.pair_logits(users[:, None].expand(-1, len(items)), items[None, :].expand(len(users), -1)))
        return torch.cat(chunks, dim=1)

    def loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        pos = self.pair_logits(users, positives)
        neg = self.pair_logits(users[:, None].expand_as(negatives), negatives)
        logits = torch.cat([pos, neg.reshape(-1)])
        labels = torch.cat([torch.ones_like(pos), torch.zeros(neg.numel(), device=pos.device)])
        return F.binary_cross_entropy_with_logits(logits, labels)
