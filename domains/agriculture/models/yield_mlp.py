"""The yield network: an MLP over in-season weather aggregates, trend and tabular features.

With ``residual_on_trend`` the network predicts the departure from each region's linear trend (the trend
value is an input and is added back), so it only has to learn the weather effect.
"""

from __future__ import annotations

import torch
from torch import nn

from sectorkit.core.network import Network


class YieldMLP(Network):
    """``forward(features (B, F), trend (B,)) -> (B,)`` in standardised yield units.

    ``input_type = "season_features"``: trained on one row of season features per region and year (the yield
    data module's batches).
    """

    input_type = "season_features"

    def __init__(
        self, n_features: int, hidden: int = 64, layers: int = 2, dropout: float = 0.1, residual_on_trend: bool = True
    ) -> None:
        super().__init__()
        self.residual_on_trend = residual_on_trend
        blocks: list[nn.Module] = []
        width = n_features + 1
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.mlp = nn.Sequential(*blocks, nn.Linear(width, 1))
        self.linear = nn.Linear(n_features + 1, 1)

    def forward(self, features: torch.Tensor, trend: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, trend.unsqueeze(1)], dim=1)
        out = (self.mlp(x) + self.linear(x)).squeeze(1)
        return out + trend if self.residual_on_trend else out
