"""Forecasting networks (all map ``past (B, L, C), future (B, H, F)`` to quantiles ``(B, H, Q)``) and the
yield network."""

from sectorkit.domains.agriculture.models.dlinear import DLinear
from sectorkit.domains.agriculture.models.gru import GRUForecaster
from sectorkit.domains.agriculture.models.nhits import NHiTS
from sectorkit.domains.agriculture.models.patchtst import PatchTST

NETWORKS = {"dlinear": DLinear, "nhits": NHiTS, "gru": GRUForecaster, "patchtst": PatchTST}

__all__ = ["NETWORKS", "DLinear", "GRUForecaster", "NHiTS", "PatchTST"]
