"""3D volumes with the ``experiment=volumes`` preset (PatchCore, one volume per batch, patch store capped at
``model.net.max_bank_patches``, exact blocked test search): seconds per volume to fill the bank and to score,
and the process's peak resident memory, at each volume side, in a fresh process per side.

Protocol: the built-in phantom volumes (``data.sample``: ``--n-train`` normal training volumes, ``--n-test`` test
volumes half abnormal), the preset's network and module exactly as a run builds them; phases timed on one torch
thread: the data (phantom generation and the MONAI chain's check pass), the bank filling (every training volume
through the backbone into the capped patch store), the coreset, and the test pass (each test volume's map, its
exact nearest-neighbour search against the whole bank, the image score; image and voxel AUROC from the run's
metrics). Peak RSS is the process's maximum after each phase. Growth = (seconds per volume at the larger side /
at the smaller side) / voxel ratio: 1 is linear in voxels.

    python benchmarks/healthcare_volumes.py                       # 64³ and 128³, 8 train / 4 test volumes
    python benchmarks/healthcare_volumes.py --sizes 16 24 --n-train 2 --n-test 2 --out /tmp/volumes.json   # seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, compose_domain, markdown_table, quiet_lightning, save_results  # noqa: E402

OUT = RESULTS / "healthcare_volumes.json"


def rss_mb() -> float:
    """The process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def timed(out: dict[str, Any], key: str) -> Iterator[None]:
    """Wall seconds (``<key>_s``) and this process's CPU seconds (``<key>_cpu_s``) of the block: on one torch thread
    the CPU seconds are what the work costs, whatever else shares the machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    out[f"{key}_s"], out[f"{key}_cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu


def measure(size: int, n_train: int, n_test: int, n_val: int = 2, overrides: list[str] | None = None) -> dict[str, Any]:
    """One volume side in this process: the preset's data module and module, phases timed (see the module docstring)."""
    import torch

    from sectorkit.core.network import network_class
    from sectorkit.core.pipeline import build_datamodule, build_model
    from sectorkit.domains.healthcare.metrics import anomaly_metrics

    quiet_lightning()
    torch.set_num_threads(1)
    out: dict[str, Any] = {"size": size, "voxels": size**3, "n_train": n_train, "n_test": n_test, "rss_start_mb": rss_mb()}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_domain("healthcare", Path(tmp), ["experiment=volumes", f"data.image_size={size}", f"data.sample.n_train={n_train}",
                                                       f"data.sample.n_val={n_val}", f"data.sample.n_test={n_test}", *(overrides or [])])
        out["max_bank_patches"], out["coreset_size"] = cfg.model.net.max_bank_patches, cfg.model.net.coreset_size
        out["batch_size"], out["max_pool"] = int(cfg.data.batch_size), bool(cfg.model.net.max_pool)
        with timed(out, "data"):
            dm = build_datamodule(cfg, network_class(cfg.model.net))
            dm.setup("fit")
        out["rss_data_mb"] = rss_mb()
        torch.manual_seed(0)
        module = build_model(cfg, dm).eval()
        net = module.net
        with torch.no_grad(), timed(out, "collect"):
            for batch in dm.stage_loader("train", batch_size=int(cfg.data.batch_size)):
                net.collect(batch["inputs"])
        with timed(out, "coreset"):
            net.fit_memory()
        out["bank"], out["rss_fit_mb"] = len(net.bank), rss_mb()
        out["patches_per_volume"] = int(net.features(batch["inputs"][:1]).shape[2:].numel())
        metrics = anomaly_metrics()
        with torch.inference_mode(), timed(out, "inference"):
            for batch in dm.stage_loader("test", batch_size=int(cfg.data.batch_size)):
                metrics.update(module(batch["inputs"]), batch["target"], batch["mask"])
        out["rss_inference_mb"] = rss_mb()
        values = {k: float(v) for k, v in metrics.compute().items()}
    out.update(image_auroc=values["image_auroc"], voxel_auroc=values["pixel_auroc"],
               fit_s_per_volume=(out["collect_cpu_s"] + out["coreset_cpu_s"]) / n_train, collect_s_per_volume=out["collect_cpu_s"] / n_train,
               inference_s_per_volume=out["inference_cpu_s"] / n_test, peak_rss_mb=rss_mb(),
               wall_fit_s_per_volume=(out["collect_s"] + out["coreset_s"]) / n_train, wall_inference_s_per_volume=out["inference_s"] / n_test)
    return out


def growth(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each size against the smallest: (seconds per volume ratio) / (voxel ratio); 1 is linear in voxels."""
    base = results[0]
    rows = []
    for r in results[1:]:
        ratio = r["voxels"] / base["voxels"]
        rows.append({"from": base["size"], "to": r["size"], "voxel_ratio": ratio,
                     **{key: r[f"{key}_s_per_volume"] / base[f"{key}_s_per_volume"] / ratio for key in ("collect", "fit", "inference")},
                     "coreset": r["coreset_cpu_s"] / base["coreset_cpu_s"] / ratio})
    return rows


def markdown(results: dict[str, Any]) -> str:
    """The per-size table and the growth lines."""
    headers = ["volume", "train / test volumes", "patches per volume", "bank", "data s", "fill s / volume", "coreset s",
               "fit s / volume", "inference s / volume", "wall s / volume (fit, inference)", "peak RSS MB (data / fit / inference)",
               "image AUROC", "voxel AUROC"]
    rows = [[f"{r['size']}³", f"{r['n_train']} / {r['n_test']}", f"{r['patches_per_volume']:,}", f"{r['bank']:,}", r["data_cpu_s"],
             r["collect_s_per_volume"], r["coreset_cpu_s"], r["fit_s_per_volume"], r["inference_s_per_volume"],
             f"{r['wall_fit_s_per_volume']:.3g}, {r['wall_inference_s_per_volume']:.3g}",
             f"{r['rss_data_mb']:,.0f} / {r['rss_fit_mb']:,.0f} / {r['rss_inference_mb']:,.0f}", r["image_auroc"], r["voxel_auroc"]]
            for r in results["results"]]
    lines = [markdown_table(headers, rows), "", "Seconds are CPU seconds of the one-thread process (what the work costs, whatever else "
             "shared the machine); the wall seconds beside them depend on that load.", ""]
    for g in results.get("growth", []):
        lines.append(f"Growth {g['from']}³ → {g['to']}³ ({g['voxel_ratio']:.0f}x the voxels), per volume / voxel ratio (1 = linear): "
                     f"bank filling {g['collect']:.2f}, fit with coreset {g['fit']:.2f}, inference {g['inference']:.2f}; "
                     f"coreset {g['coreset']:.2f} (its cost is fixed by the candidate cap, not the volume size).")
    if results.get("notes"):
        lines += ["", results["notes"]]
    lines += ["", "AUROCs on this few volumes are a check that the path works, not a measure of accuracy."]
    return "\n".join(lines)


NOTES = ("Every cost is per voxel: the backbone's convolutions, the patches (one per voxel of its 1/2-side feature map), "
         "the exact search (patches x bank, a fixed bank of at most coreset_size rows) and the map's upsampling and separable "
         "blur. The coreset is the one term that does not grow with the voxels (at most coreset_candidates candidates, "
         "coreset_size steps); the patch store is capped at max_bank_patches whatever the number and size of the volumes.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="volume sides, smallest first")
    parser.add_argument("--n-train", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=4)
    parser.add_argument("--n-val", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="32³ and 64³, 4 train / 2 test volumes")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child process: one size, JSON on stdout
    parser.add_argument("--override", nargs="*", default=[], help="extra config overrides (e.g. model.net.coreset_size=500)")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/healthcare_volumes.json")
    args = parser.parse_args(argv)
    if args.one is not None:
        print("RESULT " + json.dumps(measure(args.one, args.n_train, args.n_test, args.n_val, args.override)))
        return 0
    if args.quick:
        args.sizes, args.n_train, args.n_test = [32, 64], 4, 2
    results: list[dict[str, Any]] = []
    for size in args.sizes:
        command = [sys.executable, str(Path(__file__).resolve()), "--one", str(size), "--n-train", str(args.n_train),
                   "--n-test", str(args.n_test), "--n-val", str(args.n_val), "--override", *args.override]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{size}³ failed (exit {done.returncode})")
        results.append({**json.loads(line.removeprefix("RESULT ")), "process_s": time.perf_counter() - start})
        r = results[-1]
        print(f"{size}³: fit {r['fit_s_per_volume']:.2f} s/volume, inference {r['inference_s_per_volume']:.2f} s/volume, "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB", flush=True)
    out = {"command": " ".join(["python benchmarks/healthcare_volumes.py", *(argv if argv is not None else sys.argv[1:])]),
           "torch_threads": 1, "results": results, "growth": growth(results), "notes": NOTES}
    path = save_results(args.out or (RESULTS / "healthcare_volumes_quick.json" if args.quick else OUT), out)
    print("\n" + markdown(out) + f"\n\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
