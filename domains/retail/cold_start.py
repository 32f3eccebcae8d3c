"""Evaluation over held-out (cold) items: with ``data.split.method=cold_items`` the validation and test items
are never trained on, and each is ranked only against the other items held out for the same split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class CandidateBatches(Dataset):
    """Batches of an evaluation dataset whose ``exclude`` also holds every item outside ``candidates``, so the
    model and every baseline rank the candidates only (the known history is masked as before). Other
    attributes (``users``, ``targets``, ...) are those of the wrapped dataset."""

    def __init__(self, dataset: Dataset, candidates: np.ndarray, n_items: int) -> None:
        self.dataset = dataset
        self.candidates = np.unique(np.asarray(candidates, dtype=np.int64))
        self.others = torch.from_numpy(np.setdiff1d(np.arange(n_items), self.candidates))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: list[int]) -> dict[str, torch.Tensor]:
        batch = self.dataset[index]
        others = self.others.expand(len(batch["users"]), -1)
        batch["exclude"] = torch.cat([batch["exclude"], others], dim=1)
        return batch
