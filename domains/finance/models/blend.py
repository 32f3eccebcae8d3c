"""A weighted blend of two trained fraud networks' probabilities, stored and exported as one network.

``model=auto`` builds it from the two candidates with the best validation AP (``auto.blend=true``): each member
keeps its trained weights (a gradient-boosted trees network, the logistic regression, an MLP ensemble, ...) and
gives the probability its own run scores with (the mean of its ensemble members' sigmoids), and the blend's
fraud probability is ``weight * p_first + (1 - weight) * p_second``, ``weight`` chosen on the validation split
(``auto.blend_weights``). Probabilities share one scale across model kinds, so no per-row standardisation is
needed (retail's blend standardises per user). Nothing is trained. The network returns the logit of the blended
probability, computed in log space so that probabilities near 0 or 1 keep their order, and the module turns it
back into the probability as for any network. One checkpoint and one exported graph hold both members.

Each member is rebuilt as its own run built it: ``blend_parts`` (what ``model=auto``'s ``blend_checkpoint`` calls)
stores, with each member's ``net`` config, how many networks it trained side by side (``model.ensemble``) and the
bin edges it was built on (``piecewise_linear``), and sets the blend module's own ``ensemble`` to 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from sectorkit.core.errors import ConfigError
from sectorkit.core.module import plain_container
from sectorkit.core.network import MemberEnsemble, build_network, network_class
from sectorkit.domains.finance.models.base import FraudNetwork, fraud_network
from torch import nn


class ProbabilityBlend(FraudNetwork):
    """``members``: per member, ``{"net": its net config, "ensemble": copies side by side, "bin_edges": its bin edges or
    null}`` (``blend_parts``; a bare ``net`` config is read as one copy); ``weight``: the first member's share."""

    memory_bank = True  # composed from trained members: no optimizer, no gradient steps
    blend_summary = "probabilities averaged"  # how the members' scores are combined (model=auto's note)

    def __init__(self, n_numeric: int, cardinalities: list[int], members: list[dict[str, Any]], weight: float = 0.5) -> None:
        super().__init__()
        if len(members) != 2:
            raise ConfigError(f"model.net.members: a blend takes two member networks, got {len(members)}")
        built = []
        for index, member in enumerate(members):
            key = f"model.net.members.{index}"
            member = dict(member) if "net" in member else {"net": dict(member)}
            cls = fraud_network(network_class(member["net"], f"{key}.net"), f"{key}.net")
            if not cls.supervised:
                raise ConfigError(f"{key}: a blend takes supervised networks (probabilities), not an anomaly scorer")
            sizes: dict[str, Any] = {"n_numeric": int(n_numeric), "cardinalities": [int(c) for c in cardinalities]}
            if cls.uses_bin_edges:
                sizes["bin_edges"] = member.get("bin_edges")
            copies = int(member.get("ensemble", 1))
            if copies > 1:
                built.append(MemberEnsemble(lambda m=member, s=sizes, k=key: build_network(m["net"], f"{k}.net", **s), copies))
            else:
                built.append(build_network(member["net"], f"{key}.net", **sizes))
        self.members = nn.ModuleList(built)
        self.register_buffer("weights", torch.tensor([float(weight), 1.0 - float(weight)]))

    @classmethod
    def blend_parts(cls, members: Sequence[dict[str, Any]], weight: float) -> dict[str, Any]:
        """How ``model=auto`` composes two finance checkpoints (``sectorkit.core.auto.blend_checkpoint``): each member's
        ``net.*`` weights under ``net.members.<i>.``, its ``net`` config with its ensemble size and bin edges, the weight
        as ``net.weights``, and the module around them with ``ensemble=1`` (the members keep their own copies)."""
        configs, state = [], {}
        for index, member in enumerate(members):
            hyper = member["hyper_parameters"]
            configs.append({"net": plain_container(hyper["net"]), "ensemble": int(hyper.get("ensemble", 1)),
                            "bin_edges": plain_container(hyper.get("bin_edges"))})
            state.update({f"net.members.{index}.{k.removeprefix('net.')}": v for k, v in member["state_dict"].items() if k.startswith("net.")})
        state.update({k: v for k, v in members[0]["state_dict"].items() if not k.startswith("net.")})  # scaling, threshold
        state["net.weights"] = torch.tensor([float(weight), 1.0 - float(weight)])
        return {"members": configs, "state_dict": state, "hyper_parameters": {"ensemble": 1}}

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        weights = self.weights.clamp(1e-12, 1.0).log()
        log_p, log_q = [], []  # log p and log (1 - p) of each member's probability p, shifted by its log weight
        for weight, member in zip(weights, self.members):
            logits = member(numeric, categorical)
            logits = logits.reshape(-1, logits.shape[-1])  # (rows averaged, batch): ensemble copies, stacked members
            shift = weight - math.log(logits.shape[0]) if logits.shape[0] > 1 else weight
            log_p.append(torch.logsumexp(-nn.functional.softplus(-logits), dim=0) + shift)  # log sigmoid(l) = -softplus(-l)
            log_q.append(torch.logsumexp(-nn.functional.softplus(logits), dim=0) + shift)
        return torch.logsumexp(torch.stack(log_p), dim=0) - torch.logsumexp(torch.stack(log_q), dim=0)

    def fit(self, arrays: Any) -> None:
        """Nothing to fit: the members were trained in their own runs."""
