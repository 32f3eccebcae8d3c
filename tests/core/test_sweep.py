"""Sweeps: an Optuna search on the test-only ``toy`` domain (trials, the summary, the study's name and storage, a
log-scale learning rate, resuming, pruning), the summary of a grid multirun, and every built-in domain's
search space and preset, composed without training. The commands run through the CLI's ``main`` in this process
(a search runs its trials in its own process anyway)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf
from sectorkit.core.config import compose_config, validate_overrides
from sectorkit.core.errors import ConfigError
from sectorkit.core.registry import discover, get_domain
from sectorkit.core.sweep import Dimension, default_study_name, one_device, search_space, split_overrides

QUIET = ["runtime.torch_threads=1", "trainer.enable_progress_bar=false", "callbacks.model_summary=null"]
SEARCH = ["train", "-m", "domain=toy", "experiment=quick", "hparams_search=optuna", "trainer.max_epochs=2", *QUIET]


def sweep_dirs(root: Path) -> list[Path]:
    return sorted((root / "outputs" / "toy" / "multiruns").iterdir())


def summary(folder: Path) -> dict:
    return json.loads((folder / "sweep_summary.json").read_text())


@pytest.fixture(scope="module")
def searched(toy_cli_block, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, object]:
    """A two-trial search, then the same command asking for four trials with a pruner that stops every trial
    after its first validation (the study resumed)."""
    root = tmp_path_factory.mktemp("search")
    with toy_cli_block() as sectorkit:
        first = sectorkit(root, *SEARCH, "sweep.n_trials=2")
        assert first.returncode == 0, first.stderr[-3000:]
        second = sectorkit(root, *SEARCH, "sweep.n_trials=4", "sweep.pruner=threshold", "sweep.pruners.threshold.lower=2.0")
    assert second.returncode == 0, second.stderr[-3000:]
    return root, first, second


def test_search_runs_trials_and_ends_with_one_table_and_the_best_configuration(searched) -> None:
    root, first, _ = searched
    folder = sweep_dirs(root)[0]
    result = summary(folder)
    trials = {t["number"]: t for t in result["trials"]}
    assert sorted(trials) == [0, 1] and all(t["state"] == "complete" for t in trials.values())
    for number, trial in trials.items():  # the objective is each run's best validation score, never a test metric
        metrics = json.loads((folder / str(number) / "metrics.json").read_text())
        assert trial["value"] == pytest.approx(metrics["best_val"]) and trial["run_dir"] == str(folder / str(number))
    best = max(trials.values(), key=lambda t: t["value"])
    assert result["best"]["number"] == best["number"] and result["objective"] == "val/auroc"
    fields = {"number", "state", "params", "overrides", "value", "epochs", "seconds", "run_dir", "note"}
    assert all(set(t) == fields for t in trials.values())  # no test metric in the sweep's summary
    assert result["best"]["command"].startswith("sectorkit train domain=toy experiment=quick")
    assert f"optimizer.lr={best['params']['optimizer.lr']!r}" in result["best"]["command"]
    assert "Optuna study toy/" in first.stdout and f"best: trial {best['number']}, val/auroc" in first.stdout
    markdown = (folder / "sweep_summary.md").read_text()
    assert "| # | state | optimizer.lr | optimizer.weight_decay | val/auroc |" in markdown and result["best"]["command"] in markdown


def test_study_is_named_after_domain_model_data_and_experiment_in_sqlite(searched) -> None:
    root, _, _ = searched
    storage = f"sqlite:///{root / 'outputs' / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(storage)
    domain, model, data, experiment, metric = name.split("/")
    assert (domain, model, experiment, metric) == ("toy", "mlp", "quick", "auroc") and data.startswith("sample.")
    assert summary(sweep_dirs(root)[0])["study_name"] == name


def test_learning_rate_is_sampled_on_a_log_scale_within_its_bounds(searched) -> None:
    root, _, _ = searched
    study = optuna.load_study(study_name=summary(sweep_dirs(root)[0])["study_name"], storage=f"sqlite:///{root / 'outputs' / 'optuna.db'}")
    for trial in study.trials:
        assert trial.distributions["optimizer.lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
        lr = trial.params["optimizer.lr"]
        assert 1e-4 <= lr <= 1e-2
        ran_with = OmegaConf.load(Path(trial.user_attrs["run_dir"]) / ".hydra" / "config.yaml")
        assert ran_with.optimizer.lr == lr  # each trial is a normal run composed with its sampled values


def test_a_second_invocation_resumes_the_same_study(searched) -> None:
    root, _, second = searched
    first_dir, second_dir = sweep_dirs(root)
    assert sorted(p.name for p in second_dir.iterdir() if p.is_dir()) == ["2", "3"]  # only the missing trials ran
    result = summary(second_dir)
    assert result["ran_now"] == [2, 3] and [t["number"] for t in result["trials"]] == [0, 1, 2, 3]
    assert result["trials"][0]["run_dir"] == str(first_dir / "0")
    assert result["best"]["number"] in (0, 1) and result["best"] == {**summary(first_dir)["best"]}
    lrs = [t["params"]["optimizer.lr"] for t in result["trials"]]
    assert len(set(lrs)) == 4  # the resumed sampler does not draw the first points again
    assert "Optuna study toy/" in second.stdout


def test_a_pruner_stops_trials_after_their_first_validation(searched) -> None:
    root, _, second = searched
    trials = summary(sweep_dirs(root)[1])["trials"][2:]
    assert [t["state"] for t in trials] == ["pruned", "pruned"] and [t["epochs"] for t in trials] == [1, 1]
    for trial in trials:
        run = Path(trial["run_dir"])
        logged = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["val/auroc"])
        assert logged["epoch"].tolist() == [0] and not (run / "metrics.json").exists()  # stopped before the test split
    assert second.stdout.count("pruned after epoch 0: val/auroc") == 2


def test_grid_multirun_ends_with_one_table_over_its_jobs(toy_cli, tmp_path) -> None:
    grid = ["optimizer.lr=0.001,0.01", "trainer.max_epochs=1"]
    result = toy_cli(tmp_path, "train", "-m", "domain=toy", "experiment=quick", *grid, *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = sweep_dirs(tmp_path)
    jobs = summary(folder)["trials"]
    assert [t["params"] for t in jobs] == [{"optimizer.lr": "0.001"}, {"optimizer.lr": "0.01"}]
    scores = [json.loads((folder / str(n) / "metrics.json").read_text())["best_val"] for n in (0, 1)]
    assert summary(folder)["best"]["number"] == scores.index(max(scores)) and f"best: job {scores.index(max(scores))}" in result.stdout


def test_every_domain_search_space_names_keys_of_each_model_config() -> None:
    for name, domain in discover().items():
        # model=auto is not searched; yield_trend (a least-squares line per region) has no setting to search
        for model in [m for m in domain.options("model") if m not in ("auto", "yield_trend")]:
            overrides = split_overrides(domain, [f"domain={name}", f"model={model}", "hparams_search=optuna"])
            cfg = compose_config(domain, overrides.fixed, return_hydra_config=True)
            assert cfg.sweep.direction == {"max": "maximize", "min": "minimize"}[cfg.monitor.mode]
            assert cfg.sweep.storage.startswith("sqlite:///") and cfg.sweep.storage.endswith("/outputs/optuna.db")
            dimensions = {d.key: d for d in search_space(cfg, model, domain, overrides.searched, overrides.fixed_keys)}
            assert any(key.startswith("model.") for key in dimensions), (name, model)  # the model's own parameters
            if "optimizer.lr" in dimensions:
                assert dimensions["optimizer.lr"].log, (name, model)
            for dimension in dimensions.values():
                dimension.distribution()


def test_command_line_values_change_the_space_and_fixed_values_leave_it() -> None:
    finance = get_domain("finance")
    overrides = split_overrides(finance, ["domain=finance", "hparams_search=optuna", "optimizer.lr=tag(log,interval(1e-5,1e-1))",
                                          "model.net.dropout=0.1", "model.net.hidden=choice([64,32],[32])",
                                          "model.net.embedding_cap=range(4,17,4)"])
    cfg = compose_config(finance, overrides.fixed, return_hydra_config=True)
    dimensions = {d.key: d for d in search_space(cfg, "mlp", finance, overrides.searched, overrides.fixed_keys)}
    assert dimensions["optimizer.lr"].distribution() == optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)
    assert "model.net.dropout" not in dimensions  # fixed on the command line
    assert dimensions["model.net.hidden"].override("[32]") == "model.net.hidden=[32]"
    assert dimensions["model.net.embedding_cap"].distribution() == optuna.distributions.IntDistribution(4, 16, step=4)
    other = compose_config(finance, [*overrides.fixed, "data.simulator.n_days=90"], return_hydra_config=True)
    loader = compose_config(finance, [*overrides.fixed, "data.num_workers=2"], return_hydra_config=True)
    assert default_study_name(other) != default_study_name(cfg) == default_study_name(loader)  # other data, other study


@pytest.mark.parametrize(("override", "message"), [
    ("hydra.sweeper.n_trials=5", "hydra.sweeper.n_trials: the Optuna settings are now sweep.* keys"),
    ("model=mlp,ft_transformer", "an Optuna search keeps one model"),
    ("model.net.dropout=range(0.1,0.5,0.1)", "whole-number ranges"),
    ("launcher=slurm", "a search runs its trials in this process"),
])
def test_search_refuses_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace(".", r"\.")):
        split_overrides(get_domain("finance"), ["domain=finance", "hparams_search=optuna", override])


def test_a_search_trains_each_trial_on_one_device() -> None:
    finance = get_domain("finance")
    assert one_device(compose_config(finance, ["domain=finance"])) == ["trainer.devices=1"]  # auto: one device, not every GPU
    assert one_device(compose_config(finance, ["domain=finance", "trainer=cpu"])) == []
    with pytest.raises(ConfigError, match="each on one device"):
        one_device(compose_config(finance, ["domain=finance", "trainer=ddp_cpu"]))


def test_search_space_entries_are_checked() -> None:
    assert Dimension.from_entry("k", {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}, "here").log
    with pytest.raises(ConfigError, match="here: k: a log scale needs low > 0"):
        Dimension.from_entry("k", {"type": "float", "low": 0.0, "high": 1.0, "log": True}, "here")


def test_sweep_commands_of_readme_and_docs_compose_with_their_search_space() -> None:
    """Every ``sectorkit train -m`` line of README.md and docs/sweeps.md composes as it would run (no training)."""
    root = Path(__file__).resolve().parents[2]
    lines = [line.split("  #")[0] for doc in ("README.md", "docs/sweeps.md") for line in (root / doc).read_text().splitlines()
             if line.startswith("sectorkit train -m ")]
    assert len(lines) >= 8
    for line in lines:
        overrides = shlex.split(line)[3:]
        domain = get_domain(next(o.split("=", 1)[1] for o in overrides if o.startswith("domain=")))
        if "hparams_search=optuna" not in overrides:
            validate_overrides(domain, overrides)
            continue
        split = split_overrides(domain, overrides)
        validate_overrides(domain, split.fixed)
        cfg = compose_config(domain, split.fixed, return_hydra_config=True)
        assert search_space(cfg, cfg.hydra.runtime.choices.model, domain, split.searched, split.fixed_keys), line
