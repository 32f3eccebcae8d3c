"""GPU check: every registered domain's quick experiment for a fixed number of training steps on the GPU in
32-true and bf16-mixed precision, against a CPU run of the same steps.

For each domain: compose ``experiment=quick`` (progress bar, summary, loggers, checkpoints and early
stopping off), seed, train ``--steps`` optimizer steps (validation as configured, since some domains fit
thresholds or memory banks there), then test the final weights. Reported: training samples/s (time inside
training batches, CUDA-synchronised, data loading excluded), wall time of ``fit``, peak GPU memory
(``torch.cuda.max_memory_allocated``) and whether every test metric matches the CPU run within
``|gpu - cpu| <= atol + rtol * |cpu|`` (TOLERANCES below). The runs are not bit-identical: dropout draws from
the CUDA generator, matmuls use TF32 under ``runtime.matmul_precision=high`` and some CUDA kernels are
non-deterministic, so the tolerance catches broken device or precision handling, not rounding.

    python benchmarks/gpu_check.py                   # every domain, 100 steps
    python benchmarks/gpu_check.py --domains finance --steps 50

Without CUDA it prints that the check was skipped and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.data import extract_batch_size

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, compose_domain, machine_info, markdown_table, quiet_lightning
from sectorkit.core.io import atomic_write_json
from sectorkit.core.pipeline import build_datamodule, build_model
from sectorkit.core.registry import discover
from sectorkit.core.runtime import configure_runtime
from sectorkit.core.trainer import build_trainer

PRECISIONS = ("32-true", "bf16-mixed")
TOLERANCES = {"32-true": {"atol": 0.03, "rtol": 0.05}, "bf16-mixed": {"atol": 0.05, "rtol": 0.10}}
SKIPPED = "CUDA is not available on this machine: GPU check skipped (nothing measured, no results written)."


class _BatchClock(pl.Callback):
    """Time spent inside training batches (forward, backward, optimizer step) and the samples seen."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.samples = 0
        self._start = 0.0

    @staticmethod
    def _sync(module: pl.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._sync(module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._sync(module)
        self.seconds += time.perf_counter() - self._start
        self.samples += extract_batch_size(batch)


def run_domain(domain: str, accelerator: str, precision: str, steps: int, workdir: Path, seed: int = 0, overrides: list[str] = ()) -> dict[str, Any]:
    """Train ``steps`` steps of a domain's quick experiment (plus config ``overrides``) and test the final weights."""
    cfg = compose_domain(domain, workdir, ["experiment=quick", f"seed={seed}", *overrides])
    configure_runtime(cfg.runtime, cfg.trainer)
    pl.seed_everything(seed, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    model = build_model(cfg, dm)  # as the CLI builds it: optimizer and scheduler from the config
    clock = _BatchClock()
    trainer = build_trainer(cfg, enable_progress_bar=False, enable_model_summary=False, accelerator=accelerator, devices=1,
                            precision=precision, max_steps=steps, max_epochs=-1, min_epochs=None)
    trainer.callbacks.append(clock)
    cuda = accelerator == "gpu"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.fit(model, dm)
    fit_s = time.perf_counter() - start
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    tested = trainer.test(model, dm, verbose=False)[0]
    metrics = {k.removeprefix("test/"): float(v) for k, v in tested.items()}
    return {"domain": domain, "accelerator": accelerator, "precision": precision, "steps": int(trainer.global_step),
            "samples": clock.samples, "train_batch_s": clock.seconds, "samples_per_s": clock.samples / max(clock.seconds, 1e-12),
            "fit_s": fit_s, "peak_gpu_mb": peak_mb, "test": metrics}


def compare(reference: dict[str, float], other: dict[str, float], precision: str) -> dict[str, Any]:
    """Per-metric deviation from the CPU run and whether all metrics are within the precision's tolerance."""
    tol = TOLERANCES[precision]
    common = sorted(set(reference) & set(other))
    deviations = {k: abs(other[k] - reference[k]) for k in common}
    failed = [k for k in common if not deviations[k] <= tol["atol"] + tol["rtol"] * abs(reference[k])]
    return {"tolerance": tol, "max_abs_deviation": max(deviations.values(), default=0.0), "deviations": deviations,
            "failed": failed, "passed": bool(common) and not failed}


def markdown(results: dict[str, Any]) -> str:
    """The table of one GPU check."""
    rows = []
    for r in results["runs"]:
        check = r.get("check")
        verdict = "reference" if check is None else ("pass" if check["passed"] else f"FAIL: {', '.join(check['failed']) or 'no common metric'}")
        rows.append([r["domain"], r["accelerator"], r["precision"], r["steps"], r["samples_per_s"], f"{r['fit_s']:.1f}",
                     "–" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f}",
                     "–" if check is None else f"{check['max_abs_deviation']:.4f}", verdict])
    tol = "; ".join(f"{p}: atol {t['atol']}, rtol {t['rtol']}" for p, t in TOLERANCES.items())
    head = (f"{results['machine']['device']}, {results['steps']} training steps per run, quick experiments. "
            f"Metric check against the CPU run: |gpu − cpu| ≤ atol + rtol·|cpu| ({tol}).")
    headers = ["domain", "accelerator", "precision", "steps", "train samples/s", "fit s", "peak GPU MB", "max |Δ metric|", "metrics vs CPU"]
    return head + "\n\n" + markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=None, help="default: every registered domain")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(SKIPPED)
        return 0
    quiet_lightning()
    domains = args.domains or list(discover())
    results: dict[str, Any] = {"machine": machine_info(), "steps": args.steps, "tolerances": TOLERANCES, "runs": []}
    with tempfile.TemporaryDirectory(prefix="sectorkit-gpu-check-") as tmp:
        for domain in domains:
            reference = run_domain(domain, "cpu", "32-true", args.steps, Path(tmp) / domain / "cpu")
            results["runs"].append(reference)
            for precision in PRECISIONS:
                run = run_domain(domain, "gpu", precision, args.steps, Path(tmp) / domain / precision)
                run["check"] = compare(reference["test"], run["test"], precision)
                results["runs"].append(run)
                print(f"{domain} {precision}: {run['samples_per_s']:,.0f} samples/s, peak {run['peak_gpu_mb']:.0f} MB, "
                      f"metrics {'match' if run['check']['passed'] else 'DIFFER'}", flush=True)
    results["all_passed"] = all(r["check"]["passed"] for r in results["runs"] if "check" in r)
    atomic_write_json(args.out, results)
    print("\n" + markdown(results))
    print(f"\nwrote {args.out}")
    return 0 if results["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
