"""Healthcare memory benchmark: peak resident memory of a whole `sectorkit train` run on a large test split.

Protocol: a generated MedMNIST-layout ``.npz`` (uint8 grey images; train normal only, val and test half abnormal
with a bright blob) is run through the real pipeline, as the CLI would run it (``data=folder data.path=<npz>``,
default settings unless given), in a fresh process per size: fit, test pass, predictions table, baselines,
report. A thread samples the process's resident memory every 20 ms; the peak of each phase (fit, test,
predictions, baselines, report) and of the whole run are reported, with the wall time of each phase.

    python benchmarks/healthcare_memory.py --n-test 10000 100000          # 64 px, autoencoder, 1 epoch
    python benchmarks/healthcare_memory.py --n-test 10000 --size 32 --model patchcore --output /tmp/pc.json

The model only changes the speed (the memory of a test pass is in what the run keeps per test image), so the
default is the fastest one, the autoencoder, trained for one epoch on a small training split.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the project packages come first

import numpy as np  # noqa: E402

warnings.filterwarnings("ignore")
PAGE = os.sysconf("SC_PAGE_SIZE")
PHASES = ("fit", "test", "predictions", "baselines", "report")


def make_npz(path: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int = 0, chunk: int = 5000) -> None:
    """A MedMNIST-layout file: ``<split>_images`` (N, size, size) uint8 and ``<split>_labels`` (N, 1), label 0 normal."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 0.35 + 0.25 * np.sin(6 * xx) * np.cos(4 * yy)  # one smooth "anatomy" every image shares
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        labels = np.zeros(n, dtype=np.uint8) if split == "train" else (np.arange(n) % 2).astype(np.uint8)
        images = np.empty((n, size, size), dtype=np.uint8)
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            x = base[None] * rng.uniform(0.85, 1.15, (k, 1, 1)).astype(np.float32) + rng.normal(0, 0.04, (k, size, size)).astype(np.float32)
            cy, cx = rng.uniform(0.25, 0.75, (2, k, 1, 1)).astype(np.float32)
            radius = rng.uniform(0.05, 0.12, (k, 1, 1)).astype(np.float32)
            blob = ((yy[None] - cy) ** 2 + (xx[None] - cx) ** 2) < radius**2
            x += 0.35 * blob * labels[start:start + k, None, None]
            images[start:start + k] = (np.clip(x, 0, 1) * 255).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(path, **arrays)


class PeakSampler(threading.Thread):
    """Samples this process's resident memory; ``mark(name)`` closes the phase running until now."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self.phase_peak, self.running = interval, 0, 0, True
        self.phases: dict[str, dict[str, float]] = {}
        self.started = time.perf_counter()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def run(self) -> None:
        while self.running:
            value = self.rss()
            self.peak, self.phase_peak = max(self.peak, value), max(self.phase_peak, value)
            time.sleep(self.interval)

    def mark(self, name: str) -> None:
        value = self.rss()
        now = time.perf_counter()
        self.phases[name] = {"peak_gb": max(self.phase_peak, value) / 1e9, "end_rss_gb": value / 1e9, "seconds": now - self.started}
        self.phase_peak, self.started = value, now


def child(args: argparse.Namespace) -> None:
    """One run in this process: the pipeline with each phase wrapped to record its memory peak."""
    import pytorch_lightning as pl

    from sectorkit.core import pipeline
    from sectorkit.core.config import compose_config
    from sectorkit.domains.healthcare import DOMAIN

    sampler = PeakSampler()
    sampler.start()

    def wrap(owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def wrapped(*a: Any, **k: Any) -> Any:
            result = original(*a, **k)
            sampler.mark(phase)
            return result

        setattr(owner, name, wrapped)

    wrap(pl.Trainer, "fit", "fit")
    wrap(pl.Trainer, "test", "test")
    wrap(pipeline, "collect_predictions", "predictions")
    wrap(pipeline, "fit_baselines", "baselines")
    wrap(pipeline, "write_report", "report")
    overrides = ["data=folder", f"data.path={args.npz}", f"data.image_size={args.size}", f"model={args.model}", "trainer.max_epochs=1",
                 f"paths.output_dir={args.run_dir}", "~logger", "callbacks.progress_bar=null", "callbacks.model_summary=null", *args.overrides]
    started = time.perf_counter()
    pipeline.run_train(compose_config(DOMAIN, overrides))
    sampler.running = False
    metrics = json.loads((Path(args.run_dir) / "metrics.json").read_text())
    heatmaps = len(list((Path(args.run_dir) / "plots" / "heatmaps").glob("*.png")))
    print("RESULT " + json.dumps({"peak_gb": sampler.peak / 1e9, "phases": sampler.phases, "seconds": time.perf_counter() - started,
                                  "overrides": overrides, "heatmap_files": heatmaps, "test": metrics["test"],
                                  "baselines": sorted(metrics.get("baselines", {})), "decisions": metrics.get("decisions", {}),
                                  "failures": metrics.get("failures", {})}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-test", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-val", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--model", default="autoencoder")
    parser.add_argument("--override", dest="overrides", action="append", default=[], help="an extra config override (repeatable)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "healthcare_memory.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--npz", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from benchmarks.common import machine_info

    results = []
    for n in args.n_test:
        with tempfile.TemporaryDirectory() as tmp:
            npz = Path(tmp) / "set.npz"
            make_npz(npz, args.n_train, args.n_val, n, args.size)
            command = [sys.executable, __file__, "--child", "--npz", str(npz), "--run-dir", str(Path(tmp) / "run"), "--size", str(args.size),
                       "--model", args.model, *[f"--override={o}" for o in args.overrides]]
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"n_test={n}: the run failed (exit {proc.returncode})")
            result = {"n_test": n, "size": args.size, "model": args.model, **json.loads(lines[-1][len("RESULT "):])}
            results.append(result)
            phases = ", ".join(f"{p} {result['phases'][p]['peak_gb']:.2f} GB / {result['phases'][p]['seconds']:.0f} s" for p in PHASES if p in result["phases"])
            print(f"n_test={n} ({args.size} px, {args.model}): peak {result['peak_gb']:.2f} GB in {result['seconds']:.0f} s; {phases}; "
                  f"{result['heatmap_files']} heatmap files", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"machine": machine_info(), "runs": results}, indent=2))
    print(f"→ {args.output}")


if __name__ == "__main__":
    main()
