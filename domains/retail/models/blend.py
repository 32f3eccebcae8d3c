"""A weighted blend of two trained recommendation networks, stored and exported as one network.

``model=auto`` builds it from the two candidates with the best validation scores (``auto.blend=true``): the
members keep their trained weights, each member's scores are standardised per user (mean 0, standard
deviation 1 over the catalogue, so an EASE score and a Mult-VAE logit are on one scale) and the blend is
``weight * first + (1 - weight) * second``, ``weight`` chosen on the validation split. Nothing is trained: the
members are composed as :class:`~sectorkit.core.network.MemberEnsemble` composes copies, so one checkpoint and
one exported graph hold both. Each member reads the known history it declares (``history_input``).
"""

from __future__ import annotations

from typing import Any

import torch
from sectorkit.core.errors import ConfigError
from sectorkit.core.network import build_network, network_class
from sectorkit.domains.retail.models.base import RecommenderNetwork, recommender_network
from torch import nn


class ScoreBlend(RecommenderNetwork):
    """``members``: the members' ``net`` configs (as their checkpoints hold them); ``weight``: the first member's share."""

    input_type = "user_vector"
    loss_type = "closed_form"
    memory_bank = True  # composed from trained members: no optimizer, no gradient steps
    needs_graph = True
    history_input = "full"

    def __init__(self, n_users: int, n_items: int, members: list[dict[str, Any]], weight: float = 0.5) -> None:
        super().__init__()
        if len(members) != 2:
            raise ConfigError(f"model.net.members: a blend takes two member networks, got {len(members)}")
        for index, member in enumerate(members):
            cls = recommender_network(network_class(member, f"model.net.members.{index}"), f"model.net.members.{index}")
            if cls.input_type == "sequence":
                raise ConfigError(f"model.net.members.{index}: {cls.__name__} reads a fixed-length recent history; blends take "
                                  "non-sequential networks")
        self.n_users, self.n_items = n_users, n_items
        self.members = nn.ModuleList(build_network(m, f"model.net.members.{i}", n_users=n_users, n_items=n_items)
                                     for i, m in enumerate(members))
        self.register_buffer("weights", torch.tensor([float(weight), 1.0 - float(weight)]))

    def set_graph(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Hand the training interactions to the members that need them (graphs, training rows)."""
        for member in self.members:
            if member.needs_graph:
                member.set_graph(users, items)

    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """The weighted sum of the members' per-user standardised scores."""
        blended = torch.zeros((), device=history.device)
        for weight, member in zip(self.weights, self.members):
            scores = member.score_all(users, history)
            scores = (scores - scores.mean(1, keepdim=True)) / (scores.std(1, keepdim=True) + 1e-8)
            blended = blended + weight * scores
        return blended

    def loss(self, users: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a blend is composed from trained members; it has no training loss")
