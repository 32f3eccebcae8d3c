"""The shared model pieces: networks built from a ``net`` config, ensembles, thresholds, memory banks without an
optimizer, the validation calibration hook and a failing baseline that never costs the model's results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from sectorkit.core.baselines import BaselineResult
from sectorkit.core.errors import ConfigError
from sectorkit.core.module import SectorModule
from sectorkit.core.network import MemberEnsemble, Network, build_network, network_class
from sectorkit.core.pipeline import fit_baselines
from sectorkit.core.registry import Domain
from sectorkit.core.thresholds import choose_threshold


class Affine(Network):
    input_type = "features"

    def __init__(self, n_features: int, scale: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.linear(features).squeeze(-1)


class Bank(Network):
    memory_bank = True
    supervised = False

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("stored", torch.zeros(0, n_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cdist(features, self.stored).min(1).values if len(self.stored) else features.sum(1)


AFFINE = f"{__name__}.Affine"


def test_build_network_adds_data_sizes_and_names_the_key_on_errors() -> None:
    net = build_network({"_target_": AFFINE, "scale": 2.0}, n_features=3)
    assert isinstance(net, Affine) and net.linear.in_features == 3 and net.scale == 2.0
    assert network_class({"_target_": AFFINE}) is Affine and Affine.supervised and not Affine.memory_bank
    with pytest.raises(ConfigError, match=r"model\.net: cannot build Affine \(.*widht"):
        build_network({"_target_": AFFINE, "widht": 3}, n_features=3)
    with pytest.raises(ConfigError, match=r"model\.net\._target_='subprocess\.Popen': not a network"):
        build_network({"_target_": "subprocess.Popen", "args": "true"})
    with pytest.raises(ConfigError, match=r"model\.net\._target_='no\.such\.Net': cannot import it"):
        network_class({"_target_": "no.such.Net"})
    with pytest.raises(ConfigError, match=r"model\.net\._target_ is not set"):
        network_class({})


def test_member_ensemble_stacks_independent_members() -> None:
    torch.manual_seed(0)
    ensemble = MemberEnsemble(lambda: build_network({"_target_": AFFINE}, n_features=4), 3)
    out = ensemble(torch.randn(5, 4))
    assert out.shape == (3, 5) and not torch.allclose(out[0], out[1])
    with pytest.raises(ConfigError, match=r"model\.ensemble=0"):
        MemberEnsemble(lambda: Affine(4), 0)


def test_thresholds_f1_cost_and_the_normal_only_fallback() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.35], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1, 0])
    best = choose_threshold(scores, labels, "f1")
    assert best.value == float(np.float32(0.8)) and best.rule == "best F1 on validation"
    assert choose_threshold(scores, labels, "cost", cost_missed=100, cost_alert=1).value == best.value
    nothing = choose_threshold(scores, labels, "cost", cost_missed=0.1, cost_alert=10)
    assert nothing.value > scores.max() and "flag nothing" in nothing.rule
    normal = np.linspace(0, 1, 1001)
    fallback = choose_threshold(normal, np.zeros_like(normal), "f1", fpr=0.05)
    assert fallback.value == pytest.approx(0.95) and "no positives" in fallback.rule and "0.05" in fallback.rule
    assert choose_threshold(normal, None, "fpr", fpr=0.1).value == pytest.approx(0.9)
    with pytest.raises(ConfigError, match=r"model\.threshold='youden': expected one of f1, cost, fpr"):
        choose_threshold(scores, labels, "youden")


class Calibrated(SectorModule):
    """Chooses a threshold on validation scores through the shared hook."""

    def __init__(self, net: dict) -> None:
        super().__init__()
        self.net = build_network(net, n_features=2)
        self.register_buffer("threshold", torch.tensor(0.0))
        self.calibrated: list[int] = []

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"mean": MeanMetric()})

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def training_loss(self, batch: dict) -> torch.Tensor:
        return self(batch["inputs"]).mean()

    def update_metrics(self, metrics: MetricCollection, batch: dict) -> None:
        metrics.update(self(batch["inputs"]))

    def validation_outputs(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"score": self(batch["inputs"]), "target": batch["target"]}

    def calibrate(self, outputs: dict[str, torch.Tensor]) -> None:
        self.calibrated.append(len(outputs["score"]))
        self.threshold.fill_(choose_threshold(outputs["score"].numpy(), outputs["target"].numpy()).value)


def test_calibrate_sees_every_validation_batch_concatenated() -> None:
    module = Calibrated({"_target_": AFFINE})
    batches = [{"inputs": torch.randn(4, 2), "target": torch.tensor([0, 1, 0, 1])} for _ in range(3)]
    for index, batch in enumerate(batches):
        module.validation_step(batch, index)
    module.log_dict = lambda *args, **kwargs: None  # outside a Trainer
    module.on_validation_epoch_end()
    assert module.calibrated == [12]
    scores = torch.cat([module(b["inputs"]) for b in batches]).detach().numpy()
    targets = torch.cat([b["target"] for b in batches]).numpy()
    assert float(module.threshold) == choose_threshold(scores, targets).value


def test_a_memory_bank_trains_without_an_optimizer() -> None:
    module = Calibrated({"_target_": f"{__name__}.Bank"})
    assert module.configure_optimizers() is None
    assert module.net.memory_bank and not module.net.supervised


def test_a_failing_baseline_is_recorded_and_the_run_goes_on() -> None:
    def failing(datamodule, cfg):
        raise ValueError("Categorical feature 'DeviceInfo' cardinality > 255")

    def working(datamodule, cfg):
        return {"mean": BaselineResult({"ap": 0.5}, predictions=np.zeros(3))}

    cfg = OmegaConf.create({"with_baselines": True})
    results, failures = fit_baselines(Domain("x", "", "sectorkit", baselines=failing), None, cfg)
    assert results == {} and failures == {"baselines": "ValueError: Categorical feature 'DeviceInfo' cardinality > 255"}
    results, failures = fit_baselines(Domain("x", "", "sectorkit", baselines=working), None, cfg)
    assert results["mean"].metrics == {"ap": 0.5} and failures == {}
    assert fit_baselines(Domain("x", "", "sectorkit", baselines=working), None, OmegaConf.create({"with_baselines": False})) == ({}, {})


def test_a_threshold_stored_in_float32_flags_exactly_what_the_rule_flags() -> None:
    scores = np.array([0.1, 0.30000001192092896, 0.7], dtype=np.float32)
    nothing = choose_threshold(scores, np.array([0, 1, 0]), "cost", cost_missed=0.1, cost_alert=10)
    buffer = torch.tensor(nothing.value, dtype=torch.float32)
    assert not (torch.from_numpy(scores) >= buffer).any()  # "flag nothing" stays nothing in float32
    assert choose_threshold(scores, np.array([0, 1, 1]), "f1").value == float(np.float32(0.30000001192092896))
