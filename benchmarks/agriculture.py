"""Agriculture benchmark: weather forecasting on the bundled real stations and yield forecasting on the
crop-response sample, against the in-run baselines.

Weather protocol: both stations (Seattle 2012-2015, Champion 1982-2018) in one run, chronological split per
station (60 % train, 15 % validation, last 25 % test), rolling-origin backtest over the whole test span
with one origin per day, horizons 1..7, quantiles 0.1/0.5/0.9. The network is trained on the two stations
together and selected on validation MAE; baselines are fitted per station on the training span and their
intervals come from validation error quantiles. Figures are per station, mean ± std over seeds; the margin over
the best strong baseline also gets a 95 % interval from a paired moving-block bootstrap over the test origins.

Yield protocol: expanding window (predict year t from years < t, one refit per test year, last
``--yield-years`` years) and leave-one-year-out (every year held out once), NRMSE = 100 RMSE / mean; the folds
are those of ``data.protocol`` without validation years (``crop_yield.protocols.make_folds``), and
``benchmarks/agriculture_yield_protocols.py`` measures the protocols as a training run runs them.

    python benchmarks/agriculture.py --quick      # a few minutes on 2 CPU cores
    python benchmarks/agriculture.py              # full: 3 seeds, more epochs, all networks
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402

from benchmarks.common import paired_block_bootstrap, save_results  # noqa: E402
from sectorkit.core.config import compose_config  # noqa: E402
from sectorkit.domains.agriculture import DOMAIN  # noqa: E402
from sectorkit.domains.agriculture.crop_yield.baselines import YIELD_BASELINES  # noqa: E402
from sectorkit.domains.agriculture.crop_yield.data import YieldDataModule  # noqa: E402
from sectorkit.domains.agriculture.crop_yield.protocols import expanding_window, leave_one_year_out  # noqa: E402
from sectorkit.domains.agriculture.metrics import QUANTILES, nrmse, pinball_loss, score_forecasts  # noqa: E402
from sectorkit.domains.agriculture.weather.baselines import weather_baseline_forecasts  # noqa: E402
from sectorkit.domains.agriculture.weather.data import WeatherDataModule  # noqa: E402
from sectorkit.domains.agriculture.weather.module import WeatherForecaster  # noqa: E402

STRONG = ("damped_anomaly", "ridge_ar")
METRICS = ("mae", "rmse", "mase", "smape", "pinball", "coverage")


def model_defaults(network: str) -> dict:
    """The composed ``model=<network>`` config (``domains/agriculture/conf/model/<network>.yaml`` on its schema):
    what a user's run gets by default."""
    options = OmegaConf.to_container(compose_config(DOMAIN, [f"model={network}"]).model, resolve=True)
    options.pop("_target_")
    return options


def data_defaults() -> dict:
    """The options of the composed ``data=weather`` config that shape the inputs (covariates, split, batch size,
    ...): what a user's run on the bundled stations gets by default."""
    options = OmegaConf.to_container(compose_config(DOMAIN, ["data=weather"]).data, resolve=True)
    return {k: v for k, v in options.items() if k not in ("_target_", "path", "seed", "synthetic")}


def fit_weather(
    network: str,
    seed: int,
    epochs: int,
    lr: float,
    lookback: int,
    workdir: Path,
    net: dict | None = None,
    stations: tuple[str, ...] = ("seattle", "champion"),
    data_options: dict | None = None,
    weight_decay: float = 1e-4,
    **model_options,
) -> tuple[WeatherDataModule, WeatherForecaster, float]:
    """Fit the ``network`` model config (its defaults, its ``net`` node updated with ``net`` and its options with
    ``model_options``) on the bundled ``stations`` (or the long table of ``data_options["path"]``); returns the
    data module, the checkpoint with the best validation MAE and the fit seconds."""
    pl.seed_everything(seed, workers=True, verbose=False)
    dm = WeatherDataModule(
        **{**data_defaults(), "stations": stations, "lookback": lookback, "seed": seed, **(data_options or {})}
    )
    dm.setup("fit")
    options = model_defaults(network)
    options["net"] = {**options["net"], **(net or {})}
    options.update(model_options)
    module = WeatherForecaster(
        **options,
        **dm.model_kwargs(),
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": lr, "weight_decay": weight_decay},
    )
    module.prepare_fit(dm.training_state())
    ckpt = ModelCheckpoint(
        dirpath=workdir / f"{network}_{seed}_{time.time_ns()}", monitor="val/mae", mode="min", save_top_k=1
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        callbacks=[ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        deterministic=True,
    )
    start = time.perf_counter()
    trainer.fit(module, dm)
    fit_s = time.perf_counter() - start
    return dm, WeatherForecaster.load_from_checkpoint(ckpt.best_model_path, weights_only=True), fit_s


def train_weather(
    network: str, seed: int, epochs: int, lr: float, lookback: int, workdir: Path, **options
) -> tuple[WeatherDataModule, np.ndarray, float]:
    """:func:`fit_weather`, then the test quantiles of the selected checkpoint."""
    dm, best, fit_s = fit_weather(network, seed, epochs, lr, lookback, workdir, **options)
    return dm, torch.cat(best.predict_loader(dm.test_dataloader())).numpy(), fit_s


def weather_benchmark(
    networks: list[str], seeds: list[int], epochs: int, lr: float, lookback: int, workdir: Path
) -> dict:
    """Per-station, per-horizon metrics of each network (over seeds) and of every baseline."""
    out: dict = {
        "protocol": "bundled stations, split 60/15/25 per station, 1 origin per test day, H=7",
        "mase_scale": "in-sample one-day naive MAE on the training span",
        "stations": {},
    }
    runs: dict[str, list] = {n: [] for n in networks}
    for network in networks:
        for seed in seeds:
            runs[network].append(train_weather(network, seed, epochs, lr, lookback, workdir))
    dm = runs[networks[0]][0][0]
    panel, origins, horizon = dm.panel, dm.origins, dm.horizon
    for s, station in enumerate(dm.stats.series):
        mask = panel.series_index[origins["test"]] == s
        sub = {k: v[panel.series_index[v] == s] for k, v in origins.items()}
        target = panel.target[sub["test"][:, None] + np.arange(1, horizon + 1)]
        scale = dm.stats.mase_scale[panel.series_index[sub["test"]]]
        base_forecasts = weather_baseline_forecasts(panel, sub, horizon)
        res = {
            "n_origins": int(mask.sum()),
            "mase_scale_value": float(dm.stats.mase_scale[s]),
            "baselines": {b: score_forecasts(p, target, scale) for b, p in base_forecasts.items()},
            "models": {},
        }
        base_losses = {b: origin_losses(p, target) for b, p in base_forecasts.items()}
        for network, seed_runs in runs.items():
            scores = [score_forecasts(preds[mask], target, scale) for _, preds, _ in seed_runs]
            entry = {m: _mean_std([sc[m] for sc in scores]) for m in METRICS}
            entry["per_horizon"] = {m: np.mean([sc["per_horizon"][m] for sc in scores], 0).tolist() for m in METRICS}
            entry["per_horizon_std"] = {
                m: np.std([sc["per_horizon"][m] for sc in scores], 0).tolist() for m in ("mae", "pinball")
            }
            entry["fit_seconds"] = _mean_std([fit for _, _, fit in seed_runs])
            best = min(STRONG, key=lambda b: res["baselines"][b]["mae"])
            entry["best_strong_baseline"] = best
            base_h = np.array(res["baselines"][best]["per_horizon"]["mae"])
            entry["mae_margin_pct_per_horizon"] = (
                100 * (base_h - np.array(entry["per_horizon"]["mae"])) / base_h
            ).tolist()
            pin_h = np.array(res["baselines"][best]["per_horizon"]["pinball"])
            entry["pinball_margin_pct_per_horizon"] = (
                100 * (pin_h - np.array(entry["per_horizon"]["pinball"])) / pin_h
            ).tolist()
            entry["beats_best_baseline_mae"] = entry["mae"]["mean"] < res["baselines"][best]["mae"]
            best_pin = min(STRONG, key=lambda b: res["baselines"][b]["pinball"])
            entry["beats_best_baseline_pinball"] = entry["pinball"]["mean"] < res["baselines"][best_pin]["pinball"]
            entry["coverage_in_75_85"] = 0.75 <= entry["coverage"]["mean"] <= 0.85
            # per-origin losses averaged over seeds, against the best strong baseline of each metric
            losses = [origin_losses(preds[mask], target) for _, preds, _ in seed_runs]
            entry["margin_ci"] = {
                metric: {
                    "baseline": name,
                    **paired_block_bootstrap(np.mean([loss[k] for loss in losses], 0), base_losses[name][k]),
                }
                for k, (metric, name) in enumerate((("mae", best), ("pinball", best_pin)))
            }
            res["models"][network] = entry
        out["stations"][station] = res
    return out


def yield_benchmark(seeds: list[int], years: int, epochs: int) -> dict:
    """Expanding-window and leave-one-year-out NRMSE of the yield network vs the baselines."""
    dm = YieldDataModule()
    frame = dm.load_tables()
    features = dm.feature_names
    out = {"n_regions": int(frame["region"].nunique()), "years": [int(frame["year"].min()), int(frame["year"].max())]}
    for name, protocol in (("expanding_window", expanding_window), ("leave_one_year_out", leave_one_year_out)):
        model_scores, base_scores = [], None
        for seed in seeds:
            pred = protocol(frame, features, seed=seed, epochs=epochs, last_years=years)
            model_scores.append(nrmse(pred["predicted"], pred["yield"]))
            if base_scores is None:
                base_scores = {b: nrmse(pred[b], pred["yield"]) for b in YIELD_BASELINES}
        out[name] = {
            "model_nrmse": _mean_std(model_scores),
            "baselines_nrmse": base_scores,
            "n_predictions": int(len(pred)),
            "beats_all_baselines": bool(np.mean(model_scores) < min(base_scores.values())),
        }
    return out


def origin_losses(preds: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute error of the median and pinball loss per forecast origin, each averaged over horizons."""
    pinball = pinball_loss(torch.as_tensor(preds), torch.as_tensor(target), QUANTILES).mean(-1).numpy()
    return np.abs(preds[..., QUANTILES.index(0.5)] - target).mean(-1), pinball


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def markdown(results: dict) -> str:
    """The tables printed at the end of a run."""
    lines = [
        "### Weather (test span, mean over horizons 1..7; model mean ± std over seeds)",
        "",
        "| station | model | MAE | pinball | coverage | MASE | best strong baseline MAE | its pinball "
        "| MAE margin % per horizon h1..h7 | pinball margin % per horizon h1..h7 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for station, res in results["weather"]["stations"].items():
        for network, e in res["models"].items():
            b = res["baselines"][e["best_strong_baseline"]]
            margins = " ".join(f"{m:+.1f}" for m in e["mae_margin_pct_per_horizon"])
            pin_margins = " ".join(f"{m:+.1f}" for m in e.get("pinball_margin_pct_per_horizon", []))
            lines.append(
                f"| {station} | {network} | {e['mae']['mean']:.3f} ± {e['mae']['std']:.3f} | "
                f"{e['pinball']['mean']:.3f} ± {e['pinball']['std']:.3f} | {e['coverage']['mean']:.3f} | "
                f"{e['mase']['mean']:.3f} | {e['best_strong_baseline']} {b['mae']:.3f} | {b['pinball']:.3f} | {margins} | {pin_margins} |"
            )
    lines += [
        "",
        "Margin over the best strong baseline, % of its loss (positive = model better), with a 95 % interval from a "
        "paired moving-block bootstrap over the test origins (blocks of 14 days; per-origin loss averaged over seeds):",
        "",
        "| station | model | MAE margin % [95 % CI] | pinball margin % [95 % CI] |",
        "|---|---|---|---|",
    ]
    for station, res in results["weather"]["stations"].items():
        for network, e in res["models"].items():
            cells = [
                f"{c['margin_pct']:+.1f} [{c['ci95_low']:+.1f}, {c['ci95_high']:+.1f}] vs {c['baseline']}"
                for c in (e["margin_ci"][m] for m in ("mae", "pinball"))
            ]
            lines.append(f"| {station} | {network} | {cells[0]} | {cells[1]} |")
    lines += ["", "| station | baseline | MAE | pinball | coverage | MASE |", "|---|---|---|---|---|---|"]
    for station, res in results["weather"]["stations"].items():
        for name, b in res["baselines"].items():
            lines.append(
                f"| {station} | {name} | {b['mae']:.3f} | {b['pinball']:.3f} | {b['coverage']:.3f} | {b['mase']:.3f} |"
            )
    y = results.get("yield")
    if y:
        lines += [
            "",
            "### Yield (NRMSE %, lower is better)",
            "",
            "| protocol | model | historical_average | previous_year | linear_trend | beats all |",
            "|---|---|---|---|---|---|",
        ]
        for name in ("expanding_window", "leave_one_year_out"):
            r = y[name]
            bs = r["baselines_nrmse"]
            lines.append(
                f"| {name} ({r['n_predictions']} predictions) "
                f"| {r['model_nrmse']['mean']:.2f} ± {r['model_nrmse']['std']:.2f} | "
                f"{bs['historical_average']:.2f} | {bs['previous_year']:.2f} | {bs['linear_trend']:.2f} "
                f"| {r['beats_all_baselines']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="the default network (GRU) only, fewer epochs (a few minutes)"
    )
    parser.add_argument("--networks", nargs="+", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lookback", type=int, default=56)
    parser.add_argument("--yield-years", type=int, default=10)
    parser.add_argument("--skip-yield", action="store_true")
    parser.add_argument(
        "--output", default=None, help="JSON path (default benchmarks/results/agriculture[_quick].json)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    networks = args.networks or (["gru"] if args.quick else ["gru", "dlinear", "nhits", "patchtst"])
    epochs = args.epochs or (12 if args.quick else 20)
    seeds = list(range(args.seeds))
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "agriculture_benchmark"
    start = time.perf_counter()
    results = {
        "command": " ".join(sys.argv),
        "torch_threads": torch.get_num_threads(),
        "epochs": epochs,
        "seeds": seeds,
        "lookback": args.lookback,
        "lr": args.lr,
        "weather": weather_benchmark(networks, seeds, epochs, args.lr, args.lookback, workdir),
    }
    if not args.skip_yield:
        results["yield"] = yield_benchmark(seeds, args.yield_years, 200 if args.quick else 300)
    results["total_seconds"] = time.perf_counter() - start
    path = Path(args.output or ROOT / "benchmarks" / "results" / f"agriculture{'_quick' if args.quick else ''}.json")
    save_results(path, results)
    print(markdown(results))
    print(f"\nwrote {path} in {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
