"""Choosing a decision threshold on validation scores: one rule set for every domain that flags cases.

``f1``: the threshold with the highest F1 (needs both classes in the validation split). ``cost``: the one
minimising ``cost_missed * FN + cost_alert * (TP + FP)`` (every alert is investigated). ``fpr``: the
quantile of the normal validation scores that flags a share ``fpr`` of normal cases. When the validation
split holds no positive (a common layout: normal-only validation folders), ``f1`` and ``cost`` fall back
to ``fpr``; the returned :class:`Threshold` says which rule was used, so runs can report it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sectorkit.core.errors import ConfigError

RULES = ("f1", "cost", "fpr")


@dataclass(frozen=True)
class Threshold:
    """A threshold (flag when ``score >= value``) and the rule that chose it, in words.

    ``value`` is representable in float32 and never below the chosen value, so a float32 threshold buffer
    flags exactly the (float32) scores the rule flags: plain rounding could flag the top score under a
    "flag nothing" threshold.
    """

    value: float
    rule: str

    def __post_init__(self) -> None:
        rounded = np.float32(self.value)
        if float(rounded) < self.value:
            rounded = np.nextafter(rounded, np.float32(np.inf))
        object.__setattr__(self, "value", float(rounded))


def choose_threshold(
    scores: np.ndarray,
    labels: np.ndarray | None = None,
    rule: str = "f1",
    fpr: float = 0.05,
    cost_missed: float = 100.0,
    cost_alert: float = 1.0,
    key: str = "model.threshold",
) -> Threshold:
    """The threshold chosen on validation ``scores`` (``labels``: 1 positive, 0 normal; None: all normal)."""
    if rule not in RULES:
        raise ConfigError(f"{key}={rule!r}: expected one of {', '.join(RULES)}")
    if not 0.0 < fpr < 1.0:
        raise ConfigError(f"{key}: fpr={fpr!r}: expected a false-positive rate between 0 and 1")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.zeros_like(scores) if labels is None else np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(scores) == 0:
        return Threshold(0.5, "default 0.5 (no validation scores)")
    positives = labels.sum()
    if rule in ("f1", "cost") and not 0 < positives < len(labels):
        normal = scores[labels == 0] if positives < len(labels) else scores
        return Threshold(_quantile(normal, fpr), f"{rule} impossible (validation has {'no positives' if positives == 0 else 'only positives'}): "
                                                 f"normal-score quantile, false-positive rate {fpr:g}")
    if rule == "fpr":
        normal = scores[labels == 0] if positives < len(labels) else scores
        return Threshold(_quantile(normal, fpr), f"normal-score quantile, false-positive rate {fpr:g}")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[s[1:] != s[:-1], True]  # flag every case down to each distinct score
    tp, fp, thresholds = np.cumsum(y)[last], np.cumsum(1 - y)[last], s[last]
    if rule == "f1":
        f1 = np.divide(2 * tp, tp + fp + positives, out=np.zeros_like(tp), where=(tp + fp + positives) > 0)
        return Threshold(float(thresholds[int(np.argmax(f1))]), "best F1 on validation")
    cost = cost_missed * (positives - tp) + cost_alert * (tp + fp)
    best = int(np.argmin(cost))
    if cost_missed * positives <= cost[best]:  # flagging nothing is cheapest
        return Threshold(float(np.nextafter(s[0], np.inf)), "lowest cost on validation (flag nothing)")
    return Threshold(float(thresholds[best]), "lowest cost on validation")


def _quantile(normal: np.ndarray, fpr: float) -> float:
    return float(np.quantile(normal, 1.0 - fpr))
