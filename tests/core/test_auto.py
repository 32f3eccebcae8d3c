"""model=auto: every candidate trained as its own run, the choice on the validation split, the chosen checkpoint
shipped as the run's own (evaluate, predict and export from the run folder alone), EASE as a network."""

from __future__ import annotations

import contextlib
import filecmp
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from sectorkit.core.auto import Candidate, candidate_overrides, choose, read_candidate, requested
from sectorkit.core.errors import ConfigError

import sectorkit

TINY = ["experiment=quick", "data.sample.n_users=120", "data.sample.n_items=80", "trainer.max_epochs=3",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One retail ``model=auto`` run on a tiny sample (EASE, BPR-MF and their blend), then load, evaluate, predict and
    export from its folder, with the Python API as a user's script calls it (what it prints kept as ``stdout``). The
    run folder holds a stale candidate failure of an earlier run, which must not count."""
    root = tmp_path_factory.mktemp("auto")
    stale = root / "auto" / "candidates" / "ease" / "failed.json"  # left by an earlier run into the same folder
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"error": "an earlier run's failure", "seconds": 1.0}))
    printed, threads = io.StringIO(), torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("SECTORKIT_ROOT", str(root))
        patch.chdir(root)
        torch.set_num_threads(1)  # one thread, as the other tests run (restored below)
        run = sectorkit.train("retail", "model=auto", "auto.candidates=[ease,bpr]", "auto.blend=true", *TINY, run_dir=str(root / "auto"))
        model = sectorkit.load(run.run_dir)
        evaluated = model.evaluate()
        user = str(pd.read_csv(run.run_dir / "predictions.csv")["user"].iloc[0])
        table = model.predict(pd.DataFrame({"user_id": [user, "newcomer"]}))
        export = model.export(str(root / "auto.onnx"))
    torch.set_num_threads(threads)
    return {"run_dir": str(run.run_dir), "chosen": run.chosen, "candidates": run.candidates, "metrics": run.metrics,
            "model_name": model.model_name, "checkpoint": str(model.checkpoint), "evaluated": evaluated.test,
            "evaluate_dir": str(evaluated.run_dir), "predicted_users": sorted(table["user"].astype(str).unique()),
            "user": user, "export_passed": export["passed"], "stdout": printed.getvalue()}


def test_auto_ships_the_candidate_with_the_best_validation_score(auto_run: dict) -> None:
    run_dir, metrics = Path(auto_run["run_dir"]), auto_run["metrics"]
    recorded = {name: json.loads((run_dir / "candidates" / name / "metrics.json").read_text()) for name in ("ease", "bpr", "blend")}
    assert list(auto_run["candidates"]) == ["ease", "bpr", "blend"] and all(c["state"] == "complete" for c in auto_run["candidates"].values())
    best = max(recorded, key=lambda name: recorded[name]["best_val"])  # max() keeps the first of equal scores: the simpler one
    assert auto_run["chosen"] == best and metrics["best_val"] == recorded[best]["best_val"]
    assert {name: c["best_val"] for name, c in auto_run["candidates"].items()} == {n: m["best_val"] for n, m in recorded.items()}
    # the shipped checkpoint is the chosen candidate's best one, and evaluates to its test metrics exactly
    shipped = Path(metrics["checkpoint"])
    assert shipped == run_dir / "checkpoints" / "best.ckpt" and filecmp.cmp(shipped, recorded[best]["checkpoint"], shallow=False)
    assert metrics["test"] == recorded[best]["test"] and metrics["model_name"] == best
    # the usual baselines and verdict for the chosen model, with the choice and why
    assert set(metrics["baselines"]) == {"mostpop", "itemknn", "ease"} and metrics["verdict"]["best_baseline"] in metrics["baselines"]
    other = max((n for n in recorded if n != best), key=lambda name: recorded[name]["best_val"])
    reason = f"chosen: {best} (validation ndcg@10 {recorded[best]['best_val']:.4f} vs {other} {recorded[other]['best_val']:.4f})"
    assert metrics["auto"]["reason"] == reason and metrics["verdict"]["text"].startswith(reason + "; ")
    report = (run_dir / "report.md").read_text()
    assert report.index("## Candidates (model=auto)") < report.index(f"**Verdict: {reason}") < report.index("## Test metrics")
    assert f"| **{best}** (chosen) | complete | {recorded[best]['best_val']:.4f} |" in report
    tail = auto_run["stdout"].split("model=auto candidates")[-1]  # the terminal ends with the candidates and the verdict
    assert f"{best} (chosen)" in tail and reason in tail


def test_the_blend_composes_the_two_best_candidates_with_the_weight_chosen_on_validation(auto_run: dict) -> None:
    blend = json.loads((Path(auto_run["run_dir"]) / "candidates" / "blend" / "metrics.json").read_text())["blend"]
    singles = {name: auto_run["candidates"][name]["best_val"] for name in ("ease", "bpr")}
    assert blend["members"] == sorted(singles, key=singles.get, reverse=True)
    scores = {float(w): v for w, v in blend["validation"].items()}
    assert set(scores) == {0.25, 0.5, 0.75} and blend["weight"] == max(scores, key=scores.get)
    assert auto_run["candidates"]["blend"]["best_val"] == scores[blend["weight"]]
    checkpoint = torch.load(Path(auto_run["run_dir"]) / "candidates" / "blend" / "checkpoints" / "best.ckpt", weights_only=True)
    net = checkpoint["hyper_parameters"]["net"]
    assert net["_target_"].endswith("ScoreBlend") and [m["_target_"].rsplit(".", 1)[-1] for m in net["members"]] == [
        {"ease": "EASE", "bpr": "BPRMF"}[name] for name in blend["members"]]
    assert checkpoint["state_dict"]["net.weights"].tolist() == pytest.approx([blend["weight"], 1 - blend["weight"]])


def test_ease_network_scores_the_split_exactly_as_the_ease_baseline(auto_run: dict) -> None:
    network, baseline = auto_run["candidates"]["ease"]["test"], auto_run["metrics"]["baselines"]["ease"]
    assert set(network) == set(baseline) and len(network) > 10
    assert all(network[k] == pytest.approx(baseline[k], abs=1e-6) for k in network)
    assert auto_run["candidates"]["ease"]["epochs"] == 1  # fitted in closed form: one pass, no gradient step


def test_evaluate_predict_and_export_work_from_the_auto_run_folder_alone(auto_run: dict) -> None:
    run_dir = Path(auto_run["run_dir"])
    assert auto_run["model_name"] == auto_run["chosen"] and Path(auto_run["checkpoint"]) == run_dir / "checkpoints" / "best.ckpt"
    assert auto_run["evaluated"] == pytest.approx(auto_run["metrics"]["test"], abs=1e-6)
    assert Path(auto_run["evaluate_dir"]).parent == run_dir / "evaluate"
    assert auto_run["predicted_users"] == sorted([auto_run["user"], "newcomer"]) and auto_run["export_passed"]


def test_the_choice_reads_validation_scores_never_test_scores() -> None:
    # a's validation score is the best, b's test score is: a is chosen (and the other way round for mode=min)
    a = Candidate("a", "complete", best_val=0.30, test={"m": 0.20})
    b = Candidate("b", "complete", best_val=0.25, test={"m": 0.40})
    failed = Candidate("c", "failed", note="boom")
    chosen, reason = choose([b, failed, a], "m", "max", 0.001)
    assert chosen is a and reason == "chosen: a (validation m 0.3000 vs b 0.2500)"
    assert choose([a, b], "m", "min", 0.001)[0] is b
    # within the tie margin the candidate listed first (the simpler one) wins, and the sentence says so
    simple, heavy = Candidate("simple", "complete", best_val=0.3000), Candidate("heavy", "complete", best_val=0.3002)
    chosen, reason = choose([simple, heavy], "m", "max", 0.001)
    assert chosen is simple and "ties heavy 0.3002 within 0.1%" in reason
    assert choose([simple, heavy], "m", "max", 0.0)[0] is heavy
    assert choose([failed], "m", "max", 0.001) == (None, "no candidate finished")


def test_candidate_runs_get_the_users_overrides_and_failures_are_recorded(tmp_path: Path) -> None:
    overrides = ["domain=retail", "model=auto", "auto.candidates=[ease]", "experiment=quick", "hydra.run.dir=/x", "trainer.max_epochs=2"]
    assert requested(overrides) and not requested(["domain=retail", "model=auto", "model=bpr"])
    assert candidate_overrides(overrides, "ease") == ["domain=retail", "experiment=quick", "trainer.max_epochs=2", "model=ease",
                                                      "with_baselines=false"]
    assert candidate_overrides([*overrides, "model.top_k=50"], "ease")[-3:] == ["model.top_k=50", "model=ease", "with_baselines=false"]
    (tmp_path / "failed.json").write_text(json.dumps({"error": "DataError: no rows", "seconds": 0.5}))
    failed = read_candidate(tmp_path, "x")
    assert (failed.state, failed.note) == ("failed", "DataError: no rows")
    assert read_candidate(tmp_path / "missing", "y").state == "failed"


def test_bad_auto_settings_and_auto_outside_train_are_one_line_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sectorkit.core.cli import run_task

    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    with pytest.raises(ConfigError, match="auto.candidates: unknown model 'nope' for domain 'retail'; valid choices: .*ease"):
        run_task("train", ["domain=retail", "model=auto", "auto.candidates=[ease,nope]", f"hydra.run.dir={tmp_path}/r"])
    with pytest.raises(ConfigError, match="model=auto trains its candidates with sectorkit train"):
        run_task("evaluate", ["domain=retail", "model=auto"])
    with pytest.raises(ConfigError, match="auto.blend=true: domain 'healthcare' names no auto.blend_network"):
        run_task("train", ["domain=healthcare", "model=auto", "auto.blend=true", f"hydra.run.dir={tmp_path}/f"])
    assert not (tmp_path / "r" / "candidates").exists()


def test_logistic_regression_network_scores_as_the_logistic_regression_baseline() -> None:
    """The ``linear`` network, fitted with the baseline's code (missing values, capped levels, C chosen on
    validation), gives the baseline's probabilities on rows it never saw."""
    import numpy as np
    from sectorkit.domains.finance.baselines import fit_predict_baselines
    from sectorkit.domains.finance.models.linear import LogisticRegression

    rng = np.random.default_rng(0)
    cardinalities = [9, 3]

    def split(n: int) -> tuple:
        x = rng.normal(size=(n, 4))
        x[rng.random((n, 4)) < [0.1, 0.0, 0.3, 0.0]] = np.nan  # columns 0 and 2 have missing values
        codes = np.stack([rng.integers(0, n_levels, n) for n_levels in cardinalities], axis=1)
        logit = np.nan_to_num(x[:, 0]) - 0.8 * np.isnan(x[:, 2]) + 0.6 * (codes[:, 0] % 3 == 0) - 1.0
        return x, codes, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)

    data = {"train": split(3000), "valid": split(800), "test": split(800)}
    params = {"max_levels": 5, "C_grid": [0.01, 0.1, 1.0]}  # column 0's 9 levels capped to 4 + "other"
    net = LogisticRegression(n_numeric=4, cardinalities=cardinalities, params=params)
    net.fit(lambda name, keep_missing=False: data[name])
    assert net.memory_bank and bool(net.fitted) and not any(p.requires_grad for p in net.parameters())
    x, codes, _ = data["test"]
    expected = fit_predict_baselines(*data["train"], x, codes, names=["logistic_regression"], params={"logistic_regression": params},
                                     valid=data["valid"])["logistic_regression"]
    with torch.no_grad():  # the module hands the network standardised values with missing ones at 0
        got = torch.sigmoid(net(torch.as_tensor(np.nan_to_num(x), dtype=torch.float32), torch.as_tensor(codes))).numpy()
    assert net.regularisation in params["C_grid"] and net.has_missing.tolist() == [True, False, True, False]
    assert np.abs(got - expected).max() < 1e-5 and np.std(expected) > 0.05


def test_classical_weather_networks_forecast_as_their_baselines() -> None:
    """``model=ridge_ar``, ``persistence``, ``climatology`` and ``damped_anomaly`` before interval calibration are
    those baselines' point forecasts, fitted without an optimizer."""
    import numpy as np
    from sectorkit.domains.agriculture.weather.baselines import point_forecasts
    from sectorkit.domains.agriculture.weather.data import WeatherDataModule
    from sectorkit.domains.agriculture.weather.module import WeatherForecaster

    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 500}, lookback=28)
    dm.setup("fit")
    expected = point_forecasts(dm.panel, dm.origins, 7)
    batch = next(iter(torch.utils.data.DataLoader(dm.dataset("test"), batch_size=10_000)))
    classes = {"ridge_ar": "RidgeAR", "persistence": "Persistence", "climatology": "Climatology", "damped_anomaly": "DampedAnomaly"}
    for name, network in classes.items():
        net, reference = {"_target_": f"sectorkit.domains.agriculture.models.classical.{network}"}, "ridge_ar" if name == "ridge_ar" else "none"
        module = WeatherForecaster(net=net, reference=reference, local_lags=0, **dm.model_kwargs())
        module.prepare_fit(dm.training_state())
        assert module.gradient_free and module.configure_optimizers() is None
        with torch.no_grad():
            z = module.network_output(batch["past"], batch["future"], batch["series"])
        forecast = (z * batch["scale"][:, None, None] + batch["loc"][:, None, None]).numpy()
        assert np.allclose(forecast, expected[name]["test"][..., None], atol=1e-3), name  # every quantile: the point forecast


def test_agriculture_auto_run_ships_the_candidate_with_the_lowest_validation_mae(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny weather run: the damped-anomaly and ridge baselines as networks and a one-epoch GRU; the lowest
    validation MAE is shipped (test scores play no part); the classical candidates forecast as their baselines
    before calibration (checked above), so the shipped model is at least as good as they are on validation."""
    import sectorkit

    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    run = sectorkit.train("agriculture", "model=auto", "experiment=quick", "auto.candidates=[damped_anomaly,ridge_ar,gru]", "auto.blend=false", "trainer.max_epochs=1",
                          "data.synthetic.n_series=2", "data.synthetic.n_days=500", "trainer.enable_progress_bar=false",
                          "trainer.enable_model_summary=false", run_dir=tmp_path / "auto")
    scores = {name: c["best_val"] for name, c in run.candidates.items()}
    assert list(scores) == ["damped_anomaly", "ridge_ar", "gru"] and all(c["state"] == "complete" for c in run.candidates.values())
    assert run.chosen == min(scores, key=scores.get) and run.metrics["primary_metric"] == "mae"
    assert run.candidates["damped_anomaly"]["epochs"] == run.candidates["ridge_ar"]["epochs"] == 1  # no gradient steps
    assert run.metrics["test"] == run.candidates[run.chosen]["test"] and set(run.metrics["baselines"]) >= {"damped_anomaly", "ridge_ar"}


@pytest.mark.slow
def test_finance_auto_run_chooses_between_logistic_regression_and_the_mlp(tmp_path: Path) -> None:
    env = {**os.environ, "SECTORKIT_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sectorkit", "train", "domain=finance", "model=auto", "experiment=quick", "auto.candidates=[linear,mlp_small]",
               "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}/auto"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    scores = {name: c["best_val"] for name, c in metrics["auto"]["candidates"].items()}
    assert metrics["auto"]["chosen"] == max(scores, key=scores.get) and metrics["model_name"] == metrics["auto"]["chosen"]
    assert metrics["test"] == metrics["auto"]["candidates"][metrics["auto"]["chosen"]]["test"]
    assert "logistic_regression" in metrics["baselines"] and "decisions" in metrics
