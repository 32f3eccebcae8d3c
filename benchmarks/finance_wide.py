"""Finance on a wide, real-looking table: the simulator's transactions plus 100 extra numeric columns (ten of
them informative, a third of them partly missing) and a 1,500-level categorical column (Zipf-distributed
levels, some more frequent among frauds), ~200 k rows over 60 days, read through ``data=csv``.

Measures what a user's run on such a table costs and reaches: reading + features (and how many pandas
``PerformanceWarning``s it raises), each in-run baseline's wall time and test AP (or its error), and the
report's permutation importance on a briefly trained model.

    OMP_NUM_THREADS=1 python benchmarks/finance_wide.py                 # -> benchmarks/results/finance_wide.json
    OMP_NUM_THREADS=1 python benchmarks/finance_wide.py --out /tmp/wide.json --customers 500   # a smaller table
    OMP_NUM_THREADS=1 python benchmarks/finance_wide.py --model mlp --out /tmp/wide_mlp.json  # importance of the default model

It uses only the data module, the baselines hook (``sectorkit.domains.finance.run_baselines``) and the report's
``permutation_importance``, so the same command measures earlier versions of the domain too.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from benchmarks.common import compose_domain, quiet_lightning, save_results  # noqa: E402
from sectorkit.core.network import network_class  # noqa: E402
from sectorkit.core.pipeline import build_model  # noqa: E402
from sectorkit.domains.finance import run_baselines  # noqa: E402
from sectorkit.domains.finance.report import model_scores, permutation_importance  # noqa: E402
from sectorkit.domains.finance.sample import SimulatorConfig, simulate  # noqa: E402

BASELINE_NAMES = ("logistic_regression", "hist_gradient_boosting")


def wide_table(n_customers: int, n_days: int, n_numeric: int, n_levels: int, seed: int = 0) -> pd.DataFrame:
    """The simulator's table with ``n_numeric`` extra numeric columns and one ``n_levels``-level categorical."""
    raw = simulate(SimulatorConfig(n_customers=n_customers, n_terminals=2 * n_customers, n_days=n_days, grid_size=100.0 * (n_customers / 5000) ** 0.5,
                                   n_compromised_terminals=1, n_compromised_customers=1, seed=seed))
    raw = raw.drop(columns=["TX_FRAUD_SCENARIO"])
    rng = np.random.default_rng(seed + 1)
    n, fraud = len(raw), raw["TX_FRAUD"].to_numpy()
    extra = {}
    for i in range(n_numeric):
        values = rng.normal(size=n) * (1 + i % 7)
        if i < 10:  # informative: shifted for frauds
            values += 0.6 * fraud * (1 + i % 7)
        if i % 3 == 0:  # partly missing; for two informative columns missing more often among frauds
            p = np.where(fraud == 1, 0.5, 0.15) if i in (0, 3) else np.full(n, 0.2)
            values[rng.random(n) < p] = np.nan
        extra[f"num_{i:03d}"] = values
    weights = 1.0 / np.arange(1, n_levels + 1) ** 1.1
    levels = rng.choice(n_levels, n, p=weights / weights.sum())
    risky = rng.choice(np.arange(20, 400), 40, replace=False)  # mid-frequency levels used by fraudsters
    swap = (fraud == 1) & (rng.random(n) < 0.35)
    levels[swap] = rng.choice(risky, int(swap.sum()))
    extra["device_info"] = np.char.add("dev_", levels.astype(str))
    return pd.concat([raw, pd.DataFrame(extra, index=raw.index)], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1700)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--numeric", type=int, default=100)
    parser.add_argument("--levels", type=int, default=1500)
    parser.add_argument("--cache", default=str(ROOT / "data_cache" / "finance_wide"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finance_wide.json"))
    parser.add_argument("--model", default="mlp_small", help="the model config trained (1 epoch) for permutation importance, e.g. mlp (the default model)")
    parser.add_argument("--skip-importance", action="store_true")
    args = parser.parse_args()
    quiet_lightning()
    warnings.resetwarnings()  # count pandas warnings below; Lightning's loggers stay quiet
    torch.set_num_threads(1)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"wide_{args.customers}_{args.days}_{args.numeric}_{args.levels}.parquet"
    if not path.is_file():
        wide_table(args.customers, args.days, args.numeric, args.levels).to_parquet(path, index=False)
    numeric = [f"num_{i:03d}" for i in range(args.numeric)]
    overrides = ["data=csv", f"data.path={path}", "data.columns.id=TRANSACTION_ID", f"data.columns.numeric=[{','.join(numeric)}]",
                 "data.columns.categorical=[device_info]", "data.split.train_days=21", "data.split.test_days=14", f"model={args.model}", "trainer.max_epochs=1"]
    cfg = compose_domain("finance", cache / "run", overrides)
    results: dict = {"model": args.model, "table": {"path": path.name, "customers": args.customers, "days": args.days, "extra_numeric": args.numeric, "levels": args.levels},
                     "torch_threads": 1, "code": str(Path(sys.modules["sectorkit.domains.finance"].__file__).parent)}

    dm = instantiate(cfg.data, network=network_class(cfg.model.net))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    results["setup_s"] = round(time.perf_counter() - start, 2)
    results["performance_warnings"] = sum(issubclass(w.category, pd.errors.PerformanceWarning) for w in caught)
    results["rows"] = {name: len(t) for name, t in dm.tables.items()}
    results["n_numeric_inputs"] = len(dm.fitted["numeric"])
    results["embedded_levels"] = {c: len(v) for c, v in dm.fitted["vocab"].items()}
    print(f"setup {results['setup_s']} s, {results['performance_warnings']} PerformanceWarnings, rows {results['rows']}", flush=True)

    results["baselines"] = {}
    for name in BASELINE_NAMES:
        run_cfg = OmegaConf.merge(cfg, {"baselines": {"names": [name]}})
        start = time.perf_counter()
        try:
            metrics = run_baselines(dm, run_cfg)[name].metrics
            entry = {"ap": metrics["ap"], "auc": metrics["auc"]}
        except Exception as err:  # noqa: BLE001 - a failure is a result here
            entry = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
        entry["seconds"] = round(time.perf_counter() - start, 2)
        results["baselines"][name] = entry
        print(f"{name}: {entry}", flush=True)

    if not args.skip_importance:
        pl.seed_everything(0, verbose=False)
        module = build_model(cfg, dm)
        trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             accelerator="cpu")
        start = time.perf_counter()
        trainer.fit(module, dm)
        results["model_one_epoch_s"] = round(time.perf_counter() - start, 2)
        tensors = dm.datasets["test"].tensors
        scores = model_scores(module, tensors)
        start = time.perf_counter()
        importance = permutation_importance(module, tensors, scores, dm.fitted["numeric"], seed=0)
        results["permutation_importance_s"] = round(time.perf_counter() - start, 2)
        results["permutation_importance_features"] = len(importance)
        results["permutation_importance_top5"] = importance[:5]
        print(f"permutation importance: {results['permutation_importance_s']} s over {len(importance)} features; top {importance[:5]}", flush=True)
    save_results(args.out, results)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
