"""Healthcare benchmark: anomaly detection on the synthetic brain phantoms, and MONAI pipeline throughput.

Protocol: for each seed, a fresh phantom sample (normal-only train, val and test half abnormal, lesion
radius log-uniform 0.03..0.15 of the image side, contrast 0.04..0.35); every model and baseline is fitted on
the train split, thresholded on val and scored on test. Image AUROC and pixel AUROC are reported overall and
per lesion-size bucket (small < 0.06 <= medium < 0.10 <= large; each bucket's abnormal images against all
normal test images), as mean +- std over the seeds. Throughput: training and inference images/s of the
default model, and one pass over a PNG folder with the cached (CacheDataset) vs uncached MONAI pipeline.

    python benchmarks/healthcare.py --quick      # a few minutes on 2 CPU cores
    python benchmarks/healthcare.py              # full protocol
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the project packages come first

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchmetrics.functional.classification import binary_auroc  # noqa: E402

from benchmarks.common import save_results  # noqa: E402
from sectorkit.domains.healthcare.baselines import run_baselines  # noqa: E402
from sectorkit.domains.healthcare.data import HealthcareDataModule  # noqa: E402
from sectorkit.domains.healthcare.metrics import anomaly_metrics  # noqa: E402
from sectorkit.domains.healthcare.module import AnomalyDetector, predict_outputs  # noqa: E402
from sectorkit.domains.healthcare.sample import SIZE_BUCKETS, make_phantoms  # noqa: E402

warnings.filterwarnings("ignore")
BMAD = {"BraTS2021 (MRI slices)": 91.65, "RSNA (chest X-ray)": 76.14}  # PatchCore image AUROC, BMAD paper (train on normal only)
NETS = "sectorkit.domains.healthcare.models"
MODELS = {  # the networks' settings of the model configs (domains/healthcare/conf/model/)
    "autoencoder": {"_target_": f"{NETS}.autoencoder.AutoEncoderDetector", "channels": [32, 64, 128], "strides": [2, 2, 2]},
    "vae": {"_target_": f"{NETS}.vae.VAEDetector", "channels": [32, 64, 128], "strides": [2, 2, 2], "latent_size": 64},
    "patchcore": {"_target_": f"{NETS}.patchcore.PatchCoreDetector"},
    "padim": {"_target_": f"{NETS}.padim.PaDiMDetector"},
}


def bucket_metrics(scores: np.ndarray, maps: np.ndarray, labels: np.ndarray, masks: np.ndarray, buckets: np.ndarray) -> dict[str, float]:
    """Image and pixel AUROC overall and per lesion-size bucket."""
    out: dict[str, float] = {}
    for name in ("overall", *SIZE_BUCKETS):
        keep = np.ones(len(labels), bool) if name == "overall" else (labels == 0) | (buckets == name)
        if labels[keep].sum() == 0:
            continue
        out[f"image_auroc/{name}"] = float(binary_auroc(torch.as_tensor(scores[keep]), torch.as_tensor(labels[keep])))
        out[f"pixel_auroc/{name}"] = float(binary_auroc(torch.as_tensor(maps[keep]).flatten(), torch.as_tensor(masks[keep]).flatten().long()))
    return out


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every model and baseline on one phantom sample."""
    pl.seed_everything(seed, verbose=False)
    dm = HealthcareDataModule(image_size=args.size, sample={"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test}, batch_size=16, seed=seed)
    dm.setup("fit")
    images, masks, labels = dm.arrays("test")
    buckets = dm.record_frame("test")["bucket"].to_numpy()
    results: dict[str, dict[str, float]] = {}
    for name, res in run_baselines(dm, keep_maps=True).items():
        results[name] = {**res.metrics, **bucket_metrics(res.predictions["scores"], res.predictions["maps"], labels, masks, buckets)}
    for name in args.models:
        torch.manual_seed(seed)
        model = AnomalyDetector(net=MODELS[name], **dm.model_kwargs(), optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.01})
        epochs = 1 if model.net.memory_bank else args.epochs
        trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        start = time.perf_counter()
        trainer.fit(model, dm)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        score, amap, flag, pflag = predict_outputs(model, dm.test_dataloader())
        infer_s = time.perf_counter() - start
        metrics = anomaly_metrics()
        metrics.update((score, amap, flag, pflag), torch.as_tensor(labels), torch.as_tensor(masks))
        results[name] = {k: float(v) for k, v in metrics.compute().items()}
        results[name].update(bucket_metrics(score.numpy(), amap.numpy(), labels, masks, buckets))
        results[name]["train_images_per_s"] = args.n_train * epochs / fit_s
        results[name]["infer_images_per_s"] = len(labels) / infer_s
        print(f"seed {seed} {name}: image_auroc {results[name]['image_auroc']:.3f} pixel_auroc {results[name]['pixel_auroc']:.3f} ({fit_s:.0f}s fit)", flush=True)
    return results


def pipeline_throughput(n: int, size: int) -> dict[str, float]:
    """Images/s of one epoch over a PNG folder: CacheDataset (second epoch, after caching) vs uncached Dataset."""
    ph = make_phantoms(n, 0, size=size, seed=0)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for stage, cls in (("train", "good"), ("valid", "good"), ("test", "good")):
            folder = root / stage / cls
            folder.mkdir(parents=True)
            count = n if stage == "train" else 2
            for i in range(count):
                Image.fromarray((np.clip(ph.images[i, 0], 0, 1) * 255).astype(np.uint8)).save(folder / f"{i}.png")
        for cache in ("memory", "none", "disk"):
            dm = HealthcareDataModule(path=str(root), image_size=size, cache=cache, cache_dir=str(root / "cache"), augment=True, batch_size=32)
            start = time.perf_counter()
            dm.setup("fit")
            out[f"{cache}/setup_s"] = time.perf_counter() - start
            start = time.perf_counter()
            for _ in dm.train_dataloader():
                pass
            out[f"{cache}/epoch_images_per_s"] = n / (time.perf_counter() - start)
    return out


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """mean and std over seeds of every metric of every method."""
    methods = per_seed[0].keys()
    return {m: {k: [float(np.mean([r[m][k] for r in per_seed])), float(np.std([r[m][k] for r in per_seed]))] for k in per_seed[0][m]} for m in methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--output", default=None, help="default: benchmarks/results/healthcare[_quick].json")
    args = parser.parse_args()
    args.output = args.output or str(ROOT / "benchmarks" / "results" / f"healthcare{'_quick' if args.quick else ''}.json")
    torch.set_num_threads(1)
    if args.quick:
        args.size, args.n_train, args.n_val, args.n_test, args.epochs, pipe_n = 64, 96, 48, 96, 15, 256
    else:
        args.size, args.n_train, args.n_val, args.n_test, args.epochs, pipe_n = 64, 256, 96, 300, 40, 1024
    per_seed = [run_seed(seed, args) for seed in range(args.seeds)]
    summary = summarise(per_seed)
    pipeline = pipeline_throughput(pipe_n, 128)
    columns = ["image_auroc", "pixel_auroc", "aupro", "dice", "image_f1_max"] + [f"{m}/{b}" for m in ("image_auroc", "pixel_auroc") for b in SIZE_BUCKETS]
    fmt = lambda v: f"{v[0]:.3f} ± {v[1]:.3f}" if v else "–"  # noqa: E731
    lines = [f"## Phantom benchmark ({'quick' if args.quick else 'full'}: {args.seeds} seeds, {args.size}px, train {args.n_train} normal, test {args.n_test} half abnormal)", "",
             "| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(fmt(summary[m].get(c)) for c in columns) + " |" for m in summary]
    knn = summary["knn"]
    lines += ["", "Beats the kNN baseline (mean over seeds) on image and pixel AUROC overall and in every size bucket:"]
    verdicts = {}
    for m in args.models:
        keys = [k for k in knn if k.startswith(("image_auroc", "pixel_auroc"))]
        verdicts[m] = all(summary[m][k][0] > knn[k][0] for k in keys)
        lines.append(f"- {m}: {'yes' if verdicts[m] else 'no'}")
    ranking = sorted(args.models + ["knn", "pca"], key=lambda m: -summary[m]["image_auroc"][0])
    lines += ["", "| BMAD reference (PatchCore image AUROC) | ours: ranking by image AUROC |", "|---|---|"]
    ours = ", ".join(f"{m} {summary[m]['image_auroc'][0] * 100:.1f}" for m in ranking)
    lines += [f"| {k}: {v} | {ours} |" for k, v in BMAD.items()]
    lines += ["", "| speed | value |", "|---|---|"]
    lines += [f"| {m} train images/s | {summary[m]['train_images_per_s'][0]:.1f} |" for m in args.models]
    lines += [f"| {m} inference images/s | {summary[m]['infer_images_per_s'][0]:.1f} |" for m in args.models]
    lines += [f"| pipeline {k} (128px PNG, {pipe_n} images, random affine) | {v:.2f} |" for k, v in pipeline.items()]
    print("\n".join(lines))
    save_results(args.output, {"mode": "quick" if args.quick else "full", "seeds": args.seeds, "summary": summary, "beats_knn": verdicts,
                                             "per_seed": per_seed, "pipeline": pipeline, "bmad_reference": BMAD, "table": "\n".join(lines)})


if __name__ == "__main__":
    main()
