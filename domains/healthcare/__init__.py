"""Healthcare: medical image anomaly detection (MONAI pipeline, reconstruction models, kNN/PCA baselines)."""

from __future__ import annotations

from typing import Any

from sectorkit.core.registry import Domain, lazy


def run_baselines(datamodule: Any, cfg: Any) -> dict[str, dict[str, float]]:
    """Test metrics of the kNN and PCA baselines on the run's test split (same metric names as the model)."""
    from sectorkit.domains.healthcare.baselines import run_baselines as run

    model_cfg = cfg.get("model", {}) if cfg is not None else {}
    results = run(datamodule, threshold=model_cfg.get("threshold", "f1"), fpr=model_cfg.get("fpr", 0.05))
    return {name: result["metrics"] for name, result in results.items()}



DOMAIN = Domain(
    name="healthcare",
    description="Medical image anomaly detection: image AUROC (pixel AUROC, AUPRO, Dice where masks exist).",
    package=__name__,
    baselines=run_baselines,
    report=lazy("sectorkit.domains.healthcare.report:build_report"),
)
