"""Feed-forward network on standardised numeric features concatenated with categorical embeddings."""

from __future__ import annotations

import torch
from torch import nn

from sectorkit.core.errors import ConfigError
from sectorkit.domains.finance.models.base import FraudNetwork
from sectorkit.domains.finance.models.embeddings import CategoricalEmbeddings
from sectorkit.domains.finance.models.numeric_encoding import PiecewiseLinearEncoding


class EmbeddingMLP(FraudNetwork):
    """[numeric | piecewise-linear encodings | embeddings] -> (Linear, BatchNorm, ReLU, Dropout) x len(hidden)
    -> one logit. With ``piecewise_linear`` the numeric features are also fed as piecewise-linear encodings on
    ``bin_edges`` (one list of edges per numeric feature, from the data)."""

    uses_bin_edges = True

    def __init__(
        self, n_numeric: int, cardinalities: list[int], hidden: list[int] = (256, 128), dropout: float = 0.2, embedding_cap: int = 16,
        piecewise_linear: bool = False, bin_edges: list[list[float]] | None = None,
    ) -> None:
        super().__init__()
        if piecewise_linear and not bin_edges:
            raise ConfigError("model.net.piecewise_linear=true needs bin edges: set data.numeric_bins > 0")
        self.embeddings = CategoricalEmbeddings(list(cardinalities), cap=embedding_cap)
        self.encoding = PiecewiseLinearEncoding(bin_edges) if piecewise_linear else None
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
