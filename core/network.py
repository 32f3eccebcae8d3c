"""What every domain network is: an ``nn.Module`` that declares what it needs, built from config.

A model config names the domain's LightningModule and nests its network as ``net: {_target_: ..., ...}``;
the module builds it with :func:`build_network`, adding the sizes it learns from the data. The class
attributes of :class:`Network` tell the module and the data module how to train it, so a user never pairs
settings by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from torch import nn

from sectorkit.core.errors import ConfigError


class Network(nn.Module):
    """Base class of every domain network.

    ``input_type``: the batch layout the network trains on (each domain documents its values, e.g. retail's
    ``pairwise``, ``pointwise``, ``user_vector``, ``sequence``); the data module reads it to build batches.
    ``memory_bank``: fitted by storing training features (no optimizer, no gradient steps).
    ``needs_graph``: needs the training interaction graph before fitting.
    ``supervised``: trained on labels (False: on normal data only, e.g. autoencoders).
    """

    input_type: ClassVar[str] = "features"
    memory_bank: ClassVar[bool] = False
    needs_graph: ClassVar[bool] = False
    supervised: ClassVar[bool] = True


def network_class(net: Mapping[str, Any] | None, key: str = "model.net") -> type[Network]:
    """The class a ``net`` config names in ``_target_``, checked to be a :class:`Network`, without building it."""
    if not net or "_target_" not in net:
        raise ConfigError(f"{key}._target_ is not set: name the network class, e.g. {key}._target_=<package>.models.<file>.<Class>")
    target = str(net["_target_"])
    try:
        cls = get_class(target)
    except (ImportError, ValueError, InstantiationException) as err:
        raise ConfigError(f"{key}._target_={target!r}: cannot import it ({str(err).splitlines()[0]})") from None
    if not (isinstance(cls, type) and issubclass(cls, Network)):
        raise ConfigError(f"{key}._target_={target!r}: not a network (expected a subclass of sectorkit.core.network.Network)")
    return cls


def build_network(net: Mapping[str, Any], key: str = "model.net", **sizes: Any) -> Network:
    """Instantiate the ``net`` config with the data-dependent ``sizes`` (e.g. ``n_items``, ``in_channels``).

    A wrong or missing argument becomes one ConfigError naming ``key`` and the class.
    """
    cls = network_class(net, key)
    try:
        return instantiate(dict(net), **sizes, _convert_="all")
    except (TypeError, InstantiationException) as err:
        message = str(err.__cause__ or err).splitlines()[0]
        raise ConfigError(f"{key}: cannot build {cls.__name__} ({message})") from None


class MemberEnsemble(nn.Module):
    """``members`` independently initialised copies of one network, trained side by side and stored as one module
    (one checkpoint, one exported graph). ``forward`` stacks the members' outputs on a new first dimension; the
    caller combines them (mean of probabilities, of quantiles, ...)."""

    def __init__(self, build: Callable[[], nn.Module], members: int) -> None:
        super().__init__()
        if int(members) < 1:
            raise ConfigError(f"model.ensemble={members!r}: expected a whole number >= 1 (networks trained side by side)")
        self.members = nn.ModuleList(build() for _ in range(int(members)))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(*inputs) for member in self.members])
