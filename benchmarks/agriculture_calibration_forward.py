"""Should the weather interval calibration be allowed to move the median? A forward-in-time check on the
validation span only.

The recentred rules of ``weather.intervals`` shift each series' median by its validation bias; their choice is
cross-fitted on the two halves of the validation span, which cannot tell whether a bias persists forward in time.
Here each station's validation origins are split in time: the calibration (rule choice and offsets, as the module
fits them) is fitted on the earlier half only and scored on the later half, for the selection among every rule
(``all_rules``, the former default), among the rules that keep the median (``keep_median``, the default since),
for a forward-only selection among every rule (``forward_selection``: the rule that wins when fitted on the
earlier half of the fitting windows and scored on the later half, not both ways) and for each rule given to
every series. The checkpoints are those of a development-suite run
(``benchmarks/dev_suite.py --models default auto``): the default model and every ``model=auto`` candidate of each
weather set; the test span is never read. Figures in the data's units (degC).

    python benchmarks/agriculture_calibration_forward.py
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint, restore_datamodule_state
from sectorkit.core.pipeline import build_datamodule
from sectorkit.domains.agriculture.metrics import pinball_loss
from sectorkit.domains.agriculture.weather.intervals import (
    CANDIDATES,
    FALLBACK,
    KEEP_MEDIAN,
    conformal_offsets,
    fit_intervals,
    median_band,
    rule_offsets,
    rule_pinball,
    with_intervals,
)

from benchmarks.agriculture_selection import validation_outputs
from benchmarks.common import RESULTS, save_results
from benchmarks.dev_suite import DEV_SETS

SETS = tuple(name for name, dev in DEV_SETS.items() if dev.domain == "agriculture")
POLICIES = {"all_rules": tuple(CANDIDATES), "keep_median": KEEP_MEDIAN}


def newest_best(folder: Path) -> Path | None:
    files = sorted(folder.glob("best*.ckpt"), key=lambda f: f.stat().st_mtime)
    return files[-1] if files else None


def forward_rule(residuals: torch.Tensor, quantiles: tuple[float, ...]) -> str:
    """The rule with the lowest pinball when fitted on the earlier half of ``residuals`` (in time order) and scored
    on the later half only: a selection that sees whether a bias persists forward."""
    half = len(residuals) // 2
    if half < 2:
        return FALLBACK
    fit, held_out = residuals[:half], residuals[half:]
    one = torch.zeros(len(fit), dtype=torch.long)
    learned, band = conformal_offsets(one, fit, quantiles, 1)[0], median_band(one, fit, quantiles, 1)[0]
    scores = {rule: rule_pinball(held_out, learned, band, rule, quantiles) for rule in CANDIDATES}
    return min(scores, key=scores.get)


def forward_scores(out) -> dict[str, dict]:
    """Per station: fitted on the earlier half of its validation origins, scored on the later half."""
    z, target, series, origins, q = out.z, out.target, out.series, out.origins, out.quantiles
    residuals = target.unsqueeze(-1) - z
    median = list(q).index(0.5)
    n = len(out.names)
    scores: dict[str, dict] = {}
    for s, station in enumerate(out.names):
        rows = torch.nonzero(series == s).flatten()
        rows = rows[torch.argsort(origins[rows], stable=True)]
        half, scale = len(rows) // 2, out.scale[rows[0]].item()
        early, late = rows[:half], rows[half:]
        fitted = {name: fit_intervals(series[early], residuals[early], origins[early], q, n, rules)
                  for name, rules in POLICIES.items()}
        forward = forward_rule(residuals[early], q)
        fitted["forward_selection"] = rule_offsets([forward] * n, series[early], residuals[early], q)
        fitted.update({rule: rule_offsets([rule] * n, series[early], residuals[early], q) for rule in CANDIDATES})
        row: dict = {"windows": [len(early), len(late)], "pinball": {}, "mae": {}, "chosen": {"forward_selection": forward}}
        held = series[late]
        for name, (calibration, band, weight) in fitted.items():
            pred = with_intervals(z[late], calibration[held], band[held], weight[held], q)
            row["pinball"][name] = pinball_loss(pred, target[late], q).mean().item() * scale
            row["mae"][name] = (pred[..., median] - target[late]).abs().mean().item() * scale
            if name in POLICIES:
                moved = band[s, :, median].abs().max().item() > 0 and weight[s].item() > 0
                row["chosen"][name] = {"band_weight": weight[s].item(), "moves_median": bool(moved)}
        scores[station] = row
    return scores


def relative_summary(results: dict, keep: Callable[[str], bool]) -> dict[str, dict]:
    """Per policy, over the (data set, model, station) rows of the models ``keep`` accepts: its later-half pinball
    and MAE relative to ``keep_median`` (mean, rows worse, rows better, worst row)."""
    rows = [row for models in results.values() for model, entry in models.items() if keep(model) for row in entry["stations"].values()]
    summary = {}
    for policy in (*POLICIES, "forward_selection", *CANDIDATES):
        entry: dict = {"rows": len(rows)}
        for metric in ("pinball", "mae"):
            rel = [row[metric][policy] / row[metric]["keep_median"] - 1 for row in rows]
            entry[metric] = {"mean_relative": sum(rel) / len(rel), "worse": sum(r > 1e-9 for r in rel),
                             "better": sum(r < -1e-9 for r in rel), "worst": max(rel)}
        summary[policy] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "outputs" / "dev_suite")
    parser.add_argument("--out", type=Path, default=RESULTS / "agriculture_calibration_forward.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict = {}
    for dataset in SETS:
        run = args.runs / dataset / "default"
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        dm = build_datamodule(cfg)
        dm.prepare_data()
        dm.setup("fit")
        folders = {"default": run / "checkpoints"}
        candidates = sorted((args.runs / dataset / "auto" / "candidates").iterdir())
        folders.update({f"auto/{c.name}": c / "checkpoints" for c in candidates})
        results[dataset] = {}
        for model, folder in folders.items():
            path = newest_best(folder)
            if path is None:
                continue
            checkpoint = load_checkpoint(path)
            restore_datamodule_state(dm, checkpoint)
            module = model_from_checkpoint(checkpoint)
            stations = forward_scores(validation_outputs(module, dm))
            results[dataset][model] = {"checkpoint": str(path.relative_to(ROOT)), "stations": stations}
            print(dataset, model, {st: {p: round(v["pinball"][p], 4) for p in POLICIES} for st, v in stations.items()}, flush=True)
    summary = {"every_model": relative_summary(results, lambda model: True),
               "default_and_shipped": relative_summary(results, lambda model: model in ("default", "auto/blend"))}
    print(json.dumps(summary, indent=1))
    save_results(args.out, {"summary": summary, "results": results})


if __name__ == "__main__":
    main()
