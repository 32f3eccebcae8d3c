"""Synthetic interaction logs with real structure, so every model has signal to find.

* latent tastes: users and items have ``n_factors``-dim factors; affinity is their dot product;
* long-tail popularity: a Zipf-like item bias (exponent ``popularity_exponent``);
* sequential patterns: each item has a "follow-up" item chosen next with probability ``sequential_prob``
  (a product that is bought after another), which only sequence models can exploit;
* temporal drift: each user's taste moves from a start to an end vector over their history, and item
  popularity trends up or down over the global time line.

Sequences are generated step by step, vectorised over users (Gumbel-max sampling without repeats).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def generate_interactions(
    n_users: int = 500,
    n_items: int = 400,
    n_factors: int = 8,
    mean_length: float = 25.0,
    min_length: int = 5,
    max_length: int = 80,
    popularity_exponent: float = 0.5,
    taste_strength: float = 6.0,
    sequential_prob: float = 0.3,
    drift: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """A deterministic interaction log: columns ``user, item, rating, timestamp`` (ids are strings)."""
    rng = np.random.default_rng(seed)
    max_length = min(max_length, n_items - 1)
    item_factors = rng.normal(size=(n_items, n_factors)) / np.sqrt(n_factors)
    rank = rng.permutation(n_items) + 1
    item_bias = -popularity_exponent * np.log(rank)
    item_trend = rng.normal(scale=drift, size=n_items)
    follow_up = rng.permutation(n_items)
    taste_start = rng.normal(size=(n_users, n_factors))
    taste_end = taste_start + drift * rng.normal(size=(n_users, n_factors))

    lengths = np.clip(rng.lognormal(np.log(mean_length), 0.6, size=n_users).round(), min_length, max_length).astype(int)
    start = rng.uniform(0.0, 0.5, size=n_users)
    gaps = rng.exponential(0.5 / mean_length, size=(n_users, max_length))
    times = start[:, None] + np.cumsum(gaps, axis=1)  # global time in [0, ~1]

    seen = np.zeros((n_users, n_items), dtype=bool)
    items = np.zeros((n_users, max_length), dtype=np.int64)
    affinity_at = np.zeros((n_users, max_length))
    users = np.arange(n_users)
    for step in range(max_length):
        progress = step / max(lengths.max() - 1, 1)
        taste = (1 - progress) * taste_start + progress * taste_end
        affinity = taste_strength * taste @ item_factors.T / np.sqrt(n_factors)
        logits = affinity + item_bias + np.outer(times[:, step], item_trend)
        logits[seen] = -np.inf
        choice = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        if step > 0:
            follow = follow_up[items[:, step - 1]]
            use_follow = (rng.random(n_users) < sequential_prob) & ~seen[users, follow]
            choice = np.where(use_follow, follow, choice)
        items[:, step] = choice
        affinity_at[:, step] = affinity[users, choice]
        seen[users, choice] = True

    active = np.arange(max_length)[None, :] < lengths[:, None]
    user_idx = np.broadcast_to(users[:, None], active.shape)[active]
    item_idx = items[active]
    aff = affinity_at[active]
    ratings = np.clip(np.digitize(aff, np.quantile(aff, [0.1, 0.3, 0.6, 0.85])) + 1, 1, 5).astype(float)
    width_u, width_i = len(str(n_users)), len(str(n_items))
    frame = pd.DataFrame(
        {
            "user": np.char.add("u", np.char.zfill(user_idx.astype(str), width_u)),
            "item": np.char.add("i", np.char.zfill(item_idx.astype(str), width_i)),
            "rating": ratings,
            "timestamp": np.round(1.6e9 + times[active] * 3.15e7),
        }
    )
    return frame.sort_values(["timestamp", "user"], kind="stable").reset_index(drop=True)
