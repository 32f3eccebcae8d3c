"""Anomaly networks (one per file, all :class:`~sectorkit.domains.healthcare.models.base.AnomalyNetwork`):
reconstruction (MONAI AutoEncoder / VarAutoEncoder), memory banks of features (PatchCore, PaDiM) and a supervised classifier."""
