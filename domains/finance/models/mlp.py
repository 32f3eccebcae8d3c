"""Feed-forward network on standardised numeric features concatenated with categorical embeddings."""

from __future__ import annotations

import torch
from torch import nn

from domains.finance.models.embeddings import CategoricalEmbeddings


class EmbeddingMLP(nn.Module):
    """[numeric | embeddings] -> (Linear, BatchNorm, ReLU, Dropout) x len(hidden) -> one logit."""

    def __init__(self, n_numeric: int, cardinalities: list[int], hidden: list[int] = (256, 128), dropout: float = 0.2, embedding_cap: int = 16) -> None:
        super().__init__()
        self.embeddings = CategoricalEmbeddings(list(cardinalities), cap=embedding_cap)
        layers: list[nn.Module] = []
        width = n_numeric + self.embeddings.out_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        x = torch.cat([numeric, *self.embeddings(categorical)], dim=1)
        return self.net(x).squeeze(-1)
