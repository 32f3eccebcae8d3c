"""Forecasting networks (all map ``past (B, L, C), future (B, H, F)`` to quantiles ``(B, H, Q)``) and the
yield network."""

from domains.agriculture.models.dlinear import DLinear
from domains.agriculture.models.gru import GRUForecaster
from domains.agriculture.models.nhits import NHiTS
from domains.agriculture.models.patchtst import PatchTST

NETWORKS = {"dlinear": DLinear, "nhits": NHiTS, "gru": GRUForecaster, "patchtst": PatchTST}

__all__ = ["NETWORKS", "DLinear", "GRUForecaster", "NHiTS", "PatchTST"]
