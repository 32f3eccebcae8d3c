"""A recurrent (GRU, or LSTM with ``cell="lstm"``) encoder over the lookback window; its last state and the
known-ahead calendar features feed an MLP that emits all horizons at once (direct multi-horizon), plus a
linear skip over the target history."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sectorkit.core.errors import ConfigError
from sectorkit.domains.agriculture.models.common import MonotoneQuantiles, WindowForecaster


class GRUForecaster(WindowForecaster):
    """``forward(past (B, L, C), future (B, H, F)) -> (B, H, Q)``."""

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_past: int,
        n_future: int,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        hidden: int = 32,
        layers: int = 1,
        dropout: float = 0.2,
        cell: str = "gru",
    ) -> None:
        super().__init__()
        self.horizon, self.n_q = horizon, len(quantiles)
        out = horizon * self.n_q
        if cell not in ("gru", "lstm"):
            raise ConfigError(f"model.net.cell={cell!r}: expected 'gru' or 'lstm'")
        self.encoder = (nn.GRU if cell == "gru" else nn.LSTM)(
            n_past, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.decoder = nn.Sequential(
            nn.Linear(hidden + horizon * n_future, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out)
        )
        self.skip = nn.Linear(lookback + horizon * n_future, out)
        self.head = MonotoneQuantiles(quantiles)

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        _, state = self.encoder(past)
        if isinstance(state, tuple):  # LSTM: (hidden, cell)
            state = state[0]
        fut = future.flatten(1)
        raw = self.decoder(torch.cat([state[-1], fut], dim=1)) + self.skip(torch.cat([past[..., 0], fut], dim=1))
        return self.head(raw.view(-1, self.horizon, self.n_q))
