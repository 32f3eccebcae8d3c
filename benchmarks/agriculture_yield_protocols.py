"""Crop-yield protocols as a user runs them: ``sectorkit train domain=agriculture experiment=yield
data.protocol=<protocol>`` on the built-in crop-response sample, one run per protocol and seed.

Each run goes through the same pipeline as the command line (``sectorkit.core.pipeline.train``: one fit that
trains one yield network per fold side by side, early stopping on the folds' pooled validation NRMSE, the test
with the best checkpoint, the baselines fitted per fold, metrics.json and report.md), and its pooled test NRMSE,
the mean of its per-fold NRMSE (``breakdowns.test_by_fold``) and the baselines' pooled NRMSE are collected.

    python benchmarks/agriculture_yield_protocols.py                  # 3 seeds, the three protocols
    python benchmarks/agriculture_yield_protocols.py --seeds 1 --protocols leave_one_year_out
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import save_results  # noqa: E402
from sectorkit.core.config import compose_config  # noqa: E402
from sectorkit.core.pipeline import train  # noqa: E402
from sectorkit.domains.agriculture import DOMAIN  # noqa: E402
from sectorkit.domains.agriculture.crop_yield.protocols import PROTOCOLS  # noqa: E402


def run_protocol(protocol: str, seed: int, folder: Path, overrides: list[str]) -> dict:
    """One ``experiment=yield data.protocol=<protocol> seed=<seed>`` training run; its figures from metrics.json."""
    import json

    cfg = compose_config(
        DOMAIN,
        ["experiment=yield", f"data.protocol={protocol}", f"seed={seed}", f"paths.output_dir={folder}", "~logger",
         "callbacks.progress_bar=null", "callbacks.model_summary=null", "trainer.enable_progress_bar=false", *overrides],
    )
    started = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - started
    metrics = json.loads((folder / "metrics.json").read_text())
    folds = metrics["breakdowns"]["test_by_fold"]
    return {
        "nrmse": metrics["test"]["nrmse"],
        "mean_fold_nrmse": float(np.mean([fold["model"]["nrmse"] for fold in folds])),
        "baselines_nrmse": {name: b["nrmse"] for name, b in metrics["baselines"].items()},
        "folds": len(folds),
        "n_predictions": int(sum(fold["n"] for fold in folds)),
        "epochs": metrics["epochs"],
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--override", nargs="*", default=[], help="extra config overrides, e.g. data.test_years=10")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "agriculture_yield_protocols.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    results: dict = {"command": " ".join(sys.argv), "torch_threads": 1, "overrides": args.override, "protocols": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in args.protocols:
            runs = [run_protocol(protocol, seed, Path(tmp) / f"{protocol}_{seed}", args.override) for seed in range(args.seeds)]
            scores = [r["nrmse"] for r in runs]
            results["protocols"][protocol] = {
                "nrmse": {"mean": float(np.mean(scores)), "std": float(np.std(scores))},
                "mean_fold_nrmse": float(np.mean([r["mean_fold_nrmse"] for r in runs])),
                "baselines_nrmse": runs[0]["baselines_nrmse"],
                "runs": runs,
            }
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    save_results(Path(args.output), results)
    print("| protocol | folds | predictions | model NRMSE (pooled) | mean of fold NRMSE | historical_average | "
          "previous_year | linear_trend | s / run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for protocol, r in results["protocols"].items():
        b, first = r["baselines_nrmse"], r["runs"][0]
        seconds = np.mean([run["seconds"] for run in r["runs"]])
        print(f"| {protocol} | {first['folds']} | {first['n_predictions']} | {r['nrmse']['mean']:.2f} ± {r['nrmse']['std']:.2f} "
              f"| {r['mean_fold_nrmse']:.2f} | {b['historical_average']:.2f} | {b['previous_year']:.2f} | "
              f"{b['linear_trend']:.2f} | {seconds:.0f} |")
    print(f"\nwrote {args.output} in {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
