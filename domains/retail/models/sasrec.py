"""SASRec (Kang & McAuley, 2018): a causal transformer over each user's item history.

Item ``n_items`` is the padding id. Training predicts the next item at every position, with either the
full-softmax cross-entropy over the catalogue (``loss='ce'``) or binary cross-entropy against one sampled
negative per position (``loss='bce'``, the original paper). Scores use the last position's state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SASRec(nn.Module):
    """Self-attentive sequential recommender built from ``torch.nn.TransformerEncoder`` layers."""

    kind = "sequence"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_size: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.5,
        max_seq_len: int = 50,
        loss: str = "ce",
        **_: object,
    ) -> None:
        super().__init__()
        if loss not in ("ce", "bce"):
            raise ValueError(f"model.loss={loss!r}; expected ce or bce")
        self.n_items, self.loss_type, self.max_seq_len = n_items, loss, max_seq_len
        self.item_embedding = nn.Embedding(n_items + 1, embedding_size, padding_idx=n_items)
        self.position_embedding = nn.Embedding(max_seq_len, embedding_size)
        layer = nn.TransformerEncoderLayer(embedding_size, n_heads, inner_size, dropout, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embedding_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """[B, L] right-aligned item ids (padding ``n_items``) → [B, L, d] causal states."""
        history = history[:, -self.max_seq_len :]
        length = history.shape[1]
        positions = torch.arange(length, device=history.device)
        x = self.item_embedding(history) + self.position_embedding(positions)[None]
        x = self.dropout(self.norm(x))
        # additive float masks (-1e9, not -inf): left-padding rows attend to nothing real yet stay finite
        causal = torch.triu(torch.full((length, length), -1e9, device=history.device), diagonal=1)
        padding = torch.zeros(history.shape, device=history.device).masked_fill(history == self.n_items, -1e9)
        return self.encoder(x, mask=causal, src_key_padding_mask=padding)

    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        state = self.encode(history)[:, -1]
        return state @ self.item_embedding.weight[: self.n_items].T

    def loss(self, history: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
        """``targets`` [B, L] next items (-1 where no target); ``negatives`` [B, L] for BCE."""
        states = self.encode(history)
        valid = targets >= 0
        states, positives = states[valid], targets[valid]
        if self.loss_type == "ce":
            logits = states @ self.item_embedding.weight[: self.n_items].T
            return F.cross_entropy(logits, positives)
        neg = negatives[valid]
        pos_logit = (states * self.item_embedding(positives)).sum(-1)
        neg_logit = (states * self.item_embedding(neg)).sum(-1)
        return F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + F.binary_cross_entropy_with_logits(
            neg_logit, torch.zeros_like(neg_logit)
        )
