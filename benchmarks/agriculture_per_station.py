"""Per-station test MAE on the development suite's weather sets: pooled models (one network over every station of a
set) against the per-station ridge autoregression baseline (one model fitted on each station alone), read from the
``metrics.json`` of the runs ``benchmarks/dev_suite.py`` left (``breakdowns.test_by_series``; nothing is rerun).

    python benchmarks/agriculture_per_station.py                      # default: the GRU, auto and auto_blend rows
    python benchmarks/agriculture_per_station.py --models default gru_ensemble10

Writes ``benchmarks/results/agriculture_per_station.json`` and prints a markdown table (docs/auto.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sectorkit.core.io import atomic_write_json

from benchmarks.common import RESULTS, ROOT, markdown_table
from benchmarks.dev_suite import DEV_SETS

SETS = tuple(name for name, dev in DEV_SETS.items() if dev.domain == "agriculture")
LOCAL = "ridge_ar"  # the per-station baseline: a ridge autoregression fitted on each station's own training span


def collect(runs: Path, models: list[str]) -> list[dict]:
    """One row per data set, station and model: the model's test MAE on the station's own origins and the local
    baseline's, from the run's metrics.json."""
    rows = []
    for dataset in SETS:
        for model in models:
            file = runs / dataset / model / "metrics.json"
            if not file.is_file():
                continue
            metrics = json.loads(file.read_text())
            shipped = metrics.get("model_name", model)
            for station, values in metrics.get("breakdowns", {}).get("test_by_series", {}).items():
                local = values["baselines"][LOCAL]["mae"]
                best_name = min(values["baselines"], key=lambda b: values["baselines"][b]["mae"])
                rows.append({"dataset": dataset, "station": station, "row": model, "shipped": shipped, "origins": values.get("n_origins"),
                             "model_mae": values["model"]["mae"], "local_mae": local, "best_baseline": best_name,
                             "best_baseline_mae": values["baselines"][best_name]["mae"]})
    return rows


def markdown(rows: list[dict]) -> str:
    headers = ["data set", "station", "origins", "row (shipped)", "model test MAE", "ridge AR per station", "margin",
               "best baseline at the station"]
    return markdown_table(headers, [[r["dataset"], r["station"], r["origins"], f"{r['row']} ({r['shipped']})", f"{r['model_mae']:.3f}",
                                     f"{r['local_mae']:.3f}", f"{(r['local_mae'] - r['model_mae']) / r['local_mae']:+.1%}",
                                     f"{r['best_baseline']} {r['best_baseline_mae']:.3f}"] for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "outputs" / "dev_suite")
    parser.add_argument("--models", nargs="*", default=["default", "auto", "auto_blend"])
    parser.add_argument("--out", type=Path, default=RESULTS / "agriculture_per_station.json")
    args = parser.parse_args(argv)
    rows = collect(args.runs, args.models)
    if not rows:
        raise SystemExit(f"no weather runs under {args.runs}: run benchmarks/dev_suite.py first")
    atomic_write_json(args.out, {"source": "benchmarks/dev_suite.py runs, breakdowns.test_by_series", "local_baseline": LOCAL, "rows": rows})
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
