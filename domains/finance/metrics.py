"""Fraud-detection metrics: ROC AUC, average precision, Card Precision@k per day and recall at a fixed
false-positive rate.

Torchmetrics classes accumulate over batches for the Lightning module; :func:`evaluate_scores` computes
the same numbers from arrays (scikit-learn) for the baselines, so model and baselines share one
definition.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinarySensitivityAtSpecificity
from torchmetrics.utilities import dim_zero_cat


def metric_names(k: int = 100, fpr: float = 0.01) -> dict[str, str]:
    """Metric names shared by model and baselines."""
    return {"ap": "ap", "auc": "auc", "cp": f"cp_at_{k}", "recall": f"recall_at_{fpr * 100:g}pct_fpr"}


def card_precision_at_k(scores: np.ndarray, labels: np.ndarray, card: np.ndarray, day: np.ndarray, k: int = 100) -> float:
    """Card Precision@k: each day, the share of fraudulent cards among the k highest-scored cards
    (a card's score/label is the max over its transactions that day), averaged over days.

    As in the handbook (section 4.3), cards already caught in an earlier day's top k are left out of
    later days (they would be blocked). The loop runs over days, not rows.
    """
    if len(scores) == 0:
        return float("nan")
    codes = pd.factorize(pd.Series(card))[0]
    frame = pd.DataFrame({"day": day, "card": codes, "score": scores, "label": labels})
    per_card = frame.groupby(["day", "card"], sort=True).agg(score=("score", "max"), label=("label", "max")).reset_index()
    caught = np.zeros(codes.max() + 1, dtype=bool)
    precisions = []
    for _, today in per_card.groupby("day", sort=True):
        today = today[~caught[today["card"].to_numpy()]]
        top = today.nlargest(k, "score", keep="first")
        hits = top.loc[top["label"] == 1, "card"].to_numpy()
        precisions.append(len(hits) / k)
        caught[hits] = True
    return float(np.mean(precisions))


def recall_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01) -> float:
    """The largest recall reachable with a false-positive rate at most ``fpr``."""
    if labels.min() == labels.max():
        return float("nan")
    false_pos, true_pos, _ = roc_curve(labels, scores)
    return float(true_pos[false_pos <= fpr].max())


def evaluate_scores(scores: np.ndarray, labels: np.ndarray, card: np.ndarray | None, day: np.ndarray, k: int = 100, fpr: float = 0.01) -> dict[str, float]:
    """All test metrics from arrays (used for baselines; the model uses :func:`build_metrics`)."""
    names = metric_names(k, fpr)
    both = labels.min() != labels.max()
    out = {
        names["ap"]: float(average_precision_score(labels, scores)) if both else float("nan"),
        names["auc"]: float(roc_auc_score(labels, scores)) if both else float("nan"),
        names["recall"]: recall_at_fpr(scores, labels, fpr),
    }
    if card is not None:
        out[names["cp"]] = card_precision_at_k(scores, labels, card, day, k)
    return out


class CardPrecisionAtK(Metric):
    """Card Precision@k per day, averaged over days; ``update(scores, labels, card, day)``."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, k: int = 100, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = k
        for name in ("scores", "labels", "card", "day"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, labels: torch.Tensor, card: torch.Tensor, day: torch.Tensor) -> None:
        self.scores.append(scores.detach().float().flatten())
        self.labels.append(labels.detach().float().flatten())
        self.card.append(card.detach().long().flatten())
        self.day.append(day.detach().long().flatten())

    def compute(self) -> torch.Tensor:
        arrays = [dim_zero_cat(s).cpu().numpy() for s in (self.scores, self.labels, self.card, self.day)]
        return torch.tensor(card_precision_at_k(*arrays, k=self.k), dtype=torch.float32)


def _one_class(target: list[torch.Tensor] | torch.Tensor) -> bool:
    """Whether the accumulated targets hold a single class (or none): AP, ROC AUC and recall are then undefined."""
    values = dim_zero_cat(target) if isinstance(target, list) else target
    return values.numel() == 0 or bool(values.min() == values.max())


class UndefinedAsNaN:
    """Mixin for a torchmetrics binary metric: NaN instead of torchmetrics' 0 (and its warning) when the targets
    hold one class only, e.g. a test window without any fraud."""

    def compute(self) -> torch.Tensor:
        if _one_class(self.target):
            return torch.tensor(float("nan"))
        return super().compute()


class RecallAtFPR(BinarySensitivityAtSpecificity):
    """Recall (sensitivity) at a false-positive rate of at most ``fpr`` (specificity >= 1 - fpr)."""

    def __init__(self, fpr: float = 0.01, **kwargs) -> None:
        super().__init__(min_specificity=1.0 - fpr, **kwargs)

    def compute(self) -> torch.Tensor:  # the parent returns (sensitivity, threshold)
        return super().compute()[0]


class AveragePrecisionOrNaN(UndefinedAsNaN, BinaryAveragePrecision):
    """Average precision; NaN when the targets hold one class."""


class AUROCOrNaN(UndefinedAsNaN, BinaryAUROC):
    """ROC AUC; NaN when the targets hold one class."""


class RecallAtFPROrNaN(UndefinedAsNaN, RecallAtFPR):
    """Recall at a false-positive rate; NaN when the targets hold one class."""


def build_metrics(k: int = 100, fpr: float = 0.01, with_cards: bool = True, undefined_as_nan: bool = False) -> MetricCollection:
    """The model's accumulating metrics (CardPrecisionAtK is fed separately: it needs card and day).

    ``undefined_as_nan``: AP, AUC and recall are NaN where they cannot be computed (targets of one class), as for
    the baselines (:func:`evaluate_scores`); the module uses it for the test split. Validation keeps torchmetrics'
    0, which early stopping and checkpointing can compare.
    """
    names = metric_names(k, fpr)
    if undefined_as_nan:
        metrics = {names["ap"]: AveragePrecisionOrNaN(), names["auc"]: AUROCOrNaN(), names["recall"]: RecallAtFPROrNaN(fpr)}
    else:
        metrics = {names["ap"]: BinaryAveragePrecision(), names["auc"]: BinaryAUROC(), names["recall"]: RecallAtFPR(fpr)}
    if with_cards:
        metrics[names["cp"]] = CardPrecisionAtK(k)
    return MetricCollection(metrics, compute_groups=False)
