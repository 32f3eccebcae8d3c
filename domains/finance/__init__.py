"""Finance: transaction fraud detection (primary metric: average precision)."""

from __future__ import annotations

from typing import Any

from sectorkit.core.baselines import BaselineResult
from sectorkit.core.registry import Domain, lazy


def run_baselines(datamodule: Any, cfg: Any) -> dict[str, BaselineResult]:
    """Logistic regression, HistGradientBoosting and LightGBM fitted on the run's training window: their test
    metrics (named as the model's) and their fraud scores on the test rows. ``baselines.names``: null (absent) =
    all, ``[]`` = none."""
    from sectorkit.domains.finance.baselines import baseline_names, datamodule_baselines
    from sectorkit.domains.finance.metrics import evaluate_scores

    settings = dict(cfg.get("baselines") or {})
    names = baseline_names(settings.get("names"))
    if not names:
        return {}
    params = {k: dict(v) for k, v in dict(settings.get("params") or {}).items()}
    k, fpr = int(cfg.model.top_k), float(cfg.model.fpr)
    scores = datamodule_baselines(datamodule, names, seed=int(datamodule.seed), params=params)
    test = datamodule.datasets["test"].tensors
    card = test["card"].numpy() if datamodule.spec.card else None
    labels = test["target"].numpy()
    return {name: BaselineResult(evaluate_scores(s, labels, card, test["day"].numpy(), k, fpr), predictions=s) for name, s in scores.items()}


DOMAIN = Domain(
    name="finance",
    description="Transaction fraud detection: simulator after Le Borgne et al., leakage-free window features, time-based splits.",
    package=__name__,
    schemas=lazy("sectorkit.domains.finance.schemas:register"),
    baselines=run_baselines,
    report=lazy("sectorkit.domains.finance.report:build_report"),
)
