"""Several copies of one network trained side by side and stored as one module (one checkpoint, one
ONNX graph): member outputs are stacked so the caller averages them (probabilities for classifiers)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class MemberEnsemble(nn.Module):
    """``members`` independently initialised networks; ``forward`` returns a (members, batch) tensor."""

    def __init__(self, build: Callable[[], nn.Module], members: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(build() for _ in range(members))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(numeric, categorical) for member in self.members])
