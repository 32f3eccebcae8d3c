"""Healthcare: medical image anomaly detection (MONAI pipeline, reconstruction and memory-bank models, kNN/PCA baselines)."""

from __future__ import annotations

from sectorkit.core.registry import Domain, lazy

DOMAIN = Domain(
    name="healthcare",
    description="Medical image anomaly detection: image AUROC (pixel AUROC, AUPRO, Dice where masks exist).",
    package=__name__,
    schemas=lazy("sectorkit.domains.healthcare.schemas:register"),
    baselines=lazy("sectorkit.domains.healthcare.baselines:run_baselines"),
    report=lazy("sectorkit.domains.healthcare.report:build_report"),
)
