"""Finance benchmark: the transaction simulator against the published handbook figures
(Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud Detection*), then the default
model against the in-run baselines under the handbook's prequential protocol.

1. Simulator at the default size (5,000 customers, 10,000 terminals, 183 days): size, fraud rate and
   scenario shares vs the handbook (1,754,155 transactions, 0.837 % fraud, ~7 / 62 / 31 %).
2. Logistic regression on the handbook's 15 features (StandardScaler, default C): single split
   (train from 2018-07-25, 7 days; 7-day delay; 7-day test; known-fraud cards dropped from test) and
   prequential test (4 folds, training starts 2018-08-15 minus 0/7/14/21 days). Published: AP 0.606 /
   AUC 0.871 (single), AP 0.623 / AUC 0.868 (prequential); target within +-0.03 AP.
3. Default model (domains/finance/conf/model/mlp.yaml, data/simulator.yaml features) on the same
   prequential folds, checkpoint chosen on the 7-day validation window before each training window;
   in-run HistGradientBoosting and logistic regression (C chosen on the validation window) on the same features and rows.
   Targets: AP >= 0.70 and CP@100 >= 0.31 (mean over folds) and above the gradient-boosting baseline.
4. Simulator and feature-engineering time at 1x, 4x, 16x the default size (customers, terminals,
   compromised counts and map area scaled together, so the customer/terminal density stays the handbook's).

    python benchmarks/finance.py --quick     # a few minutes on 2 CPU cores (1 seed, 8 epochs, 1x/2x/4x)
    python benchmarks/finance.py             # full: 3 simulator seeds for LR, 3 model seeds, 20 epochs, 1x/4x/16x
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from benchmarks.common import compose_domain, save_results  # noqa: E402
from sectorkit.domains.finance.baselines import datamodule_baselines, fit_predict_baselines  # noqa: E402
from sectorkit.domains.finance.data import FraudDataModule  # noqa: E402
from sectorkit.domains.finance.features import build_features  # noqa: E402
from sectorkit.domains.finance.metrics import evaluate_scores  # noqa: E402
from sectorkit.domains.finance.module import FraudModule  # noqa: E402
from sectorkit.domains.finance.readers import sample_spec, to_canonical  # noqa: E402
from sectorkit.domains.finance.sample import SimulatorConfig, simulate, summary  # noqa: E402

PUBLISHED = {
    "simulator": {"n_transactions": 1_754_155, "fraud_rate": 0.00837, "scenario_shares": [0.07, 0.62, 0.31]},
    "lr_single": {"ap": 0.606, "auc": 0.871},
    "lr_prequential": {"ap": 0.623, "auc": 0.868},
    "xgboost_prequential": {"ap": 0.687, "cp_at_100": 0.303},
    "nn_prequential": {"ap": 0.675, "auc": 0.876},
}
HANDBOOK_FEATURES = dict(windows=[1, 7, 30], delay_days=7, amount_ratios=False, card_history=False, terminal_recency=False)
PREQUENTIAL_START = pd.Timestamp("2018-08-15")
SINGLE_START = "2018-07-25"


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def simulator_figures(seed: int) -> dict:
    start = time.perf_counter()
    frame = simulate(SimulatorConfig(seed=seed))
    seconds = time.perf_counter() - start
    stats = summary(frame)
    return {"seed": seed, "generate_s": round(seconds, 2), **stats}


def scaling_figures(factors: list[int]) -> list[dict]:
    rows = []
    for f in factors:
        cfg = SimulatorConfig(n_customers=5000 * f, n_terminals=10000 * f, n_compromised_terminals=2 * f, n_compromised_customers=3 * f,
                              grid_size=100.0 * f**0.5)  # same density: each customer still reaches ~78 terminals
        start = time.perf_counter()
        raw = simulate(cfg)
        sim_s = time.perf_counter() - start
        start = time.perf_counter()
        frame = to_canonical(raw, sample_spec(), "sample")
        build_features(frame)
        feat_s = time.perf_counter() - start
        rows.append({"factor": f, "n_transactions": len(raw), "simulate_s": round(sim_s, 2), "features_s": round(feat_s, 2),
                     "tx_per_s_simulate": round(len(raw) / sim_s), "tx_per_s_features": round(len(raw) / feat_s)})
        print(f"  scale {f}x: {len(raw):,} tx, simulate {sim_s:.1f} s, read+features {feat_s:.1f} s", flush=True)
        del raw, frame
        gc.collect()
    return rows


def fold_datamodule(train_start: str, features: dict, cache: str, sim_seed: int, valid_days: float = 7,
                    overrides: Sequence[str] = ()) -> FraudDataModule:
    """One fold's datamodule from the composed data config (plus Hydra ``overrides`` of ``data.*``), with
    ``features`` overriding data.features."""
    cfg = compose_domain("finance", Path(cache), [o for o in overrides if o.startswith("data.")])
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    dm = FraudDataModule(
        cache_dir=cache, simulator={**data_cfg["simulator"], "seed": sim_seed}, features={**data_cfg["features"], **features},
        split={**data_cfg["split"], "train_start": train_start, "valid_days": valid_days}, batch_size=data_cfg["batch_size"],
        eval_batch_size=data_cfg["eval_batch_size"], numeric_bins=data_cfg["numeric_bins"],
    )
    dm.setup("fit")
    return dm


def raw_lr(dm: FraudDataModule) -> dict:
    """The handbook's logistic regression: StandardScaler + LogisticRegression (default C = 1, no search) on the raw
    15 features."""
    tr, te = dm.datasets["train"].tensors, dm.datasets["test"].tensors
    empty = np.zeros((len(tr["target"]), 0)), np.zeros((len(te["target"]), 0))
    s = fit_predict_baselines(tr["numeric"].double().numpy(), empty[0], tr["target"].numpy(), te["numeric"].double().numpy(), empty[1],
                              names=["logistic_regression"], params={"logistic_regression": {"C": 1.0}})
    return evaluate_scores(s["logistic_regression"], te["target"].numpy(), te["card"].numpy(), te["day"].numpy())


def fold_starts(n_folds: int) -> list[str]:
    return [(PREQUENTIAL_START - pd.Timedelta(days=7 * k)).strftime("%Y-%m-%d") for k in range(n_folds)]


def handbook_lr(seeds: list[int], cache: str) -> dict:
    out = {"single": [], "prequential": []}
    for seed in seeds:
        dm = fold_datamodule(SINGLE_START, HANDBOOK_FEATURES, cache, seed)
        assert len(dm.fitted["numeric"]) == 15, dm.fitted["numeric"]
        out["single"].append(raw_lr(dm))
        folds = [raw_lr(fold_datamodule(s, HANDBOOK_FEATURES, cache, seed)) for s in fold_starts(4)]
        out["prequential"].append({k: float(np.mean([f[k] for f in folds])) for k in folds[0]})
        print(f"  LR seed {seed}: single AP {out['single'][-1]['ap']:.3f} AUC {out['single'][-1]['auc']:.3f}; "
              f"prequential AP {out['prequential'][-1]['ap']:.3f} AUC {out['prequential'][-1]['auc']:.3f}", flush=True)
    return out


def fit_default_model(dm: FraudDataModule, seed: int, epochs: int, workdir: Path, name: str,
                      overrides: list[str] = ()) -> tuple[pl.Trainer, pl.callbacks.ModelCheckpoint]:
    """Train the model a user's run composes (model, optimizer and scheduler from the Hydra configs, plus
    ``overrides``) on one fold, keeping the best-validation-AP checkpoint."""
    cfg = compose_domain("finance", workdir, [f"trainer.max_epochs={epochs}", *overrides])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.pop("_target_")
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None
    pl.seed_everything(seed, verbose=False)
    module = FraudModule(**dm.model_kwargs(), **model_cfg, optimizer=optimizer, scheduler=scheduler)
    ckpt = pl.callbacks.ModelCheckpoint(monitor="val/ap", mode="max", dirpath=workdir, filename=name, save_top_k=1, enable_version_counter=False)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, callbacks=[ckpt], enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, dm)
    return trainer, ckpt


def train_model(dm: FraudDataModule, seed: int, epochs: int, workdir: Path) -> dict:
    """Test metrics of the default model's best-validation checkpoint on one fold."""
    start = time.perf_counter()
    trainer, ckpt = fit_default_model(dm, seed, epochs, workdir, f"s{seed}")
    metrics = trainer.test(trainer.lightning_module, dm, ckpt_path="best", verbose=False)[0]
    Path(ckpt.best_model_path).unlink(missing_ok=True)
    return {k.removeprefix("test/"): float(v) for k, v in metrics.items()} | {"train_s": round(time.perf_counter() - start, 1)}


def validation_ap(features: dict, epochs: int, cache: str, workdir: Path, seed: int = 0, overrides: list[str] = ()) -> list[float]:
    """Model selection without the test windows: best-epoch validation AP of the default model (plus Hydra
    ``overrides``) on each prequential fold's 7 validation days (simulator seed 0), with ``features``
    overriding data.features."""
    scores = []
    for k, start in enumerate(fold_starts(4)):
        dm = fold_datamodule(start, features, cache, 0, overrides=overrides)
        _, ckpt = fit_default_model(dm, seed, epochs, workdir, f"select-{os.getpid()}", overrides)
        scores.append(float(ckpt.best_model_score))
        Path(ckpt.best_model_path).unlink(missing_ok=True)
        print(f"  fold {k} ({start}): validation AP {scores[-1]:.4f}", flush=True)
    return scores


def model_prequential(seeds: list[int], epochs: int, n_folds: int, cache: str, workdir: Path) -> dict:
    per_seed = {"model": [], "hist_gradient_boosting": [], "logistic_regression": []}
    folds_out = []
    for seed in seeds:
        rows = {k: [] for k in per_seed}
        for k, start in enumerate(fold_starts(n_folds)):
            dm = fold_datamodule(start, {}, cache, 0)
            model = train_model(dm, seed, epochs, workdir)
            te = dm.datasets["test"].tensors
            yt = te["target"].numpy()
            scores = datamodule_baselines(dm, seed=seed)  # as in a run: fitted on train, LR's C chosen on validation
            base = {n: evaluate_scores(s, yt, te["card"].numpy(), te["day"].numpy()) for n, s in scores.items()}
            rows["model"].append(model)
            for n, m in base.items():
                rows[n].append(m)
            folds_out.append({"seed": seed, "fold": k, "train_start": start, "model": model, **base})
            print(f"  seed {seed} fold {k} ({start}): model AP {model['ap']:.3f} CP@100 {model['cp_at_100']:.3f} ({model['train_s']} s); "
                  f"HGB AP {base['hist_gradient_boosting']['ap']:.3f}; LR AP {base['logistic_regression']['ap']:.3f}", flush=True)
        for n in per_seed:
            per_seed[n].append({m: float(np.mean([r[m] for r in rows[n]])) for m in ("ap", "auc", "cp_at_100", "recall_at_1pct_fpr")})
    return {"per_seed": per_seed, "folds": folds_out}


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cache", default=str(ROOT / "data_cache"))
    parser.add_argument("--out", default=None, help="default: benchmarks/results/finance.json (finance_quick.json with --quick)")
    parser.add_argument("--parts", default="simulator,lr,model,scaling", help="comma list; parts left out are kept from an existing --out file")
    parser.add_argument("--select", metavar="JSON", default=None,
                        help='validation only: mean best-epoch validation AP over the 4 folds with these data.features overrides, '
                             'e.g. \'{"card_history_days": 60}\'; no test window is scored and no result file is written')
    parser.add_argument("--overrides", nargs="*", default=[], help="with --select: Hydra overrides of the data, model or optimizer, "
                        "e.g. model.net.dropout=0.2 optimizer.weight_decay=1e-3 data.numeric_bins=32")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "benchmarks" / "results" / ("finance_quick.json" if args.quick else "finance.json"))
    quiet()
    torch.set_num_threads(1)
    sim_seeds = [0] if args.quick else [0, 1, 2]
    model_seeds = [0] if args.quick else [0, 1, 2]
    epochs = 8 if args.quick else 20
    factors = [1, 2, 4] if args.quick else [1, 4, 16]
    workdir = Path(args.cache) / "finance_bench_ckpt"
    if args.select is not None:
        scores = validation_ap(json.loads(args.select), epochs, args.cache, workdir, overrides=args.overrides)
        print(f"mean validation AP {np.mean(scores):.4f} (folds {' / '.join(f'{v:.3f}' for v in scores)})")
        return

    parts = set(args.parts.split(","))
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    results = {"mode": "quick" if args.quick else "full", "epochs": epochs, "published": PUBLISHED, "torch_threads": 1}
    if "simulator" in parts or "simulator" not in previous:
        print("1. simulator at the default size", flush=True)
        results["simulator"] = [simulator_figures(s) for s in sim_seeds]
    if "lr" in parts or "handbook_lr" not in previous:
        print("2. handbook logistic regression", flush=True)
        results["handbook_lr"] = handbook_lr(sim_seeds, args.cache)
    if "model" in parts or "prequential" not in previous:
        print("3. default model, prequential", flush=True)
        results["prequential"] = model_prequential(model_seeds, epochs, 4, args.cache, workdir)
    if "scaling" in parts or "scaling" not in previous:
        print("4. scaling", flush=True)
        results["scaling"] = scaling_figures(factors)
    results = {**previous, **results}
    save_results(args.out, results)
    sim, lr, model, scale = results["simulator"], results["handbook_lr"], results["prequential"], results["scaling"]

    pub = PUBLISHED
    lines = ["| quantity | measured | published / target | reached |", "|---|---|---|---|"]
    n_tx = [s["n_transactions"] for s in sim]
    rate = [s["fraud_rate"] * 100 for s in sim]
    lines.append(f"| transactions (default size) | {np.mean(n_tx):,.0f} | ≈1,754,155 | {abs(np.mean(n_tx) / 1_754_155 - 1) < 0.03} |")
    lines.append(f"| fraud rate % | {mean_std(rate)} | ≈0.84 | {abs(np.mean(rate) - 0.84) < 0.05} |")
    for k, p in zip((1, 2, 3), pub["simulator"]["scenario_shares"]):
        share = [s[f"scenario_{k}_share"] * 100 for s in sim]
        lines.append(f"| scenario {k} share of frauds % | {mean_std(share)} | ≈{p * 100:.0f} | {abs(np.mean(share) - p * 100) < 3} |")
    lines.append(f"| simulate default size (s) | {mean_std([s['generate_s'] for s in sim])} | well under 60 | {max(s['generate_s'] for s in sim) < 30} |")
    for proto, key in (("single", "lr_single"), ("prequential", "lr_prequential")):
        ap = [r["ap"] for r in lr[proto]]
        auc = [r["auc"] for r in lr[proto]]
        lines.append(f"| LR handbook features, {proto}: AP | {mean_std(ap)} | {pub[key]['ap']} ± 0.03 | {abs(np.mean(ap) - pub[key]['ap']) <= 0.03} |")
        lines.append(f"| LR handbook features, {proto}: AUC | {mean_std(auc)} | {pub[key]['auc']} | - |")
    ps = model["per_seed"]
    m_ap = [r["ap"] for r in ps["model"]]
    m_cp = [r["cp_at_100"] for r in ps["model"]]
    h_ap = [r["ap"] for r in ps["hist_gradient_boosting"]]
    lines.append(f"| default MLP prequential AP | {mean_std(m_ap)} | ≥ 0.70 (handbook NN 0.675, XGBoost 0.687) | {np.mean(m_ap) >= 0.70} |")
    lines.append(f"| default MLP prequential CP@100 | {mean_std(m_cp)} | ≥ 0.31 (handbook XGBoost 0.303) | {np.mean(m_cp) >= 0.31} |")
    lines.append(f"| default MLP prequential AUC | {mean_std([r['auc'] for r in ps['model']])} | handbook NN 0.876 | - |")
    lines.append(f"| in-run HistGradientBoosting AP / CP@100 | {mean_std(h_ap)} / {mean_std([r['cp_at_100'] for r in ps['hist_gradient_boosting']])} | model beats it | {np.mean(m_ap) > np.mean(h_ap)} |")
    lines.append(f"| in-run logistic regression AP (same features) | {mean_std([r['ap'] for r in ps['logistic_regression']])} | - | - |")
    print("\n" + "\n".join(lines))
    print("\n| scale | transactions | simulate (s) | read + features (s) | simulate tx/s | features tx/s |\n|---|---|---|---|---|---|")
    for r in scale:
        print(f"| {r['factor']}x | {r['n_transactions']:,} | {r['simulate_s']} | {r['features_s']} | {r['tx_per_s_simulate']:,} | {r['tx_per_s_features']:,} |")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
