"""model=auto: every candidate trained as its own run, the choice on the validation split, the chosen checkpoint
shipped as the run's own (evaluate, predict and export from the run folder alone), EASE as a network."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from sectorkit.core.auto import Candidate, candidate_overrides, choose, read_candidate, requested
from sectorkit.core.errors import ConfigError

TINY = ["experiment=quick", "data.sample.n_users=120", "data.sample.n_items=80", "trainer.max_epochs=3",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]

SCRIPT = '''
import json, sys
import pandas as pd
import sectorkit

run = sectorkit.train("retail", "model=auto", "auto.candidates=[ease,bpr]", "auto.blend=true", *sys.argv[2:], run_dir=sys.argv[1] + "/auto")
model = sectorkit.load(run.run_dir)
evaluated = model.evaluate()
user = str(pd.read_csv(run.run_dir / "predictions.csv")["user"].iloc[0])
table = model.predict(pd.DataFrame({"user_id": [user, "newcomer"]}))
export = model.export(sys.argv[1] + "/auto.onnx")
print(json.dumps({"run_dir": str(run.run_dir), "chosen": run.chosen, "candidates": run.candidates, "metrics": run.metrics,
                  "model_name": model.model_name, "checkpoint": str(model.checkpoint), "evaluated": evaluated.test,
                  "evaluate_dir": str(evaluated.run_dir), "predicted_users": sorted(table["user"].astype(str).unique()),
                  "user": user, "export_passed": export["passed"]}))
'''


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One retail ``model=auto`` run on a tiny sample (EASE, BPR-MF and their blend), then load, evaluate, predict and
    export from its folder, in a subprocess (as a user's script would)."""
    root = tmp_path_factory.mktemp("auto")
    env = {**os.environ, "SECTORKIT_ROOT": str(root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(root), *TINY], cwd=root, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "stdout": result.stdout}


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
    with pytest.raises(ConfigError, match=r"model.net.embedding_size=8: model=auto has no model section of its own"):
        run_task("train", ["domain=retail", "model=auto", "model.net.embedding_size=8"])
    with pytest.raises(ConfigError, match="auto.blend=true: domain 'finance' names no auto.blend_network"):
        run_task("train", ["domain=finance", "model=auto", "auto.blend=true", f"hydra.run.dir={tmp_path}/f"])
    assert not (tmp_path / "r" / "candidates").exists()


def test_logistic_regression_network_is_linear_in_features_and_levels() -> None:
    from sectorkit.domains.finance.models.linear import LogisticRegression

    net = LogisticRegression(n_numeric=3, cardinalities=[4, 2])
    with torch.no_grad():
        net.numeric.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        net.numeric.bias.fill_(0.25)
        net.levels[0].weight.copy_(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))
        net.levels[1].weight.copy_(torch.tensor([[0.0], [-1.0]]))
    numeric = torch.tensor([[1.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    codes = torch.tensor([[3, 1], [0, 0]])
    assert net(numeric, codes).tolist() == pytest.approx([1.0 - 2.0 + 1.0 + 0.25 + 3.0 - 1.0, 0.25])


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
