"""Autoencoder for unsupervised scoring: trained to reconstruct legitimate transactions; the anomaly
score of a transaction is its reconstruction error (numeric MSE + categorical cross-entropy)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sectorkit.domains.finance.models.base import FraudNetwork
from sectorkit.domains.finance.models.embeddings import CategoricalEmbeddings


class TabularAutoencoder(FraudNetwork):
    """[numeric | embeddings] -> encoder -> latent -> decoder -> numeric values + category logits; trained on
    legitimate transactions only."""

    supervised = False

    def __init__(self, n_numeric: int, cardinalities: list[int], hidden: list[int] = (64, 32), latent: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_numeric = n_numeric
        self.cardinalities = list(cardinalities)
        self.embeddings = CategoricalEmbeddings(self.cardinalities)
        width = n_numeric + self.embeddings.out_dim
        sizes = [width, *hidden, latent]
        enc: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        self.encoder = nn.Sequential(*enc[:-2])  # no activation on the latent code
        dec: list[nn.Module] = []
        rev = [latent, *reversed(hidden)]
        for a, b in zip(rev[:-1], rev[1:]):
            dec += [nn.Linear(a, b), nn.ReLU()]
        self.decoder = nn.Sequential(*dec)
        self.numeric_out = nn.Linear(rev[-1], n_numeric)
        self.category_out = nn.ModuleList(nn.Linear(rev[-1], c) for c in self.cardinalities)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Per-row reconstruction error (higher = more anomalous)."""
        hidden = self.decoder(self.encoder(torch.cat([numeric, *self.embeddings(categorical)], dim=1)))
        error = F.mse_loss(self.numeric_out(hidden), numeric, reduction="none").mean(dim=1)
        for i, head in enumerate(self.category_out):
            error = error + F.cross_entropy(head(hidden), categorical[:, i], reduction="none") / max(len(self.category_out), 1)
        return error
