"""Feed-forward network on standardised numeric features concatenated with categorical embeddings."""

from __future__ import annotations

import torch
from torch import nn

from sectorkit.domains.finance.models.embeddings import CategoricalEmbeddings
from sectorkit.domains.finance.models.numeric_encoding import PiecewiseLinearEncoding


class EmbeddingMLP(nn.Module):
    """[numeric | piecewise-linear encodings | embeddings] -> (Linear, BatchNorm, ReLU, Dropout) x len(hidden)
    -> one logit. The encodings are used when ``bin_edges`` (one list of edges per numeric feature) is given."""

    def __init__(
        self, n_numeric: int, cardinalities: list[int], hidden: list[int] = (256, 128), dropout: float = 0.2, embedding_cap: int = 16,
        bin_edges: list[list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.embeddings = CategoricalEmbeddings(list(cardinalities), cap=embedding_cap)
        self.encoding = PiecewiseLinearEncoding(bin_edges) if bin_edges else None
        layers: list[nn.Module] = []
        width = n_numeric + self.embeddings.out_dim + (self.encoding.out_dim if self.encoding else 0)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        encoded = [self.encoding(numeric)] if self.encoding is not None else []
        x = torch.cat([numeric, *encoded, *self.embeddings(categorical)], dim=1)
        return self.net(x).squeeze(-1)
