"""Retail: product recommendations (implicit feedback, full-ranking NDCG@10)."""

from __future__ import annotations

from sectorkit.core.registry import Domain, lazy

DOMAIN = Domain(
    name="retail",
    description="Product recommendations: BPR-MF, LightGCN, NeuMF, Mult-VAE, SASRec vs MostPop/ItemKNN/EASE under full ranking.",
    package=__name__,
    schemas=lazy("sectorkit.domains.retail.schemas:register"),
    baselines=lazy("sectorkit.domains.retail.baselines:run_baselines"),
    report=lazy("sectorkit.domains.retail.report:build_report"),
)
