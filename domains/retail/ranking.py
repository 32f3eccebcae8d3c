"""Full-ranking evaluation at catalogue scale, on the scores' device, without a users x items matrix.

Users are scored a chunk at a time (``user_chunk`` rows), and within a chunk the catalogue a block at a time
(``item_chunk`` columns) when it is large: each block's known items are set to -inf, its top-K is merged with
the running top-K of the earlier blocks, so at most ``user_chunk x item_chunk`` scores exist at once. Hits are
looked up by binary search in the sorted ``user * n_items + item`` keys of the target items, so no dense target
matrix is built either. The metrics are exactly :class:`~sectorkit.domains.retail.metrics.RankingMetrics`
(the same per-user values, accumulated the same way) as the module's batch path gives.

    scorer = factor_scorer(user_factors, item_factors)          # e.g. LightGCN's propagated embeddings
    metrics = full_ranking(scorer, users, known, targets, ks=[10, 20], n_items=n_items)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from sectorkit.core.sharding import shard_items
from sectorkit.domains.retail.interactions import UserLists
from sectorkit.domains.retail.metrics import RankingMetrics

# scores of ``users`` [B] for the items start..stop-1: a new [B, stop - start] tensor (it is masked in place)
BlockScorer = Callable[[torch.Tensor, int, int], torch.Tensor]


@dataclass
class ItemSets:
    """Each user's set of items as sorted unique keys ``user * n_items + item`` (int64) on one device: membership
    is a binary search, a user's items a contiguous slice (``indptr``)."""

    keys: torch.Tensor
    indptr: torch.Tensor
    n_items: int

    @classmethod
    def from_pairs(cls, users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> ItemSets:
        """The sets of (user, item) pairs (duplicates count once), on the pairs' device."""
        users, items = torch.as_tensor(users).long(), torch.as_tensor(items).long()
        keys = torch.unique(users * n_items + items)  # sorted
        bounds = torch.arange(n_users + 1, device=keys.device, dtype=torch.long) * n_items
        return cls(keys, torch.searchsorted(keys, bounds), n_items)

    @classmethod
    def from_lists(cls, lists: UserLists, n_items: int, device: torch.device | str = "cpu") -> ItemSets:
        """From a data module's per-user lists (e.g. ``datamodule.known_history('test')``)."""
        n_users = len(lists.indptr) - 1
        users = np.repeat(np.arange(n_users), lists.lengths())
        return cls.from_pairs(torch.from_numpy(users).to(device), torch.from_numpy(np.asarray(lists.items)).to(device), n_users, n_items)

    @classmethod
    def from_padded(cls, lists: torch.Tensor, n_items: int) -> ItemSets:
        """From a batch's [B, L] item indices padded with -1 (its ``exclude`` or ``targets``), keyed by row 0..B-1."""
        rows = torch.arange(lists.shape[0], device=lists.device)[:, None].expand_as(lists)
        present = lists >= 0
        return cls.from_pairs(rows[present], lists[present], lists.shape[0], n_items)

    def to(self, device: torch.device | str) -> ItemSets:
        return ItemSets(self.keys.to(device), self.indptr.to(device), self.n_items)

    def counts(self, users: torch.Tensor) -> torch.Tensor:
        """How many items each of ``users`` has."""
        return self.indptr[users + 1] - self.indptr[users]

    def pairs(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row in ``users``, item) of every item of ``users``."""
        counts = self.counts(users)
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        starts = torch.cumsum(counts, 0) - counts
        offsets = torch.arange(len(rows), device=users.device) - starts[rows]
        return rows, self.keys[self.indptr[users][rows] + offsets] % self.n_items

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, K] bool: whether ``items[b, j]`` is in the set of ``users[b]``."""
        if len(self.keys) == 0:
            return torch.zeros(items.shape, dtype=torch.bool, device=items.device)
        query = users[:, None] * self.n_items + items
        pos = torch.searchsorted(self.keys, query.reshape(-1)).clamp(max=len(self.keys) - 1).reshape(query.shape)
        return self.keys[pos] == query


def factor_scorer(user_factors: torch.Tensor, item_factors: torch.Tensor) -> BlockScorer:
    """Dot-product scores of factorised models (BPR-MF, LightGCN after propagation)."""
    return lambda users, start, stop: user_factors[users] @ item_factors[start:stop].T


def item_item_scorer(weights: torch.Tensor, history: ItemSets) -> BlockScorer:
    """Scores of item-item models (EASE, ItemKNN): each user's known items summed through ``weights`` columns."""

    def score(users: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        rows, items = history.pairs(users)
        dense = torch.zeros(len(users), history.n_items, device=weights.device, dtype=weights.dtype)
        dense[rows, items] = 1.0
        return dense @ weights[:, start:stop]

    return score


def masked_topk(scorer: BlockScorer, users: torch.Tensor, k: int, n_items: int, known: ItemSets | None = None,
                item_chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values, item indices) of ``users`` over the catalogue with ``known`` items at -inf, scoring
    ``item_chunk`` items at a time (all at once when None) and merging each block's top-k into a running top-k.
    The same items and values as ``torch.topk`` over the whole masked row, except that equal scores straddling
    the k-th place may be ordered differently with ``item_chunk``."""
    item_chunk = n_items if not item_chunk else min(item_chunk, n_items)
    rows, cols = known.pairs(users) if known is not None else (None, None)
    best_values = best_items = None
    for start in range(0, n_items, item_chunk):
        stop = min(start + item_chunk, n_items)
        scores = scorer(users, start, stop).float()
        if rows is not None:
            inside = (cols >= start) & (cols < stop)
            scores[rows[inside], cols[inside] - start] = float("-inf")
        values, items = torch.topk(scores, min(k, stop - start), dim=1)
        items = items + start
        if best_values is not None:
            values, at = torch.topk(torch.cat([best_values, values], 1), min(k, stop), dim=1)
            items = torch.gather(torch.cat([best_items, items], 1), 1, at)
        best_values, best_items = values, items
    return best_values, best_items


def full_ranking(scorer: BlockScorer, users: torch.Tensor, known: ItemSets | None, targets: ItemSets, ks: list[int], n_items: int,
                 popularity: torch.Tensor | None = None, user_chunk: int = 4096, item_chunk: int | None = None,
                 keep_topk: bool = False, distributed: bool = False) -> tuple[dict[str, float], torch.Tensor | None]:
    """Full-ranking metrics (:class:`RankingMetrics`) of ``users`` against their ``targets`` with ``known`` items
    masked, ``user_chunk`` users and ``item_chunk`` items at a time, on the device of ``users``; with
    ``keep_topk`` also every user's top-``max(ks)`` items (a [len(users), max(ks)] tensor).

    ``distributed`` (every rank of an initialised ``torch.distributed`` group calls it with the same ``users``):
    each rank ranks only its contiguous block of ``users`` (:func:`~sectorkit.core.sharding.shard_items`, no
    padding), the per-user metric sums and user counts are summed over the ranks and divided once, so every rank
    returns exactly the one-process metrics; ``keep_topk`` then gives the lists of the rank's block. Without it
    the metrics are this process's alone, even inside a process group."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed and dist.is_available() and dist.is_initialized() else (0, 1)
    if world > 1:
        block = shard_items(len(users), rank, world)
        users = users[block.start:block.stop]
    metric = RankingMetrics(ks, n_items, sync_on_compute=world > 1).to(users.device)
    tops = []
    for chunk in users.split(user_chunk):
        _, top = masked_topk(scorer, chunk, max(metric.ks), n_items, known, item_chunk)
        metric.update(top, None, popularity, hits=targets.contains(chunk, top), n_true=targets.counts(chunk))
        if keep_topk:
            tops.append(top)
    return {k: float(v) for k, v in metric.compute().items()}, (torch.cat(tops) if keep_topk else None)
