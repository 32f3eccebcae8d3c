"""Piecewise-linear encoding of numeric features with target-aware bins (Gorishniy et al., 2022, "On
Embeddings for Numerical Features in Tabular Deep Learning", PLE with tree-based bins).

Each feature's bin edges are the split points of a small decision tree fitted on that feature alone against
the training labels, so an edge lands where the fraud rate jumps (an amount threshold, a risk level). A value
then becomes one number per bin: 0 below the bin, 1 above it, linear inside. The first and last bins are left
open so values beyond the training range extrapolate. The narrow bin just below such an edge gives a network a
steep ramp where the rate jumps; from a plain standardised value it only learns a smooth slope.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.tree import DecisionTreeClassifier
from torch import nn


def tree_bin_edges(
    values: np.ndarray, labels: np.ndarray, max_bins: int = 16, min_leaf_share: float = 2e-4, max_rows: int = 200_000, seed: int = 0
) -> list[list[float]]:
    """Per column of ``values (n, F)``: sorted bin edges (training min, tree split points, training max).

    ``min_leaf_share`` is the smallest bin as a share of the rows; at most ``max_rows`` rows (a random subset)
    are used. A column without a useful split gets one bin spanning its range.
    """
    rows = np.random.default_rng(seed).choice(len(values), max_rows, replace=False) if len(values) > max_rows else slice(None)
    x, y = values[rows], labels[rows]
    min_leaf = max(1, int(min_leaf_share * len(x)))
    edges = []
    for column in x.T:
        lo, hi = float(column.min()), float(column.max())
        tree = DecisionTreeClassifier(max_leaf_nodes=max(max_bins, 2), min_samples_leaf=min_leaf, random_state=seed)
        tree.fit(column.reshape(-1, 1), y)
        splits = tree.tree_.threshold[tree.tree_.feature >= 0]
        inner = sorted(float(s) for s in splits if lo < s < hi)
        edges.append([lo, *inner, hi if hi > lo else lo + 1.0])
    return edges


class PiecewiseLinearEncoding(nn.Module):
    """``(B, F)`` values -> ``(B, F * T)`` encodings, T the largest bin count (shorter features padded with 0)."""

    def __init__(self, edges: Sequence[Sequence[float]]) -> None:
        super().__init__()
        n_bins = max(len(e) - 1 for e in edges)
        left = torch.zeros(len(edges), n_bins)
        width = torch.ones(len(edges), n_bins)
        mask = torch.zeros(len(edges), n_bins)
        first = torch.zeros(len(edges), n_bins, dtype=torch.bool)
        last = torch.zeros(len(edges), n_bins, dtype=torch.bool)
        for i, e in enumerate(edges):
            e = torch.tensor(e, dtype=torch.float32)
            k = len(e) - 1
            left[i, :k], width[i, :k], mask[i, :k] = e[:-1], (e[1:] - e[:-1]).clamp_min(1e-6), 1.0
            first[i, 0], last[i, k - 1] = True, True
        self.register_buffer("left", left)
        self.register_buffer("width", width)
        self.register_buffer("mask", mask)
        self.register_buffer("open_low", first)
        self.register_buffer("open_high", last)
        self.out_dim = len(edges) * n_bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = (x.unsqueeze(-1) - self.left) / self.width
        t = torch.where(self.open_low, t.clamp(max=1.0), torch.where(self.open_high, t.clamp(min=0.0), t.clamp(0.0, 1.0)))
        # a one-bin feature is open on both sides: its value passes through, min-max scaled
        t = torch.where(self.open_low & self.open_high, (x.unsqueeze(-1) - self.left) / self.width, t)
        return (t * self.mask).flatten(1)
