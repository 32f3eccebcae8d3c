"""SASRec (Kang & McAuley, 2018): a causal transformer over each user's item history.

Item ``n_items`` is the padding id. Training predicts the next item at every position: :class:`SASRec` with
the full-softmax cross-entropy over the catalogue, :class:`SASRecBCE` with binary cross-entropy against one
sampled negative per position (the original paper). Scores use the last position's state. The history length
``max_seq_len`` is the data module's (``data.max_seq_len``), passed by the module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sectorkit.domains.retail.models.base import RecommenderNetwork


class SASRec(RecommenderNetwork):
    """Self-attentive sequential recommender built from ``torch.nn.TransformerEncoder`` layers, full-softmax loss."""

    input_type = "sequence"
    loss_type = "ce"
    history_input = "recent"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        max_seq_len: int = 50,
        embedding_size: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        inner_size: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.n_items, self.max_seq_len = n_items, max_seq_len
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
        """``targets`` [B, L] next items (-1 where no target); full-softmax cross-entropy (``negatives`` unused)."""
        states = self.encode(history)
        valid = targets >= 0
        logits = states[valid] @ self.item_embedding.weight[: self.n_items].T
        return F.cross_entropy(logits, targets[valid])


class SASRecBCE(SASRec):
    """SASRec trained as in the paper: binary cross-entropy of the next item against one sampled negative."""

    loss_type = "bce"

    def loss(self, history: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None) -> torch.Tensor:
        """``targets`` and ``negatives`` [B, L] (-1 targets mark positions without one)."""
        states = self.encode(history)
        valid = targets >= 0
        states, positives, negatives = states[valid], targets[valid], negatives[valid]
        pos_logit = (states * self.item_embedding(positives)).sum(-1)
        neg_logit = (states * self.item_embedding(negatives)).sum(-1)
        return F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + F.binary_cross_entropy_with_logits(
            neg_logit, torch.zeros_like(neg_logit)
        )
