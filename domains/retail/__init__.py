"""Retail: product recommendations (implicit feedback, full-ranking NDCG@10)."""

from __future__ import annotations

from typing import Any

from sectorkit.core.registry import Domain, lazy


def run_baselines(datamodule: Any, cfg: Any) -> dict[str, dict[str, float]]:
    """MostPop, ItemKNN and EASE on the run's test split (train + validation items masked), same metric names."""
    from omegaconf import OmegaConf

    from sectorkit.domains.retail.baselines import run_baselines as evaluate

    settings = OmegaConf.to_container(cfg.baselines, resolve=True) if cfg.get("baselines") else {}
    names = settings.pop("names", None)
    return evaluate(datamodule, list(cfg.metrics.ks), names, settings)



DOMAIN = Domain(
    name="retail",
    description="Product recommendations: BPR-MF, LightGCN, NeuMF, SASRec vs MostPop/ItemKNN/EASE under full ranking.",
    package=__name__,
    baselines=run_baselines,
    report=lazy("sectorkit.domains.retail.report:build_report"),
)
