"""Logistic regression as a network: one weight per standardised numeric feature and per categorical level.

The classical linear scorer written as a :class:`~sectorkit.domains.finance.models.base.FraudNetwork`, so it
trains, checkpoints, evaluates, predicts and exports like every finance model (and is a ``model=auto``
candidate). It sees the module's features (standardised, signed-log where flagged, missing values at the
training mean) and each categorical column's codes, one weight a level (a one-hot encoding; code 0 = unseen
or missing). Trained by the optimizer on the binary cross-entropy; the L2 penalty is ``optimizer.weight_decay``.
"""

from __future__ import annotations

import torch
from sectorkit.domains.finance.models.base import FraudNetwork
from torch import nn


class LogisticRegression(FraudNetwork):
    """``logit = w . numeric + sum_j v_j[code_j] + b``."""

    def __init__(self, n_numeric: int, cardinalities: list[int]) -> None:
        super().__init__()
        self.numeric = nn.Linear(n_numeric, 1)
        self.levels = nn.ModuleList(nn.Embedding(int(c), 1) for c in cardinalities)
        nn.init.zeros_(self.numeric.weight)
        nn.init.zeros_(self.numeric.bias)
        for table in self.levels:
            nn.init.zeros_(table.weight)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        logit = self.numeric(numeric).squeeze(-1)
        for column, table in enumerate(self.levels):
            logit = logit + table(categorical[:, column]).squeeze(-1)
        return logit
