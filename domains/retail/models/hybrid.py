"""Hybrid matrix factorisation with item text: an item's vector is a learned id embedding plus a projection of
its text embedding (e.g. all-MiniLM-L6-v2 of title and genres); items never seen in training have no id
part and are scored from their text alone (cold-start items).

Training is BPR against sampled negatives. During training each item's id part is dropped with probability
``id_dropout`` (DropoutNet, Volkovs et al., 2017), so the text projection learns to stand in for it; the
negatives are drawn among items seen in training only (a held-out item must not be learned as "never
interacted with").
"""

from __future__ import annotations

import torch
from torch import nn

from sectorkit.domains.retail.models.base import RecommenderNetwork
from sectorkit.domains.retail.models.bpr import bpr_loss


class TextHybridMF(RecommenderNetwork):
    """User id embeddings scored against item vectors = id embedding (warm items only) + MLP(text embedding)."""

    input_type = "pairwise"
    loss_type = "bpr"
    needs_graph = True  # the training interactions tell which items are warm (have an id embedding)
    uses_item_text = True

    def __init__(self, n_users: int, n_items: int, item_text_dim: int, embedding_size: int = 64, hidden_size: int = 0,
                 id_dropout: float = 0.5, item_bias: bool = False) -> None:
        super().__init__()
        if item_text_dim < 1:
            raise ValueError("TextHybridMF needs item text vectors (item_text_dim >= 1): set data.items_path")
        self.user_embedding = nn.Embedding(n_users, embedding_size)
        self.item_embedding = nn.Embedding(n_items, embedding_size)
        nn.init.xavier_normal_(self.user_embedding.weight)
        nn.init.xavier_normal_(self.item_embedding.weight)
        layers: list[nn.Module] = [nn.Linear(item_text_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, embedding_size)] if hidden_size else [nn.Linear(item_text_dim, embedding_size)]
        self.text_projection = nn.Sequential(*layers)
        self.id_dropout = float(id_dropout)
        # optional item bias: a scalar from the text (and, for warm items, a learned id bias, dropped with the id part)
        self.text_bias = nn.Linear(item_text_dim, 1) if item_bias else None
        self.id_bias = nn.Embedding(n_items, 1) if item_bias else None
        if self.id_bias is not None:
            nn.init.zeros_(self.id_bias.weight)
        self.register_buffer("item_text", torch.zeros(n_items, item_text_dim))
        self.register_buffer("warm", torch.zeros(n_items, dtype=torch.bool))

    def set_item_text(self, vectors: torch.Tensor) -> None:
        self.item_text.copy_(vectors)

    def set_graph(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Mark the items that have training interactions: only they get an id embedding."""
        self.warm.copy_(torch.bincount(items, minlength=len(self.warm)) > 0)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Vectors of ``items`` (all when None): projected text, plus the id embedding where the item is warm
        (and, in training, not dropped)."""
        items = torch.arange(len(self.warm), device=self.warm.device) if items is None else items
        keep = self.warm[items]
        if self.training and self.id_dropout > 0:
            keep = keep & (torch.rand(keep.shape, device=keep.device) >= self.id_dropout)
        vectors = self.text_projection(self.item_text[items]) + self.item_embedding(items) * keep.unsqueeze(-1)
        if self.text_bias is None:
            return vectors
        bias = self.text_bias(self.item_text[items]) + self.id_bias(items) * keep.unsqueeze(-1)
        return torch.cat([vectors, bias], dim=-1)  # scored against a user vector extended by a constant 1

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        u = self.user_embedding(users)
        return u if self.text_bias is None else torch.cat([u, torch.ones_like(u[..., :1])], dim=-1)

    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """[B] users → [B, n_items] scores (cold items from their text only)."""
        return self.user_vectors(users) @ self.item_vectors().T

    def loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        warm_items = torch.nonzero(self.warm).squeeze(1)
        cold = ~self.warm[negatives]
        if cold.any():  # replace held-out items drawn as negatives by random warm items
            negatives = torch.where(cold, warm_items[torch.randint(len(warm_items), negatives.shape, device=negatives.device)], negatives)
        u = self.user_vectors(users)
        pos = (u * self.item_vectors(positives)).sum(-1)
        neg = (u[:, None, :] * self.item_vectors(negatives)).sum(-1)
        return bpr_loss(pos[:, None], neg)
