"""Networks, losses and the Lightning module: shapes, preprocessing in forward, learning on planted signal."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from sectorkit.core.config import validate_overrides
from sectorkit.core.errors import ConfigError
from sectorkit.core.network import MemberEnsemble
from sectorkit.domains.finance import DOMAIN
from sectorkit.domains.finance.losses import classification_loss, focal_loss
from sectorkit.domains.finance.models.autoencoder import TabularAutoencoder
from sectorkit.domains.finance.models.ft_transformer import FTTransformer
from sectorkit.domains.finance.models.mlp import EmbeddingMLP
from sectorkit.domains.finance.models.tabm import TabMMini
from sectorkit.domains.finance.module import FraudModule

NETWORKS = {cls.__name__: cls for cls in (EmbeddingMLP, FTTransformer, TabularAutoencoder)}
TABM = {"_target_": f"{TabMMini.__module__}.TabMMini", "k": 4, "d_block": 32, "piecewise_linear": False}


def net(name: str, **kwargs) -> dict:
    """A ``model.net`` config naming one of the finance networks."""
    cls = NETWORKS[name]
    return {"_target_": f"{cls.__module__}.{cls.__name__}", **kwargs}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_shapes(name) -> None:
    net = NETWORKS[name](5, [4, 3])
    out = net(torch.randn(8, 5), torch.randint(0, 3, (8, 2)))
    assert out.shape == (8,)
    assert NETWORKS[name](5, [])(torch.randn(8, 5), torch.zeros(8, 0, dtype=torch.long)).shape == (8,)


def test_networks_declare_what_they_need() -> None:
    assert EmbeddingMLP.supervised and FTTransformer.supervised and not TabularAutoencoder.supervised
    assert EmbeddingMLP.uses_bin_edges and not FTTransformer.uses_bin_edges and not TabularAutoencoder.uses_bin_edges


def test_focal_loss_down_weights_easy_examples() -> None:
    target = torch.tensor([1.0, 0.0])
    easy, hard = torch.tensor([5.0, -5.0]), torch.tensor([-1.0, 1.0])
    assert focal_loss(easy, target) < 1e-3 * focal_loss(hard, target)
    # gamma 0, alpha None = plain BCE
    assert focal_loss(hard, target, gamma=0, alpha=None) == pytest.approx(float(classification_loss(hard, target)))
    weighted = classification_loss(hard, target, pos_weight=10.0)
    assert weighted > classification_loss(hard, target)
    with pytest.raises(ConfigError, match="model.loss"):
        classification_loss(hard, target, kind="hinge")


def _module(**kw) -> FraudModule:
    kw.setdefault("net", net("EmbeddingMLP"))
    return FraudModule(n_numeric=3, cardinalities=[5], feature_mean=[10.0, 0.0, 0.0], feature_std=[2.0, 1.0, 1.0], log_features=[False, False, False], **kw)


def test_forward_standardises_fills_nan_and_flags_alerts() -> None:
    module = _module().eval()
    module.threshold.fill_(0.5)
    x = torch.tensor([[10.0, 0.0, 0.0], [float("nan"), 0.0, 0.0]])
    out = module(x, torch.zeros(2, 1, dtype=torch.long))
    assert out.shape == (2, 2)
    assert torch.allclose(out[0], out[1])  # NaN -> training mean
    assert ((out[:, 0] >= 0.5).float() == out[:, 1]).all()
    with pytest.raises(ConfigError, match=r"model\.net\._target_='sectorkit\.domains\.finance\.models\.resnet\.ResNet': cannot import it"):
        _module(net={"_target_": "sectorkit.domains.finance.models.resnet.ResNet"})
    with pytest.raises(ConfigError, match=r"model\.net\._target_: Network is not a finance network"):
        _module(net={"_target_": "sectorkit.core.network.Network"})
    with pytest.raises(ConfigError, match=r"model\.net: cannot build EmbeddingMLP .*hiden"):
        _module(net=net("EmbeddingMLP", hiden=[8]))


def _planted(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    numeric = torch.randn(n, 3, generator=g) * torch.tensor([2.0, 1.0, 1.0]) + torch.tensor([10.0, 0.0, 0.0])
    cat = torch.randint(0, 5, (n, 1), generator=g)
    logit = 2.5 * numeric[:, 1] * numeric[:, 2] + 2.0 * (cat[:, 0] == 3) - 4  # interaction: not linear
    target = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    return {"numeric": numeric, "categorical": cat, "target": target, "card": torch.arange(n), "day": torch.zeros(n, dtype=torch.long)}


@pytest.mark.parametrize("kw", [dict(net=net("EmbeddingMLP")), dict(net=net("EmbeddingMLP"), loss="focal"), dict(net=net("EmbeddingMLP"), ensemble=3),
                                dict(net=net("FTTransformer", d_token=16, n_layers=1)), dict(net=TABM)])
def test_supervised_models_learn_planted_interaction(kw) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    torch.manual_seed(0)
    train, test = _planted(2000, 0), _planted(2000, 1)
    module = _module(top_k=10, **kw)
    optim = torch.optim.AdamW(module.parameters(), lr=3e-3)
    module.train()
    for _ in range(10):
        for idx in torch.randperm(2000).split(128):
            loss = module.training_loss({k: v[idx] for k, v in train.items()})
            optim.zero_grad()
            loss.backward()
            optim.step()
    module.eval()
    with torch.no_grad():
        scores = module(test["numeric"], test["categorical"])[:, 0].numpy()
    y = test["target"].numpy()
    lr = LogisticRegression(max_iter=500).fit(np.c_[train["numeric"], train["categorical"] == 3], train["target"])
    lr_ap = average_precision_score(y, lr.predict_proba(np.c_[test["numeric"], test["categorical"] == 3])[:, 1])
    assert average_precision_score(y, scores) > lr_ap + 0.1


def test_ensemble_score_is_the_mean_of_member_probabilities() -> None:
    torch.manual_seed(0)
    module = _module(ensemble=3, net=net("EmbeddingMLP", hidden=[8])).eval()
    assert isinstance(module.net, MemberEnsemble) and len(module.net.members) == 3
    x, codes = torch.randn(6, 3), torch.randint(0, 5, (6, 1))
    with torch.no_grad():
        members = torch.stack([torch.sigmoid(m(module.standardise(x), codes)) for m in module.net.members])
        assert torch.allclose(module(x, codes)[:, 0], members.mean(0), atol=1e-6)
        assert not torch.allclose(members[0], members[1])  # independently initialised
        loss = module.training_loss({"numeric": x, "categorical": codes, "target": torch.ones(6)})
        per_member = torch.stack([classification_loss(torch.log(p) - torch.log1p(-p), torch.ones(6)) for p in members])
        assert float(loss) == pytest.approx(float(per_member.mean()), rel=1e-4)
    with pytest.raises(ConfigError, match="model.ensemble"):
        _module(ensemble=0)


def test_tabm_members_share_the_backbone_and_are_averaged() -> None:
    torch.manual_seed(0)
    tabm = TabMMini(3, [5], k=4, d_block=16, piecewise_linear=False)
    x, codes = torch.randn(6, 3), torch.randint(0, 5, (6, 1))
    assert tabm(x, codes).shape == (4, 6)
    # one shared backbone; only the input adapter and the output head are per member
    assert tabm.adapter.shape[0] == 4 and tabm.head_weight.shape == (4, 16) and tabm.head_bias.shape == (4,)
    assert [m.weight.shape for m in tabm.backbone if isinstance(m, torch.nn.Linear)] == [(16, tabm.adapter.shape[1]), (16, 16)]
    module = _module(net=TABM).eval()
    with torch.no_grad():
        members = torch.sigmoid(module.net(module.standardise(x), codes))
        assert members.shape == (4, 6) and not torch.allclose(members[0], members[1])  # random-sign adapters differ
        assert torch.allclose(module(x, codes)[:, 0], members.mean(0), atol=1e-6)
    with_ensemble = _module(net=TABM, ensemble=2)
    assert with_ensemble.raw_score(x, codes).shape == (8, 6)  # 2 networks x 4 members, each trained
    with pytest.raises(ConfigError, match="needs bin edges"):
        TabMMini(3, [5], piecewise_linear=True)


def test_autoencoder_scores_anomalies_higher() -> None:
    torch.manual_seed(0)
    module = _module(net=net("TabularAutoencoder", hidden=[16], latent=2))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1000, 1, generator=g)
    numeric = torch.cat([10 + 2 * z, z, -z], dim=1) + 0.05 * torch.randn(1000, 3, generator=g)  # a 1-d manifold
    batch = {"numeric": numeric, "categorical": torch.zeros(1000, 1, dtype=torch.long), "target": torch.zeros(1000)}
    optim = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(150):
        loss = module.training_loss(batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
    module.eval()
    normal = module.score(numeric[:200], batch["categorical"][:200])
    odd = module.score(numeric[:200] * torch.tensor([1.0, 1.0, -1.0]), batch["categorical"][:200])  # off the manifold
    assert odd.mean() > normal.mean() + 0.2
    assert (odd >= 0).all() and (odd <= 1).all()


def _calibrated(**kw) -> FraudModule:
    """A module whose threshold was chosen on hand-made validation scores."""
    module = _module(**kw)
    module.calibrate({"score": torch.tensor([0.1, 0.2, 0.3, 0.6, 0.7, 0.9]), "target": torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])})
    return module


def test_threshold_policies() -> None:
    # max F1: alerting on >= 0.3 gives P=3/4, R=1 -> F1 0.857 (best)
    assert float(_calibrated(threshold_policy="f1").threshold) == pytest.approx(0.3)
    # a missed fraud costs 100, an alert 1: catch everything
    assert float(_calibrated(threshold_policy="cost", cost_missed_fraud=100, cost_alert=1).threshold) == pytest.approx(0.3)
    # alerts far dearer than misses: no alert at all
    silent = _calibrated(threshold_policy="cost", cost_missed_fraud=1, cost_alert=100)
    assert float(silent.threshold) > 0.9 and silent.threshold_rule == "lowest cost on validation (flag nothing)"
    with pytest.raises(ConfigError, match="model.threshold_policy='accuracy': expected one of f1, cost, fpr"):
        validate_overrides(DOMAIN, ["domain=finance", "model.threshold_policy=accuracy"])
    # a validation window without fraud: the legitimate-score quantile at model.fpr, and the run says so
    module = _module(fpr=0.25)
    module.calibrate({"score": torch.linspace(0, 1, 101), "target": torch.zeros(101)})
    assert float(module.threshold) == pytest.approx(0.75) and "no positives" in module.threshold_rule


def test_threshold_is_saved_with_the_checkpoint(tmp_path) -> None:
    module = _calibrated(threshold_policy="f1")
    path = tmp_path / "m.ckpt"
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    loaded = FraudModule.load_from_checkpoint(path, weights_only=True)
    assert float(loaded.threshold) == pytest.approx(0.3)
    assert loaded.threshold_rule == module.threshold_rule == "best F1 on validation"


@pytest.mark.parametrize("name,ensemble", [(name, 1) for name in sorted(NETWORKS)] + [("EmbeddingMLP", 3), ("TabMMini", 1)])
def test_onnx_export_carries_preprocessing_and_threshold(tmp_path, name, ensemble) -> None:
    ort = pytest.importorskip("onnxruntime")
    module = FraudModule(n_numeric=3, cardinalities=[4], feature_mean=[1.0, 0.0, 0.0], feature_std=[2.0, 1.0, 1.0],
                         log_features=[True, False, False], net=TABM if name == "TabMMini" else net(name), ensemble=ensemble).eval()
    module.threshold.fill_(0.4)
    numeric = torch.randn(16, 3) * 3
    numeric[0, 1] = float("nan")
    codes = torch.randint(0, 4, (16, 1))
    path = tmp_path / f"{name}_{ensemble}.onnx"
    torch.onnx.export(module, (numeric, codes), str(path), input_names=["numeric", "categorical"], output_names=["score_alert"],
                      dynamic_axes={"numeric": {0: "batch"}, "categorical": {0: "batch"}}, dynamo=False)
    got = ort.InferenceSession(str(path)).run(None, {"numeric": numeric[:5].numpy(), "categorical": codes[:5].numpy()})[0]
    with torch.no_grad():
        expected = module(numeric[:5], codes[:5]).numpy()
    assert np.allclose(got, expected, atol=1e-5)
