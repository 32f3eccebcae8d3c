"""Finance: transaction fraud detection (primary metric: average precision)."""

from __future__ import annotations

from typing import Any

from sectorkit.core.registry import Domain, lazy


def run_baselines(datamodule: Any, cfg: Any) -> dict[str, dict[str, float]]:
    """Logistic regression and HistGradientBoosting fitted on the run's training window, scored on its test
    window with the model's metric names; their scores are kept on the datamodule for the report."""
    from sectorkit.domains.finance.baselines import BASELINES, fit_predict_baselines
    from sectorkit.domains.finance.metrics import evaluate_scores

    settings = dict((cfg.get("baselines") if cfg is not None else None) or {})
    names = list(settings.get("names") or BASELINES)
    params = {k: dict(v) for k, v in dict(settings.get("params") or {}).items()}
    model_cfg = (cfg.get("model") if cfg is not None else None) or {}
    k, fpr = int(model_cfg.get("top_k", 100)), float(model_cfg.get("fpr", 0.01))
    x, c, y = datamodule.arrays("train")
    xt, ct, yt = datamodule.arrays("test")
    scores = fit_predict_baselines(x, c, y, xt, ct, names=names, seed=int(getattr(datamodule, "seed", 0)), params=params)
    datamodule.baseline_scores = scores
    test = datamodule.datasets["test"].tensors
    card = test["card"].numpy() if datamodule.spec.card else None
    return {name: evaluate_scores(s, yt, card, test["day"].numpy(), k, fpr) for name, s in scores.items()}



DOMAIN = Domain(
    name="finance",
    description="Transaction fraud detection: simulator after Le Borgne et al., leakage-free window features, time-based splits.",
    package=__name__,
    baselines=run_baselines,
    report=lazy("sectorkit.domains.finance.report:build_report"),
)
