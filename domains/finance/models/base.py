"""What every fraud-scoring network is: a :class:`~sectorkit.core.network.Network` taking (numeric features,
categorical codes) and returning one logit (supervised) or anomaly score (unsupervised) per transaction."""

from __future__ import annotations

from typing import ClassVar

from sectorkit.core.errors import ConfigError
from sectorkit.core.network import Network


class FraudNetwork(Network):
    """Base class of the finance networks.

    ``uses_bin_edges``: reads the target-aware bin edges of the numeric features (``data.numeric_bins``); the data
    module fits them on the training window only for such networks and the module passes them as ``bin_edges``.
    ``stacked_members``: ``forward`` returns one row of scores per ensemble member, ``(members, batch)`` (a network
    that is an ensemble itself, e.g. TabM); the module trains every row and averages their probabilities.
    """

    uses_bin_edges: ClassVar[bool] = False
    stacked_members: ClassVar[bool] = False


def fraud_network(cls: type[Network], key: str = "model.net") -> type[FraudNetwork]:
    """``cls`` checked to be a finance network."""
    if not issubclass(cls, FraudNetwork):
        raise ConfigError(f"{key}._target_: {cls.__name__} is not a finance network (expected a subclass of {__name__}.FraudNetwork)")
    return cls
