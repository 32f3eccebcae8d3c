"""The `model.net` nodes of the weather networks, for the agriculture tests."""

from __future__ import annotations

from typing import Any

NETWORKS = {
    "gru": "sectorkit.domains.agriculture.models.gru.GRUForecaster",
    "dlinear": "sectorkit.domains.agriculture.models.dlinear.DLinear",
    "nhits": "sectorkit.domains.agriculture.models.nhits.NHiTS",
    "patchtst": "sectorkit.domains.agriculture.models.patchtst.PatchTST",
}


def net(name: str, **options: Any) -> dict[str, Any]:
    """The ``model.net`` node of a weather network (``gru``, ``dlinear``, ``nhits``, ``patchtst``) with ``options``."""
    return {"_target_": NETWORKS[name], **options}
