"""Compact per-user interaction lists (CSR arrays) and the padded batches built from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class UserLists:
    """Per-user item lists in time order: items of user u are ``items[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray
    items: np.ndarray

    @classmethod
    def build(cls, users: np.ndarray, items: np.ndarray, times: np.ndarray, n_users: int) -> "UserLists":
        order = np.lexsort((np.arange(len(users)), times, users))
        counts = np.bincount(users, minlength=n_users)
        return cls(np.r_[0, np.cumsum(counts)].astype(np.int64), items[order].astype(np.int64))

    @classmethod
    def concat(cls, first: "UserLists", second: "UserLists") -> "UserLists":
        """Each user's ``first`` list followed by their ``second`` list."""
        n_users = len(first.indptr) - 1
        c1, c2 = np.diff(first.indptr), np.diff(second.indptr)
        users = np.r_[np.repeat(np.arange(n_users), c1), np.repeat(np.arange(n_users), c2)]
        part = np.r_[np.zeros(c1.sum()), np.ones(c2.sum())]
        rank = np.r_[np.arange(c1.sum()), np.arange(c2.sum())]
        order = np.lexsort((rank, part, users))
        return cls(np.r_[0, np.cumsum(c1 + c2)].astype(np.int64), np.r_[first.items, second.items][order])

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def padded(self, rows: np.ndarray, pad: int, max_len: int | None = None, right_align: bool = False) -> np.ndarray:
        """[len(rows), L] matrix of each row's items (the last ``max_len`` when given), padded with ``pad``."""
        rows = np.asarray(rows, dtype=np.int64)
        known = rows >= 0
        safe = np.where(known, rows, 0)
        starts = self.indptr[safe]
        lens = np.where(known, self.indptr[safe + 1] - starts, 0)
        if max_len is not None:
            starts = starts + np.maximum(lens - max_len, 0)
            lens = np.minimum(lens, max_len)
        width = max(int(lens.max(initial=0)), 1)
        offsets = np.arange(width)[None, :]
        if right_align:
            offsets = offsets - (width - lens)[:, None]
        valid = (offsets >= 0) & (offsets < lens[:, None])
        index = np.clip(starts[:, None] + offsets, 0, max(len(self.items) - 1, 0))
        values = self.items[index] if len(self.items) else np.zeros_like(index)
        return np.where(valid, values, pad)


def sequence_windows(lists: UserLists, max_len: int, pad: int) -> dict[str, torch.Tensor]:
    """Next-item training windows: each user's list cut from the end into chunks of ``max_len`` + 1 items.

    Returns right-aligned ``history`` [W, max_len] (padding ``pad``), ``targets`` [W, max_len] (-1 where
    no target) and ``users`` [W].
    """
    lens = lists.lengths()
    n_windows = np.where(lens >= 2, np.ceil((lens - 1) / max_len), 0).astype(np.int64)
    users = np.repeat(np.arange(len(lens)), n_windows)
    first = np.r_[0, np.cumsum(n_windows)[:-1]]
    j = np.arange(n_windows.sum()) - np.repeat(first, n_windows)
    end = lists.indptr[users] + lens[users] - j * max_len  # exclusive end of the target span
    start = np.maximum(end - max_len - 1, lists.indptr[users])
    width = end - start - 1
    offsets = np.arange(max_len)[None, :] - (max_len - width)[:, None]
    valid = offsets >= 0
    inputs = np.where(valid, lists.items[np.clip(start[:, None] + offsets, 0, None)], pad)
    targets = np.where(valid, lists.items[np.clip(start[:, None] + offsets + 1, 0, None)], -1)
    return {"history": torch.from_numpy(inputs), "targets": torch.from_numpy(targets), "users": torch.from_numpy(users)}
