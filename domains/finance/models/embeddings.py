"""Categorical embeddings shared by the networks: one table per column, index 0 = unseen/missing."""

from __future__ import annotations

import torch
from torch import nn


def embedding_dim(cardinality: int, cap: int = 16) -> int:
    """A common rule of thumb: min(cap, round(1.6 * cardinality ** 0.56))."""
    return max(2, min(cap, round(1.6 * cardinality**0.56)))


class CategoricalEmbeddings(nn.Module):
    """Embeds each categorical column (``cardinalities[i]`` includes the unseen index 0) and concatenates."""

    def __init__(self, cardinalities: list[int], dim: int | None = None, cap: int = 16) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(c, dim or embedding_dim(c, cap)) for c in cardinalities)
        self.out_dim = sum(t.embedding_dim for t in self.tables)

    def forward(self, codes: torch.Tensor) -> list[torch.Tensor]:
        return [table(codes[:, i]) for i, table in enumerate(self.tables)]
