"""An N-BEATS / N-HiTS-style MLP: a stack of residual blocks, each looking at the target history pooled at
its own rate (multi-rate input, N-HiTS) plus the covariates, emitting a backcast that is subtracted from
the history and a forecast that is summed over blocks (N-BEATS doubly residual stacking)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sectorkit.domains.agriculture.models.common import MonotoneQuantiles, WindowForecaster


class _Block(nn.Module):
    def __init__(
        self, lookback: int, n_other: int, out: int, hidden: int, pool: int, dropout: float, backcast: bool = True
    ) -> None:
        super().__init__()
        self.pool = pool
        pooled = -(-lookback // pool)
        self.mlp = nn.Sequential(
            nn.Linear(pooled + n_other, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.backcast = nn.Linear(hidden, lookback) if backcast else None  # the last block needs none
        self.forecast = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        pooled = F.max_pool1d(x.unsqueeze(1), self.pool, self.pool, ceil_mode=True).squeeze(1) if self.pool > 1 else x
        h = self.mlp(torch.cat([pooled, other], dim=1))
        return (self.backcast(h) if self.backcast is not None else None), self.forecast(h)


class NHiTS(WindowForecaster):
    """``forward(past (B, L, C), future (B, H, F)) -> (B, H, Q)``; channel 0 of ``past`` is the target."""

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_past: int,
        n_future: int,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        hidden: int = 128,
        pools: Sequence[int] = (8, 4, 1),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.horizon, self.n_q = horizon, len(quantiles)
        n_other = lookback * (n_past - 1) + horizon * n_future
        out = horizon * self.n_q
        self.blocks = nn.ModuleList(
            _Block(lookback, n_other, out, hidden, p, dropout, backcast=i < len(pools) - 1) for i, p in enumerate(pools)
        )
        self.skip = nn.Linear(lookback + n_other, out)  # linear path so the stack starts from a linear AR model
        self.head = MonotoneQuantiles(quantiles)

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        x = past[..., 0]
        other = torch.cat([past[..., 1:].flatten(1), future.flatten(1)], dim=1)
        total = self.skip(torch.cat([x, other], dim=1))
        for block in self.blocks:
            back, fore = block(x, other)
            x = x - back if back is not None else x
            total = total + fore
        return self.head(total.view(-1, self.horizon, self.n_q))
