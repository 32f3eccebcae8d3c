"""A pretrained time-series foundation model (``model=timesfm``) zero-shot and fine-tuned on the bundled stations,
against the run's baselines (ridge AR, damped anomaly, ...) and, by default, the default GRU ensemble.

Protocol: the bundled Seattle + Champion stations (``data=weather``, lookback 56, horizon 7, the chronological
60/15/25 split of every run); each fine-tuning mode is one ``sectorkit train`` run (``model=timesfm
model.net.finetune=MODE``; zero-shot trains nothing, the others train at most ``--epochs`` epochs with early
stopping on validation MAE, AdamW lr ``--lr``), tested from its best checkpoint; the baselines are fitted
in the same runs on the training span. Pooled test MAE / pinball / 10-90 % coverage and each station's MAE and
pinball (``breakdowns.test_by_series`` of metrics.json) are kept per seed.

The weights are not downloaded here: fetch them once, then run (a GPU is advised for ``full``):

    hf download google/timesfm-2.5-200m-transformers
    python benchmarks/agriculture_foundation.py --model-id google/timesfm-2.5-200m-transformers
    python benchmarks/agriculture_foundation.py --model-id google/timesfm-2.5-200m-transformers \\
        --override trainer.accelerator=gpu trainer.precision=bf16-mixed

Without the weights the script writes ``status: not_measured`` with the reason and the command, and no figure.
``--plumbing`` runs the same protocol on a tiny randomly initialised TimesFM 2.5 written to a temporary folder:
a check that every mode runs end to end, labelled as such; its figures say nothing about TimesFM.

``--memory`` measures what each mode needs instead, without the weights: a TimesFM 2.5 of the library's default
configuration (the 231 M-parameter shapes) with random weights is saved and loaded like the checkpoint, then each
mode runs one training step (AdamW) or, zero-shot, one forecast, on a batch of ``--batch`` 56-day windows, each in
its own process; the peak resident memory (CPU) or peak allocated GPU memory is recorded:

    python benchmarks/agriculture_foundation.py --memory --output benchmarks/results/agriculture_foundation_memory.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks.common import RESULTS, markdown_table, quiet_lightning, save_results

OUT = RESULTS / "agriculture_foundation.json"
MODEL_ID = "google/timesfm-2.5-200m-transformers"
MODES = ("zero_shot", "frozen", "lora", "full")
METRICS = ("mae", "pinball", "coverage")


def tiny_random_timesfm(folder: Path) -> Path:
    """A tiny TimesFM 2.5 with random weights, written with save_pretrained (for ``--plumbing`` only)."""
    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction

    torch.manual_seed(0)
    config = TimesFm2_5Config(patch_length=8, context_length=64, horizon_length=8, num_hidden_layers=1, hidden_size=16,
                              intermediate_size=16, head_dim=8, num_attention_heads=2, num_key_value_heads=2,
                              output_quantile_len=8, max_position_embeddings=64)
    TimesFm2_5ModelForPrediction(config).save_pretrained(folder)
    return folder


def one_run(model: list[str], seed: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One ``sectorkit train`` run; its test metrics, each station's and the baselines'."""
    from sectorkit.core.api import train

    overrides = [*model, f"seed={seed}", f"trainer.max_epochs={args.epochs}", *args.override]
    start = time.perf_counter()
    run = train("agriculture", *overrides, run_dir=root / f"run_{len(list(root.iterdir()))}")
    stations = run.metrics.get("breakdowns", {}).get("test_by_series", {})
    return {
        "overrides": overrides,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "epochs": run.metrics.get("epochs"),
        "test": {m: run.test[m] for m in METRICS},
        "by_station": {name: {m: s["model"][m] for m in ("mae", "pinball")} for name, s in stations.items()},
        "baselines": {name: {m: v[m] for m in METRICS if m in v} for name, v in run.baselines.items()},
        "baselines_by_station": {name: {b: {m: v[m] for m in ("mae", "pinball")} for b, v in s["baselines"].items()}
                                 for name, s in stations.items()},
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds of the pooled metrics and of each station's."""
    def stats(values: list[float]) -> dict[str, Any]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values)), "seeds": values}

    out: dict[str, Any] = {m: stats([r["test"][m] for r in runs]) for m in METRICS}
    out["by_station"] = {s: {m: stats([r["by_station"][s][m] for r in runs]) for m in ("mae", "pinball")} for s in runs[0]["by_station"]}
    return out


def markdown(results: dict[str, Any]) -> str:
    """The comparison table, or, where nothing was measured, the command that measures it."""
    if "memory" in results:
        return memory_markdown(results)
    if results["status"] != "measured":
        return (f"Not measured: the weights of `{results['model_id']}` could not be loaded where this ran ({results['reason']}). "
                f"No figure is claimed for them. With network access, fetch them once with `hf download {results['model_id']}`, then run "
                f"`{results['command']}` (a GPU is advised for `full`: add `--override trainer.accelerator=gpu trainer.precision=bf16-mixed`).")
    variants, baselines = results["variants"], results["baselines"]
    stations = sorted(next(iter(variants.values()))["summary"]["by_station"])
    lines = [f"Weights: {results['weights']}. Protocol: {results['protocol']}", ""]
    rows = []
    for name, variant in variants.items():
        s = variant["summary"]
        rows.append([name, *(f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in METRICS),
                     *(f"{s['by_station'][st]['mae']['mean']:.3f}" for st in stations)])
    for name, b in baselines.items():
        rows.append([f"{name} (baseline)", *(f"{b['test'][m]:.3f}" if m in b["test"] else "–" for m in METRICS),
                     *(f"{b['by_station'][st]['mae']:.3f}" for st in stations)])
    lines.append(markdown_table(["model", *METRICS, *(f"{st} MAE" for st in stations)], rows))
    return "\n".join(lines)


def memory_one(folder: str, mode: str, batch: int, precision: str) -> dict[str, Any]:
    """One mode's peak memory in this process: load, then one AdamW step (zero-shot: one forecast)."""
    import resource

    from sectorkit.domains.agriculture.metrics import pinball_loss
    from sectorkit.domains.agriculture.models.foundation import FoundationForecaster

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    net = FoundationForecaster(56, 7, 6, 3, model_id=folder, finetune=mode).to(device)
    trainable = [p for p in net.parameters() if p.requires_grad]
    past, future, target = torch.randn(batch, 56, 6, device=device), torch.randn(batch, 7, 3, device=device), torch.randn(batch, 7, device=device)
    start = time.perf_counter()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        if trainable:
            optimizer = torch.optim.AdamW(trainable, lr=1e-4)
            pinball_loss(net(past, future), target, (0.1, 0.5, 0.9)).mean().backward()
            optimizer.step()
        else:
            with torch.no_grad():
                net(past, future)
    out = {"mode": mode, "device": device, "precision": precision, "batch": batch, "seconds_step": round(time.perf_counter() - start, 1),
           "trainable_parameters": sum(p.numel() for p in trainable), "parameters": sum(p.numel() for p in net.parameters())}
    if device == "cuda":
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    else:
        out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)  # Linux: kB
    return out


def memory_check(args: argparse.Namespace) -> dict[str, Any]:
    """Every mode's peak memory, each in a fresh process, on random weights of the default TimesFM 2.5 shapes."""
    import json
    import subprocess

    from transformers import TimesFm2_5Config, TimesFm2_5ModelForPrediction

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "timesfm_default_shapes"
        TimesFm2_5ModelForPrediction(TimesFm2_5Config()).save_pretrained(folder)
        rows = []
        for mode in args.modes:
            code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
                    "from benchmarks.agriculture_foundation import memory_one; "
                    f"print(json.dumps(memory_one({str(folder)!r}, {mode!r}, {args.batch}, {args.precision!r})))")
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return {"status": "measured", "weights": "random init of the library's default TimesFm2_5Config (the 231 M-parameter shapes; "
            "memory does not depend on the weights' values)", "memory": rows}


def memory_markdown(results: dict[str, Any]) -> str:
    rows = [[r["mode"], f"{r['trainable_parameters']:,}", r["device"], r["precision"], r["batch"],
             f"{r.get('peak_gpu_gb', r.get('peak_rss_gb'))} GB ({'GPU allocated' if 'peak_gpu_gb' in r else 'process RSS'})",
             r["seconds_step"]] for r in results["memory"]]
    return "\n".join([f"Weights: {results['weights']}.", "",
                      markdown_table(["mode", "trainable parameters", "device", "precision", "batch", "peak memory", "step s"], rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-id", default=MODEL_ID, help="hub id or local folder (model.net.model_id)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20, help="trainer.max_epochs of the fine-tuned modes")
    parser.add_argument("--lr", type=float, default=1e-4, help="optimizer.lr of the fine-tuned modes")
    parser.add_argument("--reference", choices=("gru", "none"), default="gru", help="also run the default model (model=gru)")
    parser.add_argument("--override", nargs="*", default=[], help="more Hydra overrides for every run, e.g. trainer.precision=bf16-mixed")
    parser.add_argument("--plumbing", action="store_true", help="a tiny randomly initialised TimesFM 2.5 instead of --model-id")
    parser.add_argument("--quick", action="store_true", help="one seed, 2 epochs, Seattle only")
    parser.add_argument("--memory", action="store_true", help="peak memory of each mode (random weights, default shapes) instead")
    parser.add_argument("--batch", type=int, default=128, help="--memory: windows in the batch")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true", help="--memory: autocast or not")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.memory:
        results = memory_check(args)
        save_results(args.output, results)
        print(memory_markdown(results))
        return 0
    if args.quick:  # minutes on CPU with the real weights: Seattle alone, one seed
        args.seeds, args.epochs, args.override = args.seeds[:1], 2, ["data.stations=[seattle]", *args.override]
    quiet_lightning()
    given = list(argv if argv is not None else sys.argv[1:])
    if "--output" in given:  # the command to quote, without where this copy wrote its results
        del given[given.index("--output") : given.index("--output") + 2]
    given = [a for a in given if not a.startswith("--output=")]
    if not args.plumbing and not any(a.startswith("--model-id") for a in given):
        given = ["--model-id", args.model_id, *given]
    command = shlex.join(["python", "benchmarks/agriculture_foundation.py", *given])
    from sectorkit.core.errors import ConfigError
    from sectorkit.domains.agriculture.models.foundation import load_pretrained

    with tempfile.TemporaryDirectory() as tmp:
        model_id = str(tiny_random_timesfm(Path(tmp) / "tiny_timesfm")) if args.plumbing else args.model_id
        weights = ("random init, tiny TimesFM 2.5 (1 layer, width 16): a plumbing check, says nothing about TimesFM"
                   if args.plumbing else f"pretrained {args.model_id}")
        results: dict[str, Any] = {"model_id": "tiny random TimesFM 2.5" if args.plumbing else args.model_id, "weights": weights,
                                   "command": command.strip()}
        try:
            load_pretrained(model_id)  # can the weights be had? (each run loads them again)
        except ConfigError as err:
            results.update(status="not_measured", reason=str(err).split(";")[0])
            save_results(args.output, results)
            print(markdown(results))
            return 0
        stations = "bundled Seattle station" if args.quick else "bundled Seattle + Champion stations"
        results["protocol"] = (f"{stations}, horizon 7, split 60/15/25 (lookback 56 unless overridden); seeds {args.seeds}; at most "
                               f"{args.epochs} epochs; TimesFM fine-tuned with AdamW lr {args.lr}; extra overrides {args.override or 'none'}")
        variants: dict[str, Any] = {}
        root = Path(tmp) / "runs"
        root.mkdir()
        plans = [(f"timesfm {mode}", ["model=timesfm", f"model.net.model_id={model_id}", f"model.net.finetune={mode}", f"optimizer.lr={args.lr}"])
                 for mode in args.modes]
        if args.reference == "gru":
            plans.append(("gru (default model)", ["model=gru"]))  # its own settings (AdamW lr 1e-3)
        for name, model in plans:
            runs = [one_run(model, seed, args, root) for seed in args.seeds]
            variants[name] = {"runs": runs, "summary": summarise(runs)}
            print(f"{name}: mae {variants[name]['summary']['mae']['mean']:.3f}", flush=True)
        first = next(iter(variants.values()))["runs"][0]
        results.update(status="measured", variants=variants,
                       baselines={b: {"test": first["baselines"][b], "by_station": {s: v[b] for s, v in first["baselines_by_station"].items()}}
                                  for b in first["baselines"]})
    save_results(args.output, results)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
