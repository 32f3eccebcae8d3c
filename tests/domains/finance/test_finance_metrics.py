"""Fraud metrics: Card Precision@k, recall at a false-positive rate, torchmetrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sectorkit.domains.finance.metrics import build_metrics, card_precision_at_k, evaluate_scores, recall_at_fpr


def test_card_precision_at_k_by_hand() -> None:
    # day 0: cards a (fraud, scores .9 and .1), b (legit .8), c (fraud .2); k=2 -> top a, b -> 1/2
    # day 1: a (fraud .95) was caught on day 0 and is left out; d (fraud .7), e (legit .5) -> 1/2
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.95, 0.7, 0.5])
    labels = np.array([1, 0, 0, 1, 1, 1, 0])
    card = np.array(["a", "a", "b", "c", "a", "d", "e"])
    day = np.array([0, 0, 0, 0, 1, 1, 1])
    assert card_precision_at_k(scores, labels, card, day, k=2) == pytest.approx(0.5)
    assert card_precision_at_k(scores, labels, card, day, k=1) == pytest.approx(1.0)
    # k larger than the number of cards: precision is over k, as in the handbook
    assert card_precision_at_k(scores, labels, card, day, k=4) == pytest.approx((2 / 4 + 1 / 4) / 2)


def test_recall_at_fpr() -> None:
    labels = np.array([0] * 100 + [1] * 10)
    scores = np.r_[np.linspace(0, 0.5, 100), np.linspace(0.45, 1, 10)]
    # legit scores above 0.45 exist: at FPR <= 1 % only one legit may be above the cut
    assert recall_at_fpr(scores, labels, 0.01) == pytest.approx(0.9)
    assert recall_at_fpr(scores, labels, 0.2) == 1.0


def test_torchmetrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(3000) < 0.05).astype(int)
    scores = labels * 0.4 + rng.random(3000)
    card, day = rng.integers(0, 400, 3000), rng.integers(0, 5, 3000)
    reference = evaluate_scores(scores, labels, card, day, k=20)
    metrics = build_metrics(k=20)
    s, y = torch.tensor(scores).float(), torch.tensor(labels)
    for i in range(0, 3000, 1000):  # accumulated over batches
        for name, metric in metrics.items():
            args = (s[i:i + 1000], y[i:i + 1000]) + ((torch.tensor(card[i:i + 1000]), torch.tensor(day[i:i + 1000])) if name.startswith("cp") else ())
            metric.update(*args)
    ours = {k: float(v) for k, v in metrics.compute().items()}
    assert ours.keys() == reference.keys()
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-4), name

