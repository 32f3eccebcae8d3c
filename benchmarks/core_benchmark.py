"""Core benchmark: what the sectorkit/Lightning path costs next to plain PyTorch, and inference speed.

(Not named ``core.py``: a script run from this folder puts the folder first on ``sys.path``, where a
``core.py`` would shadow the ``core`` package.)

Model and data: the finance domain's quick experiment (``experiment=quick``: small embedding MLP on the
tiny transaction simulator), composed from the Hydra configs like a user's run.

1. Overhead: training samples/s through ``sectorkit.core.trainer.build_trainer`` (progress bar, model summary,
   loggers, checkpointing, early stopping and validation off) vs a plain PyTorch loop on the same model
   class, the same DataLoader, batch size, optimizer (``configure_optimizers``) and number of steps; a
   third variant is Lightning with ``training_step`` reduced to the loss (no logging at all). The
   variants run in rotating order within each repeat; medians and their ratio to the plain loop are
   reported. Target >= 0.9x. Cases: the quick model at batch 512 (the quick experiment as shipped) and at
   batch 2048, and the domain's default model (``model=mlp``, a heavier step) at batch 512.
2. Threads: the same Lightning training at torch threads 1 vs 2 and DataLoader workers 0 vs 1.
3. Data wait vs compute: Lightning's SimpleProfiler, share of ``train_dataloader_next`` against
   ``run_training_batch``.
4. Inference: p50/p99 latency and samples/s per batch size of the module's ``forward`` in eval mode under
   ``no_grad`` (what ``predict_step`` runs), of ``Trainer.predict`` over the test split, and of the
   ONNX export in onnxruntime (1 thread, like torch), with a parity check against the module.

    python benchmarks/core_benchmark.py --quick    # about 1.5 minutes on 2 CPU cores
    python benchmarks/core_benchmark.py            # full: more steps and repeats (about 6 minutes)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.profilers import SimpleProfiler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, compose_domain, latency_stats, machine_info, markdown_table, median, quiet_lightning
from sectorkit.core.io import atomic_write_json
from sectorkit.core.trainer import build_trainer

PARTS = ("overhead", "threads", "profile", "inference")
BATCH_SIZES = (1, 32, 512, 4096)
SETTINGS = {
    "quick": {"steps": 200, "repeats": 7, "heavy_steps": 50, "thread_steps": 100, "thread_repeats": 2, "profile_steps": 300, "latency_budget_s": 0.6},
    "full": {"steps": 1000, "repeats": 9, "heavy_steps": 250, "thread_steps": 300, "thread_repeats": 3, "profile_steps": 1500, "latency_budget_s": 3.0},
}
# overhead cases: name -> (config overrides, training batch size or None for the config's, steps setting)
CASES = {"quick_model": ([], None, "steps"), "quick_model_batch_2048": ([], 2048, "heavy_steps"), "default_model": (["model=mlp"], None, "heavy_steps")}


def compose_finance(workdir: Path, overrides: list[str] = ()) -> DictConfig:
    """The finance quick experiment, composed from the Hydra configs with run outputs under ``workdir``."""
    return compose_domain("finance", workdir, ["experiment=quick", *overrides])


def build_model(cfg: DictConfig, dm: Any, seed: int) -> pl.LightningModule:
    """A fresh domain model with seeded initialisation."""
    pl.seed_everything(seed, verbose=False)
    return instantiate(cfg.model, **dm.model_kwargs(), optimizer=cfg.optimizer, _recursive_=False)


class _StepClock(pl.Callback):
    """Counts training samples and times the training loop (``on_train_start`` .. ``on_train_end``)."""

    def __init__(self) -> None:
        self.samples = 0
        self.start = self.end = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.samples += int(batch["target"].shape[0])

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.end = time.perf_counter()


def lightning_run(cfg: DictConfig, dm: Any, steps: int, seed: int = 0, profiler: Any = None, step_log: bool = True) -> dict[str, Any]:
    """Train ``steps`` steps through the sectorkit trainer; samples/s of the loop and of the whole ``fit``.

    ``step_log=False`` replaces ``training_step`` by the bare loss (no logging at all), to measure what the
    logging in ``SectorModule.training_step`` costs.
    """
    model = build_model(cfg, dm, seed)
    if not step_log:
        model.training_step = types.MethodType(lambda self, batch, batch_idx: self.training_loss(batch), model)
    clock = _StepClock()
    trainer = build_trainer(cfg, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1, max_steps=steps,
                            max_epochs=-1, min_epochs=None, limit_val_batches=0, num_sanity_val_steps=0, profiler=profiler)
    trainer.callbacks.append(clock)
    start = time.perf_counter()
    trainer.fit(model, dm)
    total = time.perf_counter() - start
    return {"samples": clock.samples, "steps": int(trainer.global_step), "loop_s": clock.end - clock.start, "fit_s": total,
            "samples_per_s": clock.samples / (clock.end - clock.start), "fit_samples_per_s": clock.samples / total, "model": model, "trainer": trainer}


def plain_run(cfg: DictConfig, dm: Any, steps: int, seed: int = 0) -> dict[str, Any]:
    """The same training in a hand-written PyTorch loop: same model class, loader, optimizer and loss."""
    model = build_model(cfg, dm, seed)
    start = time.perf_counter()
    model.train()
    optimizer = model.configure_optimizers()
    loader = dm.train_dataloader()
    loop_start = time.perf_counter()
    step = samples = 0
    while step < steps:
        for batch in loader:
            loss = model.training_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            samples += int(batch["target"].shape[0])
            step += 1
            if step == steps:
                break
    end = time.perf_counter()
    return {"samples": samples, "steps": step, "loop_s": end - loop_start, "fit_s": end - start,
            "samples_per_s": samples / (end - loop_start), "fit_samples_per_s": samples / (end - start)}


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k not in ("model", "trainer")}


VARIANTS = ("lightning", "lightning_no_step_log", "plain")


def _variant_run(name: str, cfg: DictConfig, dm: Any, steps: int) -> dict[str, Any]:
    if name == "plain":
        return plain_run(cfg, dm, steps)
    return lightning_run(cfg, dm, steps, step_log=name == "lightning")


def overhead(cfg: DictConfig, dm: Any, steps: int, repeats: int, batch_size: int | None = None) -> dict[str, Any]:
    """Lightning (as shipped, and with training_step reduced to the loss) vs the plain loop, in rotating order.

    Reports medians per variant, the ratio of medians to the plain loop, the per-repeat ratios, the
    best-of-repeats ratio (least disturbed by other load) and the time per step.
    """
    before = dm.batch_size
    dm.batch_size = batch_size or before
    try:
        return _overhead(cfg, dm, steps, repeats)
    finally:
        dm.batch_size = before


def _overhead(cfg: DictConfig, dm: Any, steps: int, repeats: int) -> dict[str, Any]:
    for name in VARIANTS:  # warm-up: imports, allocator, first-call costs
        _variant_run(name, cfg, dm, min(steps, 30))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for repeat in range(repeats):
        shift = repeat % len(VARIANTS)
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            runs[name].append(_public(_variant_run(name, cfg, dm, steps)))
    summary: dict[str, Any] = {"model": _model_name(cfg), "steps": steps, "repeats": repeats, "batch_size": dm.batch_size, "runs": runs, "variants": {}}
    plain = {key: [r[key] for r in runs["plain"]] for key in ("samples_per_s", "fit_samples_per_s")}
    plain_step = median([r["loop_s"] / r["steps"] for r in runs["plain"]])
    for name in VARIANTS:
        entry: dict[str, Any] = {}
        for key in ("samples_per_s", "fit_samples_per_s"):
            values = [r[key] for r in runs[name]]
            entry[key] = median(values)
            entry[f"{key}_ratio"] = median(values) / median(plain[key])
            entry[f"{key}_paired_ratios"] = [a / b for a, b in zip(values, plain[key])]
            entry[f"{key}_best_ratio"] = max(values) / max(plain[key])
        step = median([r["loop_s"] / r["steps"] for r in runs[name]])
        entry["step_ms"] = step * 1e3
        entry["overhead_per_step_ms"] = (step - plain_step) * 1e3
        summary["variants"][name] = entry
    summary["ratio"] = summary["variants"]["lightning"]["samples_per_s_ratio"]
    summary["target_met"] = summary["ratio"] >= 0.9
    return summary


def _model_name(cfg: DictConfig) -> str:
    network = str(cfg.model.net._target_).rsplit(".", 1)[-1]
    name = f"{network} hidden {'x'.join(str(h) for h in cfg.model.net.hidden)}"
    if cfg.model.net.get("piecewise_linear"):
        name += " + piecewise-linear inputs"
    ensemble = int(cfg.model.get("ensemble", 1))
    return f"{ensemble} x {name}" if ensemble > 1 else name


def threads(cfg: DictConfig, dm: Any, steps: int, repeats: int) -> list[dict[str, Any]]:
    """Lightning training samples/s for torch threads x DataLoader workers, interleaved repeats."""
    combos = [(1, 0), (2, 0), (1, 1), (2, 1)]
    before_threads, before_workers = torch.get_num_threads(), dm.num_workers
    measured: dict[tuple[int, int], list[float]] = {c: [] for c in combos}
    try:
        for _ in range(repeats):
            for n_threads, workers in combos:
                torch.set_num_threads(n_threads)
                dm.num_workers = workers
                measured[(n_threads, workers)].append(lightning_run(cfg, dm, steps)["samples_per_s"])
    finally:
        torch.set_num_threads(before_threads)
        dm.num_workers = before_workers
    base = median(measured[(1, 0)])
    return [{"torch_threads": t, "num_workers": w, "samples_per_s": median(v), "runs": v, "vs_1_thread_0_workers": median(v) / base}
            for (t, w), v in measured.items()]


def profile(cfg: DictConfig, dm: Any, steps: int) -> dict[str, Any]:
    """SimpleProfiler totals: waiting for the next batch vs running the training batch, top actions."""
    profiler = SimpleProfiler()
    run = lightning_run(cfg, dm, steps, profiler=profiler)
    totals = {name: float(np.sum(durations)) for name, durations in profiler.recorded_durations.items()}
    wait = sum(v for k, v in totals.items() if k.endswith("train_dataloader_next"))
    compute = totals.get("run_training_batch", 0.0)
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:12]
    return {"steps": run["steps"], "loop_s": run["loop_s"], "data_wait_s": wait, "run_training_batch_s": compute,
            "data_wait_share": wait / (wait + compute), "outside_batch_share_of_loop": 1 - (wait + compute) / run["loop_s"],
            "top_actions": [{"action": k, "total_s": v, "calls": len(profiler.recorded_durations[k])} for k, v in top]}


def _time_calls(fn: Any, budget_s: float, min_calls: int = 30, max_calls: int = 2000) -> list[float]:
    for _ in range(3):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_calls or (time.perf_counter() < deadline and len(times) < max_calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _feeds(session: Any, numeric: torch.Tensor, categorical: torch.Tensor) -> dict[str, np.ndarray]:
    """onnxruntime inputs by name (an input the graph does not use, e.g. zero categorical columns, is pruned)."""
    arrays = {"numeric": numeric.numpy(), "categorical": categorical.numpy()}
    return {i.name: arrays[i.name] for i in session.get_inputs()}


def inference(model: pl.LightningModule, dm: Any, budget_s: float, workdir: Path) -> dict[str, Any]:
    """Latency/throughput of the module's forward and of its ONNX export per batch size, plus parity."""
    import onnxruntime as ort

    model = model.eval()
    tensors = dm.datasets["test"].tensors
    reps = -(-max(BATCH_SIZES) // len(tensors["numeric"]))
    numeric, categorical = tensors["numeric"].repeat(reps, 1), tensors["categorical"].repeat(reps, 1)
    path = workdir / "finance_mlp.onnx"
    torch.onnx.export(model, (numeric[:8], categorical[:8]), str(path), input_names=["numeric", "categorical"], output_names=["score_alert"],
                      dynamic_axes={"numeric": {0: "batch"}, "categorical": {0: "batch"}}, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rows: dict[str, list[dict[str, float]]] = {"torch_forward": [], "onnxruntime": []}
    for size in BATCH_SIZES:
        x, c = numeric[:size].contiguous(), categorical[:size].contiguous()
        feeds = _feeds(session, x, c)

        def forward(x: torch.Tensor = x, c: torch.Tensor = c) -> torch.Tensor:
            with torch.no_grad():
                return model(x, c)

        rows["torch_forward"].append(latency_stats(_time_calls(forward, budget_s), size))
        rows["onnxruntime"].append(latency_stats(_time_calls(lambda feeds=feeds: session.run(None, feeds), budget_s), size))
    n = max(BATCH_SIZES)
    with torch.no_grad():
        expected = model(numeric[:n], categorical[:n]).numpy()
    got = session.run(None, _feeds(session, numeric[:n], categorical[:n]))[0]
    parity = {"rows": n, "max_abs_score_diff": float(np.abs(got[:, 0] - expected[:, 0]).max()),
              "alert_agreement": float((got[:, 1] == expected[:, 1]).mean()), "tolerance": 1e-5}
    parity["passed"] = parity["max_abs_score_diff"] <= parity["tolerance"]
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(model, dm)  # warm-up
    start = time.perf_counter()
    outputs = trainer.predict(model, dm)
    seconds = time.perf_counter() - start
    n_rows = sum(len(o) for o in outputs)
    predict_loop = {"rows": n_rows, "batch_size": dm.eval_batch_size, "seconds": seconds, "samples_per_s": n_rows / seconds}
    return {"latency": rows, "onnx_parity": parity, "trainer_predict": predict_loop, "onnx_bytes": path.stat().st_size}


def markdown(results: dict[str, Any]) -> str:
    """The tables of one core benchmark run (the parts it holds)."""
    m = results["machine"]
    lines = [(f"Finance quick experiment (embedding MLP, {results['model']}), {results['data']['train_rows']:,} training rows, "
             f"torch threads {results['torch_threads']}; {m['cpu_count']} CPUs ({m['processor']}), 1-minute load average "
             f"{m.get('load_average_1min', float('nan')):.1f} at the start and {m.get('load_average_1min_end', float('nan')):.1f} at the end "
             "(other processes on the same cores slow some runs down; compare the per-repeat ratios).")]
    for part, render in (("overhead", _overhead_md), ("threads", _threads_md), ("profile", _profile_md), ("inference", _inference_md)):
        if part in results:
            lines += ["", render(results[part])]
    return "\n".join(lines)


def _overhead_md(overhead: dict[str, Any]) -> str:
    labels = {"lightning": "sectorkit/Lightning", "lightning_no_step_log": "Lightning, training_step = loss only", "plain": "plain PyTorch loop"}
    rows = []
    for o in overhead.values():
        for name, v in o["variants"].items():
            paired = v["samples_per_s_paired_ratios"]
            rows.append([f"{o['model']}, batch {o['batch_size']}, {o['steps']} steps", labels[name], v["samples_per_s"], f"{v['samples_per_s_ratio']:.3f}",
                         f"{v['samples_per_s_best_ratio']:.3f}", f"{min(paired):.2f}–{max(paired):.2f}", f"{v['step_ms']:.3f}",
                         f"{v['overhead_per_step_ms']:+.3f}", f"{v['fit_samples_per_s_ratio']:.3f}"])
    first = next(iter(overhead.values()))
    verdict = "; ".join(f"{o['model']}, batch {o['batch_size']}: {o['ratio']:.3f}× ({'met' if o['target_met'] else 'NOT met'})" for o in overhead.values())
    explained = "; ".join(
        f"{o['model']}, batch {o['batch_size']}: {o['variants']['lightning']['overhead_per_step_ms']:.2f} ms/step over the plain loop, of which "
        f"{o['variants']['lightning']['overhead_per_step_ms'] - o['variants']['lightning_no_step_log']['overhead_per_step_ms']:+.2f} ms "
        "the logging in SectorModule.training_step" for o in overhead.values())
    return "\n".join([
        (f"**Training overhead: sectorkit/Lightning vs plain PyTorch** (medians of {first['repeats']} repeats in rotating order; "
        "ratio = samples/s ÷ the plain loop's; best = best repeat ÷ best repeat)"), "",
        markdown_table(["case", "path", "samples/s", "ratio", "best ratio", "per-repeat ratios", "ms/step", "overhead ms/step", "ratio incl. fit() set-up"], rows), "",
        f"Target ≥ 0.9× (training loop, as shipped): {verdict}.", "",
        f"Where the time goes (medians, ms/step): {explained}. The rest is Lightning's fixed per-step cost (hooks, "
        "optimizer closure, batch transfer), which matters only when a step is a few milliseconds. Differences smaller "
        "than the spread of the per-repeat ratios (a negative logging cost, say) are run-to-run noise."])


def _threads_md(rows: list[dict[str, Any]]) -> str:
    table = markdown_table(["torch threads", "workers", "samples/s", "vs 1 thread, 0 workers"],
                           [[r["torch_threads"], r["num_workers"], r["samples_per_s"], f"{r['vs_1_thread_0_workers']:.2f}×"] for r in rows])
    return "**Threads and DataLoader workers** (Lightning path, median samples/s)\n\n" + table


def _profile_md(p: dict[str, Any]) -> str:
    head = (f"**Data wait vs compute** (SimpleProfiler, {p['steps']} steps): waiting for the next batch {p['data_wait_s']:.3f} s, "
            f"run_training_batch {p['run_training_batch_s']:.3f} s → data-wait share **{p['data_wait_share'] * 100:.1f} %**; "
            f"{p['outside_batch_share_of_loop'] * 100:.1f} % of the training loop is outside both (hooks, epoch boundaries).")
    table = markdown_table(["profiler action", "total s", "calls"], [[a["action"], f"{a['total_s']:.3f}", a["calls"]] for a in p["top_actions"][:8]])
    return head + "\n\n" + table


def _inference_md(inf: dict[str, Any]) -> str:
    rows = []
    for t, o in zip(inf["latency"]["torch_forward"], inf["latency"]["onnxruntime"]):
        rows.append([t["batch_size"], f"{t['p50_ms']:.3f}", f"{t['p99_ms']:.3f}", t["samples_per_s"], f"{o['p50_ms']:.3f}", f"{o['p99_ms']:.3f}", o["samples_per_s"]])
    par, tp = inf["onnx_parity"], inf["trainer_predict"]
    return "\n".join([
        "**Inference** (1 thread): module forward in eval/no_grad (what predict runs) vs the ONNX export in onnxruntime", "",
        markdown_table(["batch", "torch p50 ms", "torch p99 ms", "torch samples/s", "ONNX p50 ms", "ONNX p99 ms", "ONNX samples/s"], rows), "",
        (f"ONNX parity on {par['rows']:,} rows: max |score diff| {par['max_abs_score_diff']:.2e} (tolerance {par['tolerance']:g}: "
        f"{'passed' if par['passed'] else 'FAILED'}), alert flags agree on {par['alert_agreement'] * 100:.2f} %. "
        f"`Trainer.predict` over the test split ({tp['rows']:,} rows, batch {tp['batch_size']}): {tp['samples_per_s']:,.0f} samples/s.")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/core.json (core_quick.json with --quick)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    mode = "quick" if args.quick else "full"
    settings = SETTINGS[mode]
    out = args.out or RESULTS / ("core_quick.json" if args.quick else "core.json")
    quiet_lightning()
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sectorkit-core-bench-") as tmp:
        workdir = Path(tmp)
        cfg = compose_finance(workdir)
        pl.seed_everything(0, verbose=False)
        dm = instantiate(cfg.data)
        start = time.perf_counter()
        dm.setup("fit")
        setup_s = time.perf_counter() - start
        results: dict[str, Any] = {"mode": mode, "machine": machine_info(), "torch_threads": 1, "settings": settings,
                                   "model": _model_name(cfg),
                                   "data": {"train_rows": len(dm.datasets["train"]), "test_rows": len(dm.datasets["test"]), "setup_s": setup_s}}
        if "overhead" in parts:
            print("1. overhead: Lightning vs plain loop", flush=True)
            results["overhead"] = {name: overhead(compose_finance(workdir, overrides) if overrides else cfg, dm, settings[steps], settings["repeats"], batch)
                                   for name, (overrides, batch, steps) in CASES.items()}
        if "threads" in parts:
            print("2. threads and workers", flush=True)
            results["threads"] = threads(cfg, dm, settings["thread_steps"], settings["thread_repeats"])
        if "profile" in parts:
            print("3. profiler", flush=True)
            results["profile"] = profile(cfg, dm, settings["profile_steps"])
        if "inference" in parts:
            print("4. inference", flush=True)
            model = lightning_run(cfg, dm, settings["steps"])["model"]
            results["inference"] = inference(model, dm, settings["latency_budget_s"], workdir)
    results["total_seconds"] = time.perf_counter() - started
    results["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    atomic_write_json(out, results)
    print("\n" + markdown(results))
    print(f"\nwrote {out} in {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
