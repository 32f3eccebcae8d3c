"""Anomaly networks (one per file, all :class:`~sectorkit.domains.healthcare.models.base.AnomalyNetwork`):
reconstruction (MONAI AutoEncoder / VarAutoEncoder), memory banks of features (PatchCore, PaDiM, AnomalyDINO; on a random
MONAI ResNet-18, a pretrained ``transformers`` backbone or a self-supervised ViT-MAE) and a supervised classifier."""
