"""Full-ranking top-K metrics (RecBole definitions), item coverage and popularity bias.

For a user with ground-truth set G and ranked list R (seen items already masked out):
Hit@K = 1[|R_K ∩ G| > 0]; Recall@K = |R_K ∩ G| / |G|; Precision@K = |R_K ∩ G| / K;
MRR@K = 1 / rank of the first hit within K (0 if none);
NDCG@K = sum_{hits i <= K} 1/log2(i+1) / sum_{i <= min(|G|, K)} 1/log2(i+1).
Metrics are averaged over users with at least one ground-truth item.
Coverage@K = share of the catalogue recommended to at least one user; popularity_lift@K = mean training
popularity of recommended items divided by the catalogue's mean item popularity (1 = no popularity bias).
Per-segment metrics average the same per-user values over the users of each activity segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from sectorkit.core.errors import ConfigError

RANKING_METRICS = ("hit", "recall", "ndcg", "mrr", "precision")


def mask_scores(scores: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """Scores with excluded items set to -inf. ``exclude`` is [B, L] item indices padded with -1."""
    n_items = scores.shape[1]
    padded = torch.cat([scores, scores.new_zeros(scores.shape[0], 1)], dim=1)
    index = torch.where(exclude < 0, torch.full_like(exclude, n_items), exclude)
    padded.scatter_(1, index, float("-inf"))
    return padded[:, :n_items]


def dense_targets(targets: torch.Tensor, n_items: int) -> torch.Tensor:
    """[B, T] item indices padded with -1 → [B, n_items] bool membership."""
    out = torch.zeros(targets.shape[0], n_items + 1, dtype=torch.bool, device=targets.device)
    index = torch.where(targets < 0, torch.full_like(targets, n_items), targets)
    out.scatter_(1, index, True)
    return out[:, :n_items]


def per_user_metrics(topk_items: torch.Tensor, targets: torch.Tensor, ks: list[int]) -> dict[str, torch.Tensor]:
    """Per-user metric values, each [B] for users with >= 1 target (``targets`` is [B, n_items] bool)."""
    n_true = targets.sum(1)
    keep = n_true > 0
    return metrics_from_hits(torch.gather(targets, 1, topk_items)[keep], n_true[keep], ks)


def metrics_from_hits(hits: torch.Tensor, n_true: torch.Tensor, ks: list[int]) -> dict[str, torch.Tensor]:
    """Per-user metric values from ``hits`` [B, >= max K] (whether each ranked item is a target) and ``n_true``
    [B] (each user's number of targets, all >= 1): what :func:`per_user_metrics` computes without dense targets."""
    hits, n_true = hits.float(), n_true.float()
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float32)
    discount = 1.0 / torch.log2(ranks + 1)
    cum_hits = hits.cumsum(1)
    dcg = (hits * discount).cumsum(1)
    ideal = discount.cumsum(0)
    first_hit = torch.where(cum_hits > 0, cum_hits.eq(1) & hits.bool(), torch.zeros_like(hits, dtype=torch.bool))
    rr = (first_hit.float() / ranks).cumsum(1)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        h = cum_hits[:, k - 1]
        out[f"hit@{k}"] = (h > 0).float()
        out[f"recall@{k}"] = h / n_true
        out[f"precision@{k}"] = h / k
        out[f"mrr@{k}"] = rr[:, k - 1]
        idcg = ideal[(n_true.clamp(max=k) - 1).long()]
        out[f"ndcg@{k}"] = dcg[:, k - 1] / idcg
    return out


class RankingMetrics(Metric):
    """Accumulates HR/Recall/NDCG/MRR/Precision@K, coverage@K and popularity_lift@K over batches of users."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: list[int], n_items: int, **kwargs: Any) -> None:
        """``kwargs``: torchmetrics' options, e.g. ``sync_on_compute=False`` for a metric one process computes alone
        while a process group exists (by default ``compute`` sums the states over the ranks)."""
        super().__init__(**kwargs)
        self.ks = sorted(int(k) for k in ks)
        if not self.ks or self.ks[0] < 1 or self.ks[-1] > n_items:
            raise ValueError(f"metric cut-offs {ks} must lie in 1..{n_items} (the number of items)")
        self.n_items = n_items
        self.add_state("sums", torch.zeros(len(RANKING_METRICS), len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("users", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("recommended", torch.zeros(len(self.ks), n_items), dist_reduce_fx="sum")
        self.add_state("popularity_sum", torch.zeros(len(self.ks), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("popularity_mean", torch.zeros((), dtype=torch.float64), dist_reduce_fx="max")

    def update(self, topk_items: torch.Tensor, targets: torch.Tensor | None, popularity: torch.Tensor | None = None,
               hits: torch.Tensor | None = None, n_true: torch.Tensor | None = None) -> None:
        """``topk_items`` [B, >= max K] ranked indices; ``targets`` [B, n_items] bool; ``popularity`` [n_items].
        Without a [B, n_items] target matrix (``targets=None``): ``hits`` [B, >= max K] (whether each ranked item is
        a target) and ``n_true`` [B] (each user's number of targets; users with none are skipped)."""
        if targets is not None:
            hits, n_true = torch.gather(targets, 1, topk_items), targets.sum(1)
        keep = n_true > 0
        values = metrics_from_hits(hits[keep], n_true[keep], self.ks)
        for i, name in enumerate(RANKING_METRICS):
            self.sums[i] += torch.stack([values[f"{name}@{k}"].sum() for k in self.ks]).double()
        self.users += keep.sum()
        top = topk_items[keep]
        for j, k in enumerate(self.ks):
            self.recommended[j].index_add_(0, top[:, :k].reshape(-1), torch.ones(top[:, :k].numel(), device=top.device))
            if popularity is not None:
                self.popularity_sum[j] += popularity[top[:, :k]].double().mean(1).sum()
        if popularity is not None:
            self.popularity_mean = torch.maximum(self.popularity_mean, popularity.double().mean())

    def compute(self) -> dict[str, torch.Tensor]:
        users = self.users.clamp(min=1)
        out: dict[str, torch.Tensor] = {}
        for i, name in enumerate(RANKING_METRICS):
            for j, k in enumerate(self.ks):
                out[f"{name}@{k}"] = (self.sums[i, j] / users).float()
        for j, k in enumerate(self.ks):
            out[f"coverage@{k}"] = (self.recommended[j] > 0).float().mean()
            if self.popularity_mean > 0:
                out[f"popularity_lift@{k}"] = (self.popularity_sum[j] / users / self.popularity_mean).float()
        return out


@dataclass
class Segments:
    """Users grouped by activity: user ``i`` (``activity[i]`` training interactions) is in segment ``codes[i]``,
    named ``names[j]`` and covering ``ranges[j]`` training interactions (e.g. ``'6-23'`` or ``'91+'``)."""

    activity: np.ndarray
    codes: np.ndarray
    names: list[str]
    ranges: list[str]


def check_quantiles(quantiles: list[float], key: str = "data.segments.quantiles") -> None:
    """Raise a ConfigError unless ``quantiles`` are numbers strictly between 0 and 1."""
    if not all(isinstance(q, (int, float)) and 0 < float(q) < 1 for q in quantiles):
        raise ConfigError(f"{key}={list(quantiles)}; expected numbers strictly between 0 and 1, e.g. [0.25, 0.5, 0.75]")


def activity_segments(activity: np.ndarray, very_light_max: int = 5, quantiles: list[float] = (0.25, 0.5, 0.75)) -> Segments:
    """Segments of users by ``activity`` (their number of training interactions).

    ``very light``: at most ``very_light_max`` (always listed, even when empty: on a log filtered to active
    users it says so). The other users are cut at the ``quantiles`` of their activity (rounded down to whole
    interactions; a user on a cut belongs to the lower segment) into ``Q1``, ``Q2``, ... from the least active
    up; segments that ties leave empty are dropped (and the numbering closes up).
    """
    check_quantiles(quantiles)
    activity = np.asarray(activity, dtype=np.int64)
    rest = activity[activity > very_light_max]
    cuts = np.unique(np.floor(np.quantile(rest, sorted(float(q) for q in quantiles)))).astype(np.int64) if len(rest) else np.zeros(0, np.int64)
    raw = np.where(activity <= very_light_max, 0, 1 + np.searchsorted(cuts, activity, side="left"))
    lows = np.r_[very_light_max + 1, cuts + 1]
    highs = [*cuts.tolist(), None]
    names, ranges, keep = ["very light"], [f"0-{very_light_max}"], [0]
    for j, (low, high) in enumerate(zip(lows.tolist(), highs), start=1):
        if (raw == j).any():
            keep.append(j)
            ranges.append(f"{low}+" if high is None else f"{low}-{high}")
            names.append(f"Q{len(names)}")
    recode = np.zeros(len(lows) + 1, dtype=np.int64)
    recode[keep] = np.arange(len(keep))
    return Segments(activity, recode[raw], names, ranges)


def segment_metrics(topk_items: torch.Tensor, targets: torch.Tensor, codes: np.ndarray, n_segments: int, ks: list[int]) -> list[dict[str, float | None]]:
    """Per segment, the mean of each per-user metric (:func:`per_user_metrics`) over its users with >= 1 target
    (None for a segment without such users). Rows of ``topk_items``/``targets`` are the users of ``codes``."""
    values = per_user_metrics(topk_items, targets, ks)
    codes = torch.as_tensor(np.asarray(codes))[targets.any(1).cpu()]
    out = []
    for j in range(n_segments):
        members = codes == j
        out.append({name: float(v.cpu()[members].mean()) if members.any() else None for name, v in values.items()})
    return out
