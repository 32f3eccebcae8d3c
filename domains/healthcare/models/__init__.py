"""Anomaly models: reconstruction (MONAI AutoEncoder / VarAutoEncoder) and feature embedding (PatchCore, PaDiM)."""
