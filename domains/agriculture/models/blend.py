"""A weighted blend of two trained weather forecasters, stored and exported as one network.

``model=auto`` builds it from the two candidates with the best validation MAE (``auto.blend=true``). A weather
candidate's forecast is more than its network: the module adds its per-series adapter, its ridge reference or
combination and its series embedding. So each member here is the whole trained candidate
(:class:`~sectorkit.domains.agriculture.weather.module.WeatherForecaster` with its own settings and weights), and
the blend averages the members' quantile forecasts before calibration, quantile by quantile:
``weight * first + (1 - weight) * second`` in the scaled units the module works in (quantile averaging, the
standard combination of quantile forecasts). The weight is chosen on the validation split by ``model=auto``;
nothing is trained. The module around the blend has no terms of its own (no adapter, ridge or embedding) and
fits its interval calibration on the blend's validation residuals, as every candidate does. A convex combination
of non-crossing quantiles does not cross; a cumulative maximum over the quantiles guarantees it in any case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from sectorkit.core.errors import ConfigError
from sectorkit.core.module import plain_container
from sectorkit.domains.agriculture.models.common import WindowForecaster
from torch import nn

# the member module's settings a blend keeps (its sizes, network and per-series terms; not its optimizer)
MEMBER_KEYS = ("net", "lookback", "horizon", "n_past", "n_future", "n_series", "quantiles", "calibrate", "local_lags",
               "local_covariates", "covariates", "reference", "ridge_combination", "ensemble", "series_embedding")
# the module around the blend: no per-series terms of its own (each member keeps its own)
BLEND_MODULE = {"ensemble": 1, "local_lags": 0, "local_covariates": [], "reference": "none", "ridge_combination": 0.0,
                "series_embedding": 0}
CALIBRATION_KEYS = ("calibration", "band", "band_weight")  # the module's interval buffers, refitted on validation


class QuantileBlend(WindowForecaster):
    """``members``: two trained weather modules' settings (as their checkpoints hold them, ``MEMBER_KEYS``);
    ``weight``: the first member's share. ``forward(past, future, series) -> (B, H, Q)`` scaled quantiles."""

    memory_bank = True  # composed from trained members: no optimizer, no gradient steps
    takes_series = True  # the members' per-series terms need each window's series index
    blend_summary: ClassVar[str] = "quantile forecasts averaged before calibration"

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_past: int,
        n_future: int,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        n_series: int = 1,
        members: Sequence[dict[str, Any]] = (),
        weight: float = 0.5,
    ) -> None:
        super().__init__()
        from sectorkit.domains.agriculture.weather.module import WeatherForecaster  # the module imports the networks

        members = plain_container(list(members))
        if len(members) != 2:
            raise ConfigError(f"model.net.members: a blend takes two trained weather models, got {len(members)}")
        expected = {"lookback": int(lookback), "horizon": int(horizon), "n_series": int(n_series),
                    "quantiles": [float(q) for q in quantiles]}
        built = []
        for index, member in enumerate(members):
            settings = {k: v for k, v in dict(member).items() if k in MEMBER_KEYS}
            got = {"lookback": int(settings.get("lookback", -1)), "horizon": int(settings.get("horizon", -1)),
                   "n_series": int(settings.get("n_series", -1)), "quantiles": [float(q) for q in settings.get("quantiles", [])]}
            if got != expected:
                raise ConfigError(f"model.net.members.{index}: trained for {got}, but the data gives {expected}; blend members "
                                  "must be trained on the same data settings")
            built.append(WeatherForecaster(**settings))
        self.members = nn.ModuleList(built)
        self.members.requires_grad_(False)
        self.register_buffer("weights", torch.tensor([float(weight), 1.0 - float(weight)]))

    def forward(self, past: torch.Tensor, future: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        blended = torch.zeros((), device=past.device)
        for weight, member in zip(self.weights, self.members):
            blended = blended + weight * member.network_output(past, future, series)
        ordered = [blended[..., 0]]  # non-crossing quantiles (a no-op for non-crossing members)
        for q in range(1, blended.shape[-1]):
            ordered.append(torch.maximum(ordered[-1], blended[..., q]))
        return torch.stack(ordered, dim=-1)

    @classmethod
    def blend_parts(cls, members: Sequence[dict[str, Any]], weight: float) -> dict[str, Any]:
        """How ``model=auto`` composes two weather checkpoints (``sectorkit.core.auto.blend_checkpoint``): each
        member's whole module (settings and every weight: network, adapter, ridge, embedding, intervals) under
        ``net.members.0.members.<i>.``, the weight as ``net.members.0.weights``, and the module around it without
        per-series terms of its own; its interval buffers start as the first member's and are refitted on the
        validation split when ``model=auto`` scores the blend."""
        configs, state = [], {}
        for index, member in enumerate(members):
            hyper = member["hyper_parameters"]
            configs.append({k: plain_container(hyper[k]) for k in MEMBER_KEYS if k in hyper})
            state.update({f"net.members.0.members.{index}.{k}": v for k, v in member["state_dict"].items()})
        state["net.members.0.weights"] = torch.tensor([float(weight), 1.0 - float(weight)])
        state.update({k: members[0]["state_dict"][k].clone() for k in CALIBRATION_KEYS})
        return {"members": configs, "state_dict": state, "hyper_parameters": dict(BLEND_MODULE)}
