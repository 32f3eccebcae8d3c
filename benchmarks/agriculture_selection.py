"""Agriculture model selection on the validation span only: the weather network with option overrides, scored
by validation MAE and by the cross-fitted validation pinball loss of every interval rule.

The test span is never read. Each seed trains the network as ``benchmarks/agriculture.py`` does (same split,
same data module, best validation-MAE checkpoint), then each scored station's validation origins are split into
an early and a late half in time: every interval rule of ``weather.intervals.CANDIDATES`` given to every series
(and ``auto``, the model's own per-series choice, made inside the half it is fitted on) is fitted on one half and
scored on the other, both ways. Figures are in the data's units,
mean ± std over seeds; ``benchmarks/results/agriculture_selection.json`` summarises the runs behind the defaults.

    python benchmarks/agriculture_selection.py --name default
    python benchmarks/agriculture_selection.py --name embedding4 --model '{"series_embedding": 4}'
    python benchmarks/agriculture_selection.py --name hidden64 --net '{"hidden": 64}'
    python benchmarks/agriculture_selection.py --name seattle_only --stations seattle --epochs 40
    python benchmarks/agriculture_selection.py --name lookbacks_56_112 --also '{"lookback": 112}'
    python benchmarks/agriculture_selection.py --name finetune_seattle --finetune seattle
    python benchmarks/agriculture_selection.py --name more_stations --path stations.csv \\
        --stations seattle champion brussels          # train on every series of a long table, score these
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.agriculture import fit_weather  # noqa: E402
from benchmarks.common import RESULTS, quiet_lightning, save_results  # noqa: E402
from sectorkit.domains.agriculture.metrics import pinball_loss  # noqa: E402
from sectorkit.domains.agriculture.weather.data import WeatherDataModule  # noqa: E402
from sectorkit.domains.agriculture.weather.intervals import CANDIDATES, fit_intervals, rule_offsets, with_intervals  # noqa: E402
from sectorkit.domains.agriculture.weather.module import WeatherForecaster  # noqa: E402

MODES = ("auto", *CANDIDATES)  # the model's cross-fitted choice per series, and each rule for every series


def mode_offsets(
    mode: str, series: torch.Tensor, residuals: torch.Tensor, origins: torch.Tensor, quantiles: tuple[float, ...],
    n_series: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(calibration, band, band_weight)`` of one interval mode fitted on validation ``residuals``: ``auto`` as the
    model fits it (a cross-fitted rule per series), or one rule of ``CANDIDATES`` for every series."""
    if mode == "auto":
        return fit_intervals(series, residuals, origins, quantiles, n_series)
    return rule_offsets([mode] * n_series, series, residuals, quantiles)


@dataclass
class ValidationOutputs:
    """A network's scaled quantiles ``z (N, H, Q)`` on the validation windows, with their scaled targets
    ``(N, H)``, series index, origin row and series scale ``(N,)``."""

    z: torch.Tensor
    target: torch.Tensor
    series: torch.Tensor
    origins: torch.Tensor
    scale: torch.Tensor
    names: list[str]
    quantiles: tuple[float, ...]


def validation_outputs(module: WeatherForecaster, dm: WeatherDataModule) -> ValidationOutputs:
    """Run the network (before calibration) over every validation window of ``dm``."""
    batch = next(iter(torch.utils.data.DataLoader(dm.dataset("val"), batch_size=len(dm.dataset("val")))))
    module.eval()
    with torch.inference_mode():
        z = module.network_output(batch["past"], batch["future"], batch["series"])
    target = (batch["target"] - batch["loc"][:, None]) / batch["scale"][:, None]
    return ValidationOutputs(
        z, target, batch["series"], batch["origin"], batch["scale"], list(dm.stats.series), tuple(module.quantiles)
    )


def cross_fitted_scores(out: ValidationOutputs, stations: list[str] | None = None) -> dict[str, dict]:
    """Per scored station: validation MAE of the network's median and the two-fold chronological cross-fit of
    the pinball loss (and MAE, which the recentred rules move) of each interval mode, in the data's units."""
    z, target, series, origins, quantiles = out.z, out.target, out.series, out.origins, out.quantiles
    residuals = target.unsqueeze(-1) - z
    median = list(quantiles).index(0.5)
    scores: dict[str, dict] = {}
    for s, station in enumerate(out.names):
        if stations is not None and station not in stations:
            continue
        rows = torch.nonzero(series == s).flatten()
        rows = rows[torch.argsort(origins[rows])]
        half, scale = len(rows) // 2, out.scale[rows[0]].item()
        folds = ((rows[:half], rows[half:]), (rows[half:], rows[:half]))
        mae = (target[rows] - z[rows][..., median]).abs().mean().item() * scale
        station_scores: dict = {"mae": mae, "pinball": {}, "mae_of": {}}
        for mode in MODES:
            pinball = held_mae = 0.0
            for fit, held_out in folds:
                calibration, band, weight = mode_offsets(
                    mode, series[fit], residuals[fit], origins[fit], quantiles, len(out.names)
                )
                held = series[held_out]
                pred = with_intervals(z[held_out], calibration[held], band[held], weight[held], quantiles)
                pinball += pinball_loss(pred, target[held_out], quantiles).mean().item() * scale / 2
                held_mae += (pred[..., median] - target[held_out]).abs().mean().item() * scale / 2
            station_scores["pinball"][mode], station_scores["mae_of"][mode] = pinball, held_mae
        scores[station] = station_scores
    return scores


def averaged_outputs(outputs: list[ValidationOutputs]) -> ValidationOutputs:
    """The quantile average of several networks' outputs on the same validation windows (aligned by origin;
    networks with different lookbacks forecast from the same origins, only their windows are longer or shorter)."""
    aligned = []
    for out in outputs:
        order = torch.argsort(out.origins)
        fields = ("z", "target", "series", "origins", "scale")
        aligned.append(replace(out, **{k: getattr(out, k)[order] for k in fields}))
    first = aligned[0]
    for out in aligned[1:]:
        if not (torch.equal(out.origins, first.origins) and torch.allclose(out.target, first.target)):
            raise ValueError("the combined networks were scored on different validation windows")
    return replace(first, z=torch.stack([out.z for out in aligned]).mean(0))


def finetuned_on_station(
    module: WeatherForecaster, dm: WeatherDataModule, station: str, lr: float, epochs: int, seed: int, workdir: Path
) -> WeatherForecaster:
    """A copy of ``module`` trained further on ``station``'s training windows alone (batch 32, AdamW at ``lr``),
    the epoch with that station's best validation MAE kept."""
    s = dm.stats.series.index(station)

    def windows(stage: str) -> Subset:
        return Subset(dm.dataset(stage), np.flatnonzero(dm.panel.series_index[dm.origins[stage]] == s).tolist())

    pl.seed_everything(seed, workers=True, verbose=False)
    tuned = copy.deepcopy(module).train()
    tuned.optimizer_cfg = {**tuned.optimizer_cfg, "lr": lr}
    ckpt = ModelCheckpoint(
        dirpath=workdir / f"finetune_{station}_{seed}_{time.time_ns()}", monitor="val/mae", mode="min"
    )
    trainer = pl.Trainer(
        max_epochs=epochs, logger=False, callbacks=[ckpt], enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", deterministic=True, num_sanity_val_steps=0,
    )
    train, val = DataLoader(windows("train"), batch_size=32, shuffle=True), DataLoader(windows("val"), batch_size=512)
    trainer.fit(tuned, train, val)
    return WeatherForecaster.load_from_checkpoint(ckpt.best_model_path, weights_only=True)


def summarise(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    """Mean and std over seeds of every figure of :func:`cross_fitted_scores`."""

    def stat(values: list[float]) -> dict[str, float]:
        return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4)}

    return {
        station: {
            "mae": stat([run[station]["mae"] for run in per_seed]),
            **{
                f"{key}_{mode}": stat([run[station][key][mode] for run in per_seed])
                for key in ("pinball", "mae_of")
                for mode in MODES
            },
        }
        for station in per_seed[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the run's name (its JSON file name)")
    parser.add_argument("--network", default="gru", help="the model config (model=<name>) to train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--lookback", type=int, default=56)
    parser.add_argument("--path", default=None, help="a long-format table to train on (default: bundled stations)")
    parser.add_argument(
        "--stations", nargs="+", default=["seattle", "champion"],
        help="stations scored (with the bundled data also the stations trained on)",
    )
    parser.add_argument("--data", default="{}", help="JSON of data-module options, e.g. '{\"batch_size\": 64}'")
    parser.add_argument("--model", default="{}", help="JSON of model options, e.g. '{\"ensemble\": 3}'")
    parser.add_argument("--net", default="{}", help="JSON of the network's options (model.net), e.g. '{\"hidden\": 64}'")
    parser.add_argument(
        "--also", nargs="*", default=[], metavar="JSON",
        help="more option sets trained on the same seed, their quantiles averaged with the main run's, "
        "e.g. '{\"lookback\": 112}' (a combination of networks)",
    )
    parser.add_argument("--finetune", default=None, help="a station to fine-tune the pooled network on, alone")
    parser.add_argument("--finetune-lr", type=float, default=2e-4)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument(
        "--output", default=None, help="JSON path (default benchmarks/results/agriculture_selection/NAME.json)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    quiet_lightning()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "agriculture_selection"
    base = {
        "network": args.network, "epochs": args.epochs, "lr": args.lr, "lookback": args.lookback,
        "net": json.loads(args.net), "stations": tuple(args.stations),
        "data_options": {**json.loads(args.data), **({"path": args.path} if args.path else {})},
        "weight_decay": args.weight_decay, **json.loads(args.model),
    }
    option_sets = [base, *({**base, **json.loads(also)} for also in args.also)]
    per_seed, fit_seconds = [], []
    for seed in args.seeds:
        start, fit_s = time.perf_counter(), 0.0
        outputs = []
        for options in option_sets:
            dm, best, seconds = fit_weather(seed=seed, workdir=workdir, **options)
            out = validation_outputs(best, dm)
            if args.finetune:  # the station's rows from the fine-tuned copy, the other stations' from the pooled model
                tuned = finetuned_on_station(
                    best, dm, args.finetune, args.finetune_lr, args.finetune_epochs, seed, workdir
                )
                rows = (out.series == out.names.index(args.finetune))[:, None, None]
                out = replace(out, z=torch.where(rows, validation_outputs(tuned, dm).z, out.z))
            outputs.append(out)
            fit_s += seconds
        per_seed.append(cross_fitted_scores(averaged_outputs(outputs), args.stations))
        fit_seconds.append(round(fit_s, 1))
        print(f"seed {seed}: fit {fit_s:.0f} s, scored {time.perf_counter() - start - fit_s:.0f} s", flush=True)
    summary = summarise(per_seed)
    results = {"command": " ".join(sys.argv), "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
               "options": vars(args), "fit_seconds": fit_seconds, "summary": summary, "per_seed": per_seed}
    path = Path(args.output or RESULTS / "agriculture_selection" / f"{args.name}.json")
    save_results(path, results)
    for station, s in summary.items():
        pinballs = " ".join(f"{m} {s[f'pinball_{m}']['mean']:.4f}" for m in MODES)
        print(f"{args.name} {station}: MAE {s['mae']['mean']:.4f} ± {s['mae']['std']:.4f}; pinball {pinballs}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
