"""Does a covariate carry signal a linear model can use? Validation MAE of the per-station ridge autoregression
(the ridge AR baseline: last 14 days of the target + day-of-year harmonics) with the last 14 days of each
covariate added, on the benchmark's split; the test span is never read.

A station without an optional covariate sees a constant zero there, which the ridge ignores, so one run gives
every station's figure. Used to cross-check the network's input choices in ``agriculture_selection.py``.

    python benchmarks/agriculture_ridge_inputs.py
    python benchmarks/agriculture_ridge_inputs.py --inputs tmin wind "tmin wind"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.agriculture import data_defaults  # noqa: E402
from benchmarks.common import RESULTS, save_results  # noqa: E402
from sectorkit.domains.agriculture.weather.baselines import fit_ridge_ar, predict_ridge_ar  # noqa: E402
from sectorkit.domains.agriculture.weather.data import WeatherDataModule  # noqa: E402

CANDIDATES = ("tmin", "precip", "wind", "et0")
INPUT_SETS = ("", "tmin", "precip", "wind", "et0", "tmin precip", "tmin precip wind")


def validation_mae(dm: WeatherDataModule, inputs: list[str]) -> dict[str, float]:
    """Per-station validation MAE (mean over horizons) of the ridge AR given the lags of ``inputs`` too."""
    panel, origins, horizon = dm.panel, dm.origins, dm.horizon
    columns = [1 + dm.inputs.index(name) for name in inputs]  # panel.past: target first, then the inputs
    models = fit_ridge_ar(panel, origins["train"], horizon, columns)
    val = origins["val"]
    error = np.abs(panel.target[val[:, None] + np.arange(1, horizon + 1)] - predict_ridge_ar(
        panel, models, val, horizon, columns
    ))
    series = panel.series_index[val]
    return {name: round(float(error[series == s].mean()), 4) for s, name in enumerate(dm.stats.series)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--inputs", nargs="*", default=list(INPUT_SETS),
        help="input sets, each a space-separated list of columns ('' = the target alone)",
    )
    parser.add_argument("--output", default=str(RESULTS / "agriculture_ridge_inputs.json"))
    args = parser.parse_args()
    options = {**data_defaults(), "covariates": [], "optional_covariates": list(CANDIDATES)}
    dm = WeatherDataModule(**options)
    dm.setup("fit")
    rows = {inputs or "none": validation_mae(dm, inputs.split()) for inputs in args.inputs}
    print("| lags of | " + " | ".join(dm.stats.series) + " |")
    print("|---|" + "---|" * len(dm.stats.series))
    for name, maes in rows.items():
        print(f"| {name} | " + " | ".join(f"{maes[s]:.3f}" for s in dm.stats.series) + " |")
    save_results(Path(args.output), {"command": " ".join(sys.argv), "protocol": __doc__.split("\n\n")[0],
                                     "validation_mae": rows})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
