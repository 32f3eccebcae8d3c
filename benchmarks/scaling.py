"""How each domain's pipeline grows with data size: data preparation, one training epoch and evaluation
at 1x, 4x and 16x its quick-experiment sample, with the process's peak memory.

Each (domain, size) runs in a fresh process (so peak RSS is that run's own), on one torch thread, with the
domain's ``experiment=quick`` config and only the sample size changed (the ``SCALES`` below). Growth is
reported as ``time ratio / size ratio`` against 1x: about 1 means linear; a larger value names a term that
grows faster than the data, explained in ``NOTES``.

    python benchmarks/scaling.py            # 1x, 4x, 16x
    python benchmarks/scaling.py --quick    # 1x, 4x
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, compose_domain, machine_info, markdown_table, quiet_lightning  # noqa: E402


def _finance(k: int) -> list[str]:
    # customers and terminals scale together on a map scaled by sqrt(k): the handbook's density is kept
    return [f"data.simulator.n_customers={500 * k}", f"data.simulator.n_terminals={1000 * k}", f"data.simulator.grid_size={100.0 * k ** 0.5}",
            f"data.simulator.n_compromised_terminals={k}", f"data.simulator.n_compromised_customers={k}"]


def _retail(k: int) -> list[str]:
    return [f"data.sample.n_users={200 * k}"]  # interactions grow with users; the catalogue stays 150 items


def _agriculture(k: int) -> list[str]:
    return [f"data.synthetic.n_series={3 * k}"]


def _healthcare(k: int) -> list[str]:
    return [f"data.sample.n_train={64 * k}", f"data.sample.n_val={16 * k}", f"data.sample.n_test={48 * k}"]


SCALES = {"finance": _finance, "retail": _retail, "agriculture": _agriculture, "healthcare": _healthcare}
NOTES = {
    "healthcare": "PatchCore's memory bank grows with the training images and every test patch is compared with "
                  "the whole (coreset-reduced) bank, so evaluation grows faster than the data until the coreset cap is reached.",
    "retail": "Full-ranking evaluation scores every item for every user: linear in users at a fixed catalogue "
              "(it is users x items, quadratic only if both grow). Data prep is the synthetic generator, whose "
              "per-step users x items taste matrix is linear in users but falls out of cache above the 1x size.",
}


def measure(domain: str, k: int) -> dict:
    """One domain at one scale, in this process: seconds for data prep, one training epoch and the test pass."""
    import pytorch_lightning as pl
    import torch

    from sectorkit.core.pipeline import build_datamodule, build_model
    from sectorkit.core.trainer import build_trainer

    quiet_lightning()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_domain(domain, Path(tmp), ["experiment=quick", "trainer.max_epochs=1", "trainer.limit_val_batches=0",
                                                 "trainer.num_sanity_val_steps=0", *SCALES[domain](k)])
        pl.seed_everything(0, verbose=False)
        times: dict[str, float] = {}
        start = time.perf_counter()
        dm = build_datamodule(cfg)
        dm.prepare_data()
        dm.setup("fit")
        times["data_s"] = time.perf_counter() - start
        model = build_model(cfg, dm)
        trainer = build_trainer(cfg, accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False)
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        times["train_epoch_s"] = time.perf_counter() - start
        start = time.perf_counter()
        trainer.test(model, datamodule=dm, verbose=False)
        times["test_s"] = time.perf_counter() - start
    return {"domain": domain, "scale": k, **times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(domain: str, k: int) -> dict:
    """:func:`measure` in a fresh interpreter (its own peak memory, no caches from earlier sizes)."""
    out = subprocess.run([sys.executable, __file__, "--child", domain, str(k)], capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{domain} at {k}x failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1x and 4x only")
    parser.add_argument("--domains", nargs="*", default=list(SCALES))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("DOMAIN", "SCALE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return
    scales = [1, 4] if args.quick else [1, 4, 16]
    rows, results = [], []
    for domain in args.domains:
        base = None
        for k in scales:
            r = run_child(domain, k)
            base = base or r
            growth = {p: (r[p] / base[p]) / k if base[p] > 0 else float("nan") for p in ("data_s", "train_epoch_s", "test_s")}
            r["growth_vs_linear"] = growth
            results.append(r)
            rows.append([domain, f"{k}x", r["data_s"], r["train_epoch_s"], r["test_s"], r["peak_rss_mb"],
                         growth["data_s"], growth["train_epoch_s"], growth["test_s"]])
            print(f"{domain} {k}x done", file=sys.stderr)
    headers = ["domain", "size", "data prep s", "train epoch s", "test s", "peak RSS MB", "data growth", "train growth", "test growth"]
    print(markdown_table(headers, rows))
    print("\ngrowth = (time / time at 1x) / size ratio: 1 is linear, below 1 means fixed costs dominate at 1x.")
    for domain, note in NOTES.items():
        if domain in args.domains:
            print(f"- {domain}: {note}")
    out = args.out or RESULTS / ("scaling_quick.json" if args.quick else "scaling.json")
    from sectorkit.core.io import atomic_write_json

    atomic_write_json(out, {"machine": machine_info(), "scales": scales, "results": results, "notes": NOTES})


if __name__ == "__main__":
    main()
