"""The exported recommender graph: raw user ids in, the top-K raw item ids out.

What ``predict`` does around the model is a pure function of the user id given the training interactions, so it
travels inside the graph: the id lookup (an equality match against the known ids; unknown ids get the popularity
fallback), each known user's history and the items to exclude (the training interactions as CSR buffers, gathered
and padded as the predict loader pads them) and the top-K with the item ids.
"""

from __future__ import annotations

import numpy as np
import torch

TIE_STEP = 2.0**-44  # per item position, relative to the score: ties go to the lower position, distinct float32 scores keep their order


def integer_ids(ids: list[str]) -> np.ndarray | None:
    """``ids`` as int64 when every one is the decimal form of an integer ("42", "-7"; not "007" or "4.0"), else None."""
    try:
        values = np.array([int(i) for i in ids], dtype=np.int64)
    except (ValueError, OverflowError):
        return None
    return values if all(str(v) == i for v, i in zip(values.tolist(), ids)) else None


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best items of every row (positions, scores), ties to the lower position in every runtime (ONNX
    Runtime's TopK and torch's break ties differently, so the ranking key is made unique in float64 first)."""
    position = torch.arange(scores.shape[1], dtype=torch.float64)[None, :]
    wide = scores.double()
    finite = torch.isfinite(wide)
    size = torch.where(finite, wide.abs(), torch.ones_like(wide)).clamp(min=1e-30)
    key = torch.where(finite, wide - position * size * TIE_STEP, -1e300 * (1 + position * TIE_STEP))
    index = torch.topk(key, k, dim=1).indices
    return index, scores.gather(1, index)


class RawUserRecommender(torch.nn.Module):
    """``model`` (a :class:`~sectorkit.domains.retail.module.RecommenderModule`) behind the id lookup and the top-K.

    ``user_ids``: the known raw ids as int64 (then ``forward`` takes raw ids) or None (string ids: ``forward`` takes
    positions in the exported ``user_ids``, -1 or out of range for an unknown user). ``item_ids``: int64 raw item ids
    returned in place of positions, or None. ``indptr``/``items``: each user's training items in time order (CSR).
    ``history_length``: how many of the latest items the network reads (None: all). Returns ``items`` (batch, k),
    ``scores`` (batch, k; -inf past the items left to recommend) and ``from_popularity`` (batch,).
    """

    def __init__(self, model: torch.nn.Module, user_ids: np.ndarray | None, item_ids: np.ndarray | None, indptr: np.ndarray,
                 items: np.ndarray, history_length: int | None, k: int) -> None:
        super().__init__()
        self.model, self.k, self.history_length = model, int(k), history_length
        self.n_users, self.n_items = len(indptr) - 1, int(model.n_items)
        self.raw_users, self.raw_items = user_ids is not None, item_ids is not None
        self.register_buffer("user_ids", torch.as_tensor(user_ids if user_ids is not None else np.zeros(0), dtype=torch.long))
        self.register_buffer("item_ids", torch.as_tensor(item_ids if item_ids is not None else np.zeros(0), dtype=torch.long))
        self.register_buffer("indptr", torch.as_tensor(indptr, dtype=torch.long))
        self.register_buffer("items", torch.as_tensor(items if len(items) else np.zeros(1), dtype=torch.long))
        self.widest = max(int(np.diff(indptr).max(initial=0)), 1)

    def positions(self, users: torch.Tensor) -> torch.Tensor:
        """Each user's position among the known users, -1 for an unknown one."""
        if self.raw_users:
            match = users[:, None] == self.user_ids[None, :]
            position = (match.long() * torch.arange(self.n_users)[None, :]).sum(1)
            return torch.where(match.any(1), position, torch.full_like(position, -1))
        return torch.where((users >= 0) & (users < self.n_users), users, torch.full_like(users, -1))

    def forward(self, user_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        users = self.positions(user_ids)
        known = users >= 0
        safe = users.clamp(min=0)
        start = self.indptr[safe]
        length = torch.where(known, self.indptr[safe + 1] - start, torch.zeros_like(start))
        last = self.items.shape[0] - 1
        # items to exclude: every known item, right-padded with -1
        offset = torch.arange(self.widest)[None, :]
        exclude = torch.where(offset < length[:, None], self.items[(start[:, None] + offset).clamp(max=last)], torch.full_like(offset, -1))
        # history: the latest history_length items, right-aligned and left-padded with n_items, as wide as the batch needs
        recent = length if self.history_length is None else length.clamp(max=self.history_length)
        width = recent.max().clamp(min=1)
        column = torch.arange(width)[None, :] - (width - recent)[:, None]  # position within the user's recent items
        picked = (start + length - recent)[:, None] + column
        history = torch.where(column >= 0, self.items[picked.clamp(min=0, max=last)], torch.full_like(picked, self.n_items))
        scores = self.model(users, history, exclude)
        index, best = top_k(scores, self.k)
        items = self.item_ids[index] if self.raw_items else index
        return items, best, self.model.fallback_mask(users, history)
