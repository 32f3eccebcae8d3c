"""Faults survived: the fault catalogue through the real CLI, and kill -9 at a random step then resume.

    python -m benchmarks.faults                        # both parts, writes benchmarks/results/faults.json
    python -m benchmarks.faults --repeats 1 --only-catalogue

(a) Every fault of ``tests/faults/fault_catalogue.py`` (bad, empty, header-only, truncated files, wrong types,
inf/1e308 values, duplicate ids, wrong labels, folders for files, path traversal, ...) plus the faults that are not
about a file (out-of-range config values, an empty ``data.path``, a preset naming a target outside the allow-list,
another domain's checkpoint, a checkpoint that would run code, ``ckpt_path=last`` with a run of another model, a run
folder claimed by another process, a read-only output folder) runs through ``sectorkit.core.cli.main`` in this
process. Each outcome is a clean run (exit 0, whole outputs), a clean error (exit 2, one ``sectorkit: error:`` line,
no traceback, nothing half-written) or anything else, which must not happen.

(b) Per domain, a small training run in a subprocess is killed with SIGKILL at a random training step (seeded; the
step is chosen from the uninterrupted run's step count and the kill is delivered by a callback at the end of that
step, so the point is exact), then resumed with ``ckpt_path=last``. Checked: the killed run left no checkpoint or
output that fails to parse; the resumed run ends at the same global step as an uninterrupted run and its test metric
is within seed noise of the uninterrupted seed-0 run (tolerance: the range of the test metric over uninterrupted runs
with seeds 0, 1 and 2, at least 1e-6; checkpoints carry the random streams, but the resumed run is not guaranteed
bit-identical). The runs checkpoint without a monitor, so each test metric is that of the final weights.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "faults"))

from benchmarks.common import RESULTS, ROOT, machine_info

DOMAIN_RUNS = {  # a small training run per domain: a few steps per epoch, three epochs, no early stop, no baselines
    "finance": ["experiment=quick", "trainer.limit_train_batches=4"],
    "retail": ["experiment=quick", "trainer.limit_train_batches=4"],
    "agriculture": ["experiment=quick", "trainer.limit_train_batches=4"],
    "healthcare": ["experiment=quick", "model=autoencoder", "trainer.limit_train_batches=3"],
}
# monitor=null: the kept checkpoint is the last epoch's, so the test metric is that of the final weights and the
# comparison does not depend on which epoch a run picks as its best
COMMON = ["trainer.max_epochs=3", "callbacks.early_stopping=null", "callbacks.model_checkpoint.monitor=null", "callbacks.progress_bar=null", "callbacks.model_summary=null",
          "with_baselines=false", "runtime.torch_threads=1"]


class KillAtStep(pl.Callback):
    """SIGKILL this process at the end of training step ``step``: a kill -9 at an exact, seeded point (no cleanup,
    no handler runs; the operating system releases the run folder's lock)."""

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


# --- (a) the catalogue -------------------------------------------------------------------------------------
def extra_faults(domain: str, folder: Path) -> list[tuple[str, list[str], str]]:
    """(name, argv, expected error) of the faults that are not about an input file."""
    import torch
    from fault_catalogue import DATA_TARGETS, PRESETS, payload_checkpoint

    other = {"finance": "retail", "retail": "finance", "agriculture": "healthcare", "healthcare": "agriculture"}[domain]
    inputs = folder / "inputs"  # crafted inputs (a checkpoint that must not load among them), not outputs
    inputs.mkdir(exist_ok=True)
    foreign = inputs / "foreign.ckpt"
    torch.save({"state_dict": {}, "sectorkit_run": {"domain": other, "model_name": "m", "data": {"_target_": DATA_TARGETS[other]}}}, foreign)
    payload = payload_checkpoint(inputs / "payload.ckpt")
    last = folder / "outputs" / domain / "runs" / "2020-01-01_00-00-00" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "sectorkit_run": {"domain": domain, "model_name": "another_model", "data": {"_target_": DATA_TARGETS[domain]}}}, last)
    (folder / "conf" / "data").mkdir(parents=True)
    default_data = {"finance": "simulator", "retail": "sample", "agriculture": "weather", "healthcare": "phantom"}[domain]
    (folder / "conf" / "data" / "shared.yaml").write_text(  # a complete data preset of the domain whose target was swapped
        f"defaults:\n  - {default_data}\n  - _self_\n_target_: shutil.copyfile\n")
    locked = folder / "locked_run"
    locked.mkdir()
    read_only = Path("/sys/sectorkit-faults") if os.geteuid() == 0 else _read_only(folder)
    file_preset = PRESETS["agriculture_yield" if domain == "agriculture" else domain]
    return [
        ("seed= (empty)", ["train", f"domain={domain}", "seed="], r"seed=''"),
        ("data.batch_size=0", ["train", f"domain={domain}", "data.batch_size=0"], r"data\.batch_size=0"),
        ("optimizer.lr=-1", ["train", f"domain={domain}", "optimizer.lr=-1"], r"optimizer\.lr=-1"),
        ("trainer.devices=100000", ["train", f"domain={domain}", "trainer.devices=100000"], r"trainer\.devices=100000"),
        ("data.path= (empty) on a file preset", ["train", f"domain={domain}", *file_preset, "data.path="], r"data\.path is empty"),
        ("preset target outside the allow-list", ["train", f"domain={domain}", f"hydra.searchpath=[file://{folder / 'conf'}]", "data=shared"],
         r"not a target a config may name"),
        (f"{other} checkpoint to evaluate", ["evaluate", f"domain={domain}", f"ckpt_path={foreign}"], rf"domain {other!r}"),
        (f"{other} checkpoint to resume", ["train", f"domain={domain}", f"ckpt_path={foreign}"], rf"domain {other!r}"),
        ("checkpoint that would run code", ["evaluate", f"domain={domain}", f"ckpt_path={payload}"], r"would call posix\.system"),
        ("ckpt_path=last of another model", ["train", f"domain={domain}", "ckpt_path=last"], r"was trained with model 'another_model'"),
        ("run folder claimed by another process", ["train", f"domain={domain}", f"hydra.run.dir={locked}"], r"another run \(process"),
        ("read-only output folder", ["train", f"domain={domain}", f"hydra.run.dir={read_only}/run"], r"cannot be written"),
    ]


def _read_only(folder: Path) -> Path:
    path = folder / "read_only"
    path.mkdir()
    path.chmod(0o555)
    return path


def outcome(status: int, stderr: str, expected: str | None, root: Path) -> tuple[str, str]:
    """('clean error' | 'clean run' | 'other', detail)."""
    from fault_catalogue import half_written, one_line_error

    broken = [b for b in half_written(root) if not b.startswith(str(root / "inputs"))]
    if broken:
        return "other", f"half-written: {broken[0]}"
    line = one_line_error(stderr)
    if status == 2 and line is not None:
        if expected is not None and not re.search(expected, line):
            return "other", f"unexpected error: {line}"
        return "clean error", line
    if status == 0 and expected is None and list(root.rglob("metrics.json")):
        return "clean run", ""
    return "other", f"exit {status}: {stderr[-400:]}"


def run_catalogue(files: bool = True) -> dict[str, Any]:
    """Every catalogue fault and extra fault per domain through the CLI; counts and each case's outcome."""
    from fault_catalogue import DOMAINS, catalogue, hold_lock, run_cli

    cases: list[dict[str, Any]] = []
    for fault in catalogue() if files else []:
        with tempfile.TemporaryDirectory() as base:
            folder = Path(base)
            path = fault.make(folder)
            started = time.perf_counter()
            status, stderr = run_cli(fault.argv(path), folder / "root")
            kind, detail = outcome(status, stderr, fault.expect, folder)
            cases.append({"domain": fault.domain, "fault": fault.name, "outcome": kind, "detail": detail[:300],
                          "seconds": round(time.perf_counter() - started, 2)})
            print(f"{fault.id}: {kind}", flush=True)
    for domain in DOMAINS:
        with tempfile.TemporaryDirectory() as scratch:
            names = [n for n, _, _ in extra_faults(domain, Path(scratch))]
        for name in names:
            with tempfile.TemporaryDirectory() as base:
                folder = Path(base)
                argv, expected = next((a, e) for n, a, e in extra_faults(domain, folder) if n == name)
                holder = hold_lock(folder / "locked_run") if "claimed" in name else None
                try:
                    started = time.perf_counter()
                    status, stderr = run_cli(argv, folder)
                finally:
                    if holder is not None:
                        holder.kill()
                        holder.wait()
                kind, detail = outcome(status, stderr, expected, folder)
                cases.append({"domain": domain, "fault": name, "outcome": kind, "detail": detail[:300],
                              "seconds": round(time.perf_counter() - started, 2)})
                print(f"{domain}:{name}: {kind}", flush=True)
    counts = {d: {"tried": 0, "clean errors": 0, "clean runs": 0, "other": 0} for d in DOMAINS}
    for case in cases:
        counts[case["domain"]]["tried"] += 1
        counts[case["domain"]][{"clean error": "clean errors", "clean run": "clean runs"}.get(case["outcome"], "other")] += 1
    return {"counts": counts, "cases": cases}


# --- (b) kill -9 and resume --------------------------------------------------------------------------------
def train(domain: str, root: Path, extra: list[str]) -> tuple[int, str]:
    """``python -m sectorkit train`` of the domain's small run under ``root``: exit status and stderr tail."""
    env = {**os.environ, "SECTORKIT_ROOT": str(root), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "sectorkit", "train", f"domain={domain}", *DOMAIN_RUNS[domain], *COMMON, *extra],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900, check=False)
    return proc.returncode, proc.stderr[-1500:]


def finished(root: Path, domain: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / "outputs" / domain / "runs").glob("*/metrics.json"))]


def kill_and_resume(domain: str, repeats: int, seed: int) -> dict[str, Any]:
    """Uninterrupted runs (seeds 0, 1, 2), then ``repeats`` times: kill at a random step, resume with ckpt_path=last."""
    from fault_catalogue import half_written

    rng = np.random.default_rng(seed)
    reference: dict[int, dict[str, Any]] = {}
    started = time.perf_counter()
    for run_seed in (0, 1, 2):
        with tempfile.TemporaryDirectory() as base:
            status, err = train(domain, Path(base), [f"seed={run_seed}"])
            if status != 0:
                return {"error": f"uninterrupted run failed: {err}"}
            reference[run_seed] = finished(Path(base), domain)[-1]
    primary = reference[0]["primary_metric"]
    final_step = int(reference[0]["global_step"])
    values = [float(r["test"][primary]) for r in reference.values()]
    noise = max(values) - min(values)
    tolerance = max(noise, 1e-6)
    trials = []
    for _ in range(repeats):
        step = int(rng.integers(1, final_step))
        with tempfile.TemporaryDirectory() as base:
            root = Path(base)
            kill = ["+callbacks.kill._target_=benchmarks.faults.KillAtStep", f"+callbacks.kill.step={step}", "allow_any_target=true"]
            status, _ = train(domain, root, ["seed=0", *kill])
            killed_ok = status == -signal.SIGKILL
            broken_after_kill = half_written(root / "outputs")
            temporaries = [str(p) for p in root.rglob("*.tmp")]
            status, err = train(domain, root, ["seed=0", "ckpt_path=last"])
            runs = finished(root, domain)
            resumed = runs[-1] if status == 0 and runs else None
            trial = {"kill_step": step, "killed_by_sigkill": killed_ok, "half_written_after_kill": broken_after_kill,
                     "temporary_files_after_kill": temporaries, "resume_status": status, "resume_error": "" if status == 0 else err[-300:]}
            if resumed:
                diff = abs(float(resumed["test"][primary]) - float(reference[0]["test"][primary]))
                trial.update(resumed_from=resumed.get("resumed_from"), final_step=int(resumed["global_step"]),
                             same_final_step=int(resumed["global_step"]) == final_step, metric=float(resumed["test"][primary]),
                             metric_difference=diff, within_tolerance=diff <= tolerance, half_written_after_resume=half_written(root / "outputs"))
            trials.append(trial)
            print(f"{domain}: killed at step {step}: {trial}", flush=True)
    survived = sum(bool(t.get("killed_by_sigkill") and t.get("same_final_step") and t.get("within_tolerance")
                        and not t.get("half_written_after_kill") and not t.get("half_written_after_resume")) for t in trials)
    return {"primary_metric": primary, "final_step": final_step, "uninterrupted": {s: float(r["test"][primary]) for s, r in reference.items()},
            "seed_noise": noise, "tolerance": tolerance, "trials": trials, "survived": survived, "repeats": repeats,
            "seconds": round(time.perf_counter() - started, 1)}


# --- output ----------------------------------------------------------------------------------------------
def markdown(results: dict[str, Any]) -> str:
    """The tables of docs/benchmarks.md and docs/faults.md."""
    lines = []
    if results.get("catalogue"):
        lines += ["#### Fault catalogue through the CLI", "", "| domain | cases tried | clean errors (exit 2, one line) | clean runs | anything else |",
                  "|---|---:|---:|---:|---:|"]
        for domain, c in results["catalogue"]["counts"].items():
            lines.append(f"| {domain} | {c['tried']} | {c['clean errors']} | {c['clean runs']} | {c['other']} |")
        command = results["catalogue"].get("command", results.get("command", "?"))
        seconds = results["catalogue"].get("seconds", results.get("seconds", "?"))
        lines += ["", f"Command: `{command}` ({seconds} s).", ""]
    if results.get("resume"):
        lines += ["#### kill -9 at a random step, then `ckpt_path=last`", "",
                  "| domain | primary metric | final step | kills survived | metric: uninterrupted (seeds 0 / 1 / 2) | largest difference after resume (vs seed 0) | tolerance (seed range) |",
                  "|---|---|---:|---:|---|---:|---:|"]
        for domain, r in results["resume"].items():
            if "error" in r:
                lines.append(f"| {domain} | failed: {r['error'][:120]} | | | | | |")
                continue
            diffs = [t["metric_difference"] for t in r["trials"] if "metric_difference" in t]
            uninterrupted = " / ".join(f"{v:.4f}" for v in r["uninterrupted"].values())
            lines.append(f"| {domain} | {r['primary_metric']} | {r['final_step']} | {r['survived']} of {r['repeats']} "
                         f"(steps {', '.join(str(t['kill_step']) for t in r['trials'])}) | {uninterrupted} | "
                         f"{max(diffs) if diffs else float('nan'):.2e} | {r['tolerance']:.2e} |")
        by_command: dict[str, list[str]] = {}
        for domain, r in results["resume"].items():
            if "command" in r:
                by_command.setdefault(r["command"], []).append(f"{domain} {r.get('seconds', '?')} s")
        if by_command:
            lines += ["", "Commands: " + "; ".join(f"`{c}` ({', '.join(v)})" for c, v in by_command.items()) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="kills per domain")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill steps")
    parser.add_argument("--domains", nargs="+", default=list(DOMAIN_RUNS))
    parser.add_argument("--only-catalogue", action="store_true")
    parser.add_argument("--only-resume", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one kill per domain")
    parser.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    command = "OMP_NUM_THREADS=1 python -m benchmarks.faults " + " ".join(argv if argv is not None else sys.argv[1:])
    results["machine"] = machine_info()
    if not args.only_resume:
        results["catalogue"] = {**run_catalogue(), "command": command, "seconds": round(time.perf_counter() - started, 1)}
        results["command"] = command
    if not args.only_catalogue:
        repeats = 1 if args.quick else args.repeats
        results["resume"] = {**results.get("resume", {}),
                             **{d: {**kill_and_resume(d, repeats, args.seed), "command": command} for d in args.domains}}
    from sectorkit.core.io import atomic_write_json

    atomic_write_json(args.out, results)
    print(markdown(results))
    other = sum(c["other"] for c in results.get("catalogue", {}).get("counts", {}).values())
    return 1 if other else 0


if __name__ == "__main__":
    raise SystemExit(main())
