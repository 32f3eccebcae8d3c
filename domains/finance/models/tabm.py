"""TabM-mini: an MLP that is an ensemble of ``k`` members sharing almost all weights (after Gorishniy et al.,
2025, "TabM: Advancing Tabular Deep Learning with Parameter-Efficient Ensembling", the ``mini`` variant).

Each member sees the same input scaled by its own random-sign vector (a rank-one, BatchEnsemble-style adapter),
runs it through the one shared MLP and has its own output head. Every member is trained on every batch with its
own loss; prediction averages the members' probabilities (the module does both, as for any ensemble). The
members cost one wide matrix product, not ``k`` networks, and their diversity is what the paper credits for
TabM's accuracy on tables. Inputs as :class:`~sectorkit.domains.finance.models.mlp.EmbeddingMLP`: standardised
numeric features, optionally their piecewise-linear encodings on target-aware bins, and categorical embeddings.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from sectorkit.core.errors import ConfigError
from sectorkit.domains.finance.models.base import FraudNetwork
from sectorkit.domains.finance.models.embeddings import CategoricalEmbeddings
from sectorkit.domains.finance.models.numeric_encoding import PiecewiseLinearEncoding


class TabMMini(FraudNetwork):
    """``k`` members: input ⊙ r_i -> shared (Linear, ReLU, Dropout) x ``n_blocks`` -> member head i -> one logit.

    ``forward`` returns ``(k, batch)`` logits, one row per member (``stacked_members``)."""

    uses_bin_edges = True
    stacked_members: ClassVar[bool] = True

    def __init__(
        self, n_numeric: int, cardinalities: list[int], k: int = 16, n_blocks: int = 2, d_block: int = 256, dropout: float = 0.1,
        embedding_cap: int = 16, piecewise_linear: bool = True, bin_edges: list[list[float]] | None = None,
    ) -> None:
        super().__init__()
        if piecewise_linear and not bin_edges:
            raise ConfigError("model.net.piecewise_linear=true needs bin edges: set data.numeric_bins > 0")
        self.embeddings = CategoricalEmbeddings(list(cardinalities), cap=embedding_cap)
        self.encoding = PiecewiseLinearEncoding(bin_edges) if piecewise_linear else None
        width = n_numeric + self.embeddings.out_dim + (self.encoding.out_dim if self.encoding else 0)
        # the paper's initialisation of the first adapter: random signs, so members differ from the first step
        signs = torch.randint(0, 2, (int(k), width)) * 2.0 - 1.0
        self.adapter = nn.Parameter(signs)
        blocks: list[nn.Module] = []
        for _ in range(int(n_blocks)):
            blocks += [nn.Linear(width, int(d_block)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(d_block)
        self.backbone = nn.Sequential(*blocks)
        bound = width**-0.5  # nn.Linear's default range, per member
        self.head_weight = nn.Parameter(torch.empty(int(k), width).uniform_(-bound, bound))
        self.head_bias = nn.Parameter(torch.empty(int(k)).uniform_(-bound, bound))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        encoded = [self.encoding(numeric)] if self.encoding is not None else []
        x = torch.cat([numeric, *encoded, *self.embeddings(categorical)], dim=1)
        hidden = self.backbone(x.unsqueeze(1) * self.adapter)  # (batch, k, d_block)
        return (hidden * self.head_weight).sum(-1).T + self.head_bias.unsqueeze(1)  # (k, batch)
