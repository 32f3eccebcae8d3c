"""``model=gbdt`` (the lightgbm baseline as a shippable network) and the finance blend of two trained networks:
the same probabilities as the fitted booster (missing values, a high-cardinality categorical, unseen levels), a
checkpoint read back with ``weights_only``, ONNX export with parity, and a blend that is the weighted mean of its
members' probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sectorkit.domains.finance.baselines import fit_lightgbm_model
from sectorkit.domains.finance.models.gbdt import GradientBoostedTrees

CARDINALITIES = [400, 4]  # column 0: 400 levels (LightGBM splits on every one, no cap)


def _split(rng: np.random.Generator, n: int, seen: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised numerics (NaN = missing in columns 0 and 2), codes (levels >= ``seen`` never in training), labels."""
    x = rng.normal(size=(n, 4))
    x[rng.random((n, 4)) < [0.15, 0.0, 0.3, 0.0]] = np.nan
    codes = np.stack([rng.integers(1, seen, n), rng.integers(0, CARDINALITIES[1], n)], axis=1)
    logit = (2.0 * np.nan_to_num(x[:, 0]) - 1.5 * np.isnan(x[:, 2]) + 2.0 * (codes[:, 0] % 7 == 0) - 1.5 * (codes[:, 0] % 5 == 0)
             + x[:, 1] * x[:, 3] - 1.0)
    return x, codes, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)


@pytest.fixture(scope="module")
def data() -> dict[str, tuple]:
    rng = np.random.default_rng(0)
    test = _split(rng, 1500, seen=400)  # levels 350..399 unseen in training
    test[1][:100, 0] = 0  # code 0: a level outside the vocabulary
    test[0][:5, 1] = 0.0  # an exact mean in a column without missing values: compared as a value
    return {"train": _split(rng, 4000, seen=350), "valid": _split(rng, 1000, seen=350), "test": test}


@pytest.fixture(scope="module")
def fitted(data: dict[str, tuple]) -> GradientBoostedTrees:
    net = GradientBoostedTrees(n_numeric=4, cardinalities=CARDINALITIES)
    net.fit(lambda name, keep_missing=False: data[name])
    return net


def _network_probabilities(net: torch.nn.Module, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():  # the module hands every finance network standardised values with missing ones at 0
        return torch.sigmoid(net(torch.as_tensor(np.nan_to_num(x), dtype=torch.float32), torch.as_tensor(codes))).numpy()


def test_gbdt_network_gives_the_boosters_probabilities(data: dict[str, tuple], fitted: GradientBoostedTrees, tmp_path) -> None:
    """Fitted with the baseline's own function, the network's probabilities are ``predict_proba``'s to 1e-5 on rows
    it never saw, with missing values, unseen levels and categorical splits on many levels; a checkpoint read back
    with ``weights_only`` scores the same."""
    booster = fit_lightgbm_model(data["train"], data["valid"], 0, None)  # what the lightgbm baseline fits
    x, codes, _ = data["test"]
    expected = booster.predict_proba(np.concatenate([x, codes], axis=1))[:, 1]
    got = _network_probabilities(fitted, x, codes)
    assert fitted.memory_bank and bool(fitted.fitted) and not any(p.requires_grad for p in fitted.parameters())
    assert len(fitted.roots) == booster.best_iteration_ > 5 and np.std(expected) > 0.1
    assert bool(fitted.categorical.any()) and int(fitted.n_words.max()) > 1  # level sets beyond one 32-bit word
    assert np.abs(got - expected).max() < 1e-5
    torch.save(fitted.state_dict(), tmp_path / "net.pt")
    loaded = GradientBoostedTrees(n_numeric=4, cardinalities=CARDINALITIES)  # buffers sized by the fit: taken from the file
    loaded.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True))
    assert loaded.active == fitted.active and np.array_equal(_network_probabilities(loaded, x, codes), got)


def _module(net: dict, ensemble: int = 1, bin_edges: list | None = None) -> torch.nn.Module:
    from sectorkit.domains.finance.module import FraudModule

    return FraudModule(n_numeric=4, cardinalities=CARDINALITIES, feature_mean=[0.0] * 4, feature_std=[1.0] * 4, net=net,
                       ensemble=ensemble, bin_edges=bin_edges).eval()


def test_gbdt_and_blend_modules_export_to_onnx_and_the_blend_averages_probabilities(data: dict[str, tuple],
                                                                                  fitted: GradientBoostedTrees, tmp_path) -> None:
    """Both export with parity (categorical bitsets included). The blend (an MLP trained as two copies on bin edges,
    first, and the trees) is ``w p_mlp + (1 - w) p_trees`` of the members' own module scores, rebuilt from a
    checkpoint composed by core's ``blend_checkpoint``."""
    pytest.importorskip("onnxruntime")
    from sectorkit.core.auto import blend_checkpoint
    from sectorkit.core.checkpoint import model_from_checkpoint
    from sectorkit.core.export import export_model

    x, codes, _ = data["test"]
    numeric, categorical = torch.as_tensor(x[:512], dtype=torch.float32), torch.as_tensor(codes[:512])  # raw, NaN included
    trees = _module({"_target_": "sectorkit.domains.finance.models.gbdt.GradientBoostedTrees"})
    trees.net.load_state_dict(fitted.state_dict())
    report = export_model(trees, {"numeric": numeric, "categorical": categorical}, tmp_path / "gbdt.onnx", "onnx")
    assert report["passed"] and report["max_abs_diff"] < 1e-5

    edges = [[-2.0, -0.5, 0.0, 0.7, 2.0]] * 4
    mlp_net = {"_target_": "sectorkit.domains.finance.models.mlp.EmbeddingMLP", "hidden": [8], "piecewise_linear": True}
    mlp = _module(mlp_net, ensemble=2, bin_edges=edges)
    members = []
    for module in (mlp, trees):
        checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
        module.on_save_checkpoint(checkpoint)
        members.append(checkpoint)
    blend = model_from_checkpoint(blend_checkpoint(members, "sectorkit.domains.finance.models.blend.ProbabilityBlend", 0.25, "blend"))
    assert blend.hparams.ensemble == 1 and len(blend.net.members[0].members) == 2
    with torch.no_grad():
        expected = 0.25 * mlp.score(numeric, categorical) + 0.75 * trees.score(numeric, categorical)
        assert torch.allclose(blend.score(numeric, categorical), expected, atol=1e-6)
    report = export_model(blend, {"numeric": numeric, "categorical": categorical}, tmp_path / "blend.onnx", "onnx")
    assert report["passed"] and report["max_abs_diff"] < 1e-5


@pytest.mark.slow  # ~20 s of CPU: two candidate runs, the blend and the auto run
def test_auto_ships_the_best_of_linear_trees_and_their_blend_on_a_small_table(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``model=auto`` with the logistic regression and the trees on a small table (a 60-level categorical, missing
    values), the blend on: the best validation AP is shipped, ``gbdt`` scores the test split as the ``lightgbm``
    baseline, the blend holds the two, and the shipped checkpoint evaluates to the chosen candidate's test metrics."""
    import pandas as pd

    import sectorkit

    rng = np.random.default_rng(1)
    n = 1200
    level = rng.integers(0, 60, n)
    income = np.where(rng.random(n) < 0.1, np.nan, rng.lognormal(3, 1, n))
    logit = 1.5 * (level % 4 == 0) + 0.8 * np.nan_to_num(np.log(income) - 3) - 1.5
    table = pd.DataFrame({"TX_TIME": np.arange(n) * 600, "TX_AMOUNT": rng.lognormal(2, 1, n), "income": income,
                          "age": rng.normal(40, 10, n), "segment": [f"s{v}" for v in level],
                          "TX_LABEL": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)})
    table.to_csv(tmp_path / "table.csv", index=False)
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    run = sectorkit.train(
        "finance", "model=auto", "auto.candidates=[linear,gbdt]", "auto.blend=true", "data=csv", f"data.path={tmp_path / 'table.csv'}",
        "data.columns.time=TX_TIME", "data.columns.time_unit=seconds", "data.columns.time_origin=2020-01-01", "data.columns.amount=TX_AMOUNT",
        "data.columns.label=TX_LABEL", "data.columns.card=null", "data.columns.terminal=null", "data.columns.numeric=[income,age]",
        "data.columns.categorical=[segment]", "data.split.method=fractions", "data.split.fractions=[0.6,0.2,0.2]", "data.split.delay_days=0",
        "data.split.drop_known_frauds=false", "model.top_k=20", "baselines.names=[lightgbm]", "importance.rows=200", "importance.features=2",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", run_dir=tmp_path / "auto")
    scores = {name: c["best_val"] for name, c in run.candidates.items()}
    assert list(scores) == ["linear", "gbdt", "blend"] and all(c["state"] == "complete" for c in run.candidates.values())
    assert run.chosen == max(scores, key=scores.get) and run.metrics["test"] == run.candidates[run.chosen]["test"]
    assert run.candidates["gbdt"]["test"]["ap"] == pytest.approx(run.metrics["baselines"]["lightgbm"]["ap"], abs=1e-6)
    assert "linear" in run.candidates["blend"]["note"] and "gbdt" in run.candidates["blend"]["note"]
    assert sectorkit.load(run.run_dir).evaluate().test["ap"] == pytest.approx(run.test["ap"], abs=1e-6)
