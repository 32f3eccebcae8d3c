"""Does a self-supervised backbone beat the random one? PatchCore and AnomalyDINO on phantoms and on real brain anatomy.

Backbones compared, none downloaded:
* ``patchcore`` (the default model): PatchCore on a seeded random-init MONAI ResNet-18;
* ``patchcore_vit_random``: PatchCore on the ViT of ``patchcore_mae`` left at its random init (0 pretraining epochs);
* ``patchcore_mae``: PatchCore on that ViT pretrained as a masked autoencoder (transformers ``ViTMAEForPreTraining``)
  on the split's normal training images, ``--epochs`` epochs;
* ``anomalydino_mae``: AnomalyDINO-style cosine patch kNN on the same self-supervised ViT (read back from its
  ``save_pretrained`` folder);
* the ``knn`` and ``pca`` baselines of every run.

Data: ``phantom`` is the built-in sample (``HealthcareDataModule`` with ``path=None``); ``anatomy`` is real brain
anatomy with planted lesions: axial slices of the Colin27 T1 template (``ch2bet.nii.gz``, brain-extracted, 1 mm) of
Debian's ``mricron-data`` package (BSD-3-clause, Copyright 2006-2010 Chris Rorden, see its debian/copyright). Each
image is a slice (train: slices z mod 3 != 2; val/test: z mod 3 == 2) under a random small affine (rotation ±8°,
scale ±5 %, shift ±3 %), a ±10 % bias field, gamma 0.9..1.1 and Gaussian noise (σ 0.02); abnormal val/test images
carry one irregular lesion inside the brain (radius 0.03..0.12 of the side, log-uniform; contrast ±0.10..0.40),
its mask the changed pixels. It is generated at set-up into a BMAD-layout PNG folder (``--anatomy-dir``, default a
temporary folder; nothing is committed). ``--templates`` points at the package's ``templates`` folder; without it
the script runs ``apt-get download mricron-data`` and ``dpkg -x`` into a temporary folder (no root needed).

Every method is fitted on train, thresholded on val, scored on test, one seed per run (``--seeds``), one torch thread.

    python benchmarks/healthcare_pretrained.py --datasets phantom   # ~6 min on 2 busy cores (48 px, one seed)
    python benchmarks/healthcare_pretrained.py --datasets anatomy   # ~6 min; merged into the same results file
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the project packages come first

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from scipy.ndimage import affine_transform, gaussian_filter, zoom
from sectorkit.domains.healthcare.baselines import run_baselines
from sectorkit.domains.healthcare.data import HealthcareDataModule
from sectorkit.domains.healthcare.metrics import anomaly_metrics
from sectorkit.domains.healthcare.module import AnomalyDetector, predict_outputs

from benchmarks.common import save_results

warnings.filterwarnings("ignore")
NETS = "sectorkit.domains.healthcare.models"
METRICS = ("image_auroc", "pixel_auroc", "aupro", "dice")
TEMPLATE = "ch2bet.nii.gz"
WEIGHTS = {  # what each method's features were computed with
    "knn": "none (raw pixels)", "pca": "none (raw pixels)",
    "patchcore": "random init (seeded MONAI ResNet-18, the default)",
    "patchcore_vit_random": "random init (ViT-MAE encoder, 0 pretraining epochs)",
    "patchcore_mae": "self-supervised: ViT-MAE pretrained on the split's normal training images",
    "anomalydino_mae": "self-supervised: the same ViT-MAE folder (save_pretrained)",
}


# --- real anatomy with planted lesions ------------------------------------------------------------------------
def find_templates(given: Path | None) -> Path:
    """The mricron-data ``templates`` folder: ``given``, the system's, or downloaded with apt-get into /tmp."""
    for candidate in (given, Path("/usr/share/mricron/templates")):
        if candidate is not None and (candidate / TEMPLATE).is_file():
            return candidate
    if given is not None:
        raise SystemExit(f"{given}: no {TEMPLATE} (expected the templates folder of Debian's mricron-data package)")
    target = Path(tempfile.mkdtemp(prefix="mricron-"))
    subprocess.run(["apt-get", "download", "mricron-data"], cwd=target, check=True, capture_output=True)
    deb = next(target.glob("mricron-data_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(target / "root")], check=True)
    return target / "root" / "usr" / "share" / "mricron" / "templates"


def load_slices(templates: Path) -> np.ndarray:
    """Axial slices (Z, S, S) in 0..1 of the brain-extracted Colin27 template, square-cropped around the brain,
    keeping slices whose brain area is at least 40 % of the largest."""
    import nibabel as nib

    vol = np.asarray(nib.load(str(templates / TEMPLATE)).get_fdata(), dtype=np.float32)  # (x, y, z), RAS
    vol = np.clip(vol / np.percentile(vol[vol > 0], 99.5), 0, 1)
    brain = vol > 0.05
    xs, ys = np.where(brain.any(axis=2).any(axis=1))[0], np.where(brain.any(axis=2).any(axis=0))[0]
    cx, cy = (xs[0] + xs[-1]) // 2, (ys[0] + ys[-1]) // 2
    half = max(xs[-1] - xs[0], ys[-1] - ys[0]) // 2 + 4
    padded = np.pad(vol, ((half, half), (half, half), (0, 0)))
    crop = padded[cx : cx + 2 * half, cy : cy + 2 * half]  # centred square around the brain
    area = (crop > 0.05).sum(axis=(0, 1))
    keep = np.where(area >= 0.4 * area.max())[0]
    return np.rot90(crop[:, :, keep], k=1, axes=(0, 1)).transpose(2, 0, 1).copy()  # (Z, S, S), anterior up


def anatomy_images(slices: np.ndarray, z_pool: np.ndarray, n_normal: int, n_abnormal: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n_normal`` lesion-free then ``n_abnormal`` lesioned images (N, S, S) in 0..1 and masks (N, S, S) uint8."""
    n = n_normal + n_abnormal
    images, masks = np.zeros((n, size, size), np.float32), np.zeros((n, size, size), np.uint8)
    axis = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    for i in range(n):
        src = slices[rng.choice(z_pool)]
        side = src.shape[0]
        angle, scale = np.deg2rad(rng.uniform(-8, 8)), rng.uniform(0.95, 1.05)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
        centre = np.array([side / 2, side / 2])
        offset = centre - rot @ centre + rng.uniform(-0.03, 0.03, 2) * side
        img = affine_transform(src, rot, offset=offset, order=1, mode="constant")
        img = zoom(img, size / side, order=1)[:size, :size]
        brain = img > 0.05
        bias = 1 + 0.1 * gaussian_filter(rng.standard_normal((size, size)), size / 4, mode="wrap") / 0.02
        img = np.clip(img, 0, 1) ** rng.uniform(0.9, 1.1) * np.clip(bias, 0.85, 1.15)
        if i >= n_normal:
            inside = np.argwhere(gaussian_filter(brain.astype(float), 2) > 0.99)
            cy, cx = (inside[rng.integers(len(inside))] / (size - 1)) * 2 - 1
            radius = np.exp(rng.uniform(np.log(0.03), np.log(0.12))) * 2  # in [-1, 1] units
            lobes = 1 + 0.25 * gaussian_filter(rng.standard_normal((size, size)), size / 10, mode="wrap") / 0.05
            dist = np.sqrt(((yy - cy) / (radius * rng.uniform(0.7, 1.3))) ** 2 + ((xx - cx) / (radius * rng.uniform(0.7, 1.3))) ** 2)
            dist = dist / np.clip(lobes, 0.6, 1.4)
            mask = (dist < 1) & brain
            contrast = rng.uniform(0.10, 0.40) * rng.choice([-1.0, 1.0])
            img = np.where(mask, np.clip(img + contrast * np.maximum(1 - dist**4, 0.15), 0, 1), img)
            masks[i] = mask
        images[i] = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return images, masks


def write_anatomy_folder(root: Path, templates: Path, size: int, n_train: int, n_val: int, n_test: int, seed: int) -> Path:
    """The anatomy set as a BMAD-layout folder of 8-bit PNGs (train/good, valid|test/{good,Ungood/img,Ungood/anomaly_mask})."""
    slices = load_slices(templates)
    z = np.arange(len(slices))
    rng = np.random.default_rng(seed)
    splits = {"train": (z[z % 3 != 2], n_train, 0), "valid": (z[z % 3 == 2], n_val - n_val // 2, n_val // 2),
              "test": (z[z % 3 == 2], n_test - n_test // 2, n_test // 2)}
    for split, (pool, n_normal, n_abnormal) in splits.items():
        images, masks = anatomy_images(slices, pool, n_normal, n_abnormal, size, rng)
        for i, (img, mask) in enumerate(zip(images, masks, strict=True)):
            abnormal = i >= n_normal
            folder = root / split / ("Ungood/img" if abnormal else "good")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / f"{i:04d}.png")
            if abnormal:
                (root / split / "Ungood" / "anomaly_mask").mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask * 255).save(root / split / "Ungood" / "anomaly_mask" / f"{i:04d}.png")
    return root


# --- the comparison --------------------------------------------------------------------------------------------
def mae_net(args: argparse.Namespace, epochs: int, save_to: str | None = None) -> dict:
    return {"_target_": f"{NETS}.mae.MAEPatchCore", "patch_size": args.patch_size, "hidden_size": args.hidden_size, "num_layers": args.num_layers,
            "num_heads": 4, "epochs": epochs, "batch_size": 32, "lr": args.lr, "save_to": save_to, "seed": 0}


def fit_and_score(net: dict, dm: HealthcareDataModule, seed: int) -> tuple[dict[str, float], AnomalyDetector]:
    torch.manual_seed(seed)
    model = AnomalyDetector(net=net, **dm.model_kwargs())
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(model, dm)
    fit_s = time.perf_counter() - start
    _, masks, labels = dm.arrays("test")
    score, amap, flag, pflag = predict_outputs(model, dm.test_dataloader())
    metrics = anomaly_metrics()
    metrics.update((score, amap, flag, pflag), torch.as_tensor(labels), torch.as_tensor(masks))
    out = {k: float(v) for k, v in metrics.compute().items() if k in METRICS}
    out["fit_s"] = fit_s
    return out, model


def run_dataset(name: str, dm: HealthcareDataModule, args: argparse.Namespace, seed: int) -> dict[str, dict[str, float]]:
    pl.seed_everything(seed, verbose=False)
    dm.setup("fit")
    results: dict[str, dict[str, float]] = {}
    for base, res in run_baselines(dm).items():
        results[base] = {k: float(res.metrics[k]) for k in METRICS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "backbone")
        nets = {
            "patchcore": {"_target_": f"{NETS}.patchcore.PatchCoreDetector"},
            "patchcore_vit_random": mae_net(args, 0),
            "patchcore_mae": mae_net(args, args.epochs, folder),
            "anomalydino_mae": {"_target_": f"{NETS}.anomalydino.AnomalyDINODetector", "backbone": folder, "layers": [-1]},
        }
        for method, net in nets.items():
            if method not in args.methods:
                continue
            results[method], model = fit_and_score(net, dm, seed)
            if method == "patchcore_mae":
                results[method]["pretrain_final_loss"] = model.net.pretrain_losses[-1] if model.net.pretrain_losses else float("nan")
            row = results[method]
            print(f"{name} seed {seed} {method}: " + " ".join(f"{k} {row[k]:.3f}" for k in METRICS) + f" ({row['fit_s']:.0f}s fit)", flush=True)
    return results


def markdown(results: dict) -> str:
    """The tables of every dataset (mean ± std over seeds), with the weights of each row and the verdict."""
    s = results["settings"]
    lines = [(f"Images {s['size']} px, train {s['n_train']} normal, val {s['n_val']} and test {s['n_test']} half abnormal; "
              f"self-supervised ViT-MAE: patch {s['patch_size']}, width {s['hidden_size']}, {s['num_layers']} blocks, {s['epochs']} epochs; "
              "one torch thread. Nothing was downloaded: no figure here uses ImageNet or DINOv2 weights.")]
    for dataset, block in results["datasets"].items():
        lines += ["", f"### {dataset} ({block['description']}; seeds {block['seeds']})", "", f"Command: `{block['command']}`" + (f" ({block['date']})" if "date" in block else ""), "",
                  "| method | weights | " + " | ".join(METRICS) + " | fit s |", "|---|---|" + "---|" * (len(METRICS) + 1)]
        for method, row in block["summary"].items():
            cells = " | ".join(f"{row[k][0]:.3f}" + (f" ± {row[k][1]:.3f}" if block["seeds"] > 1 else "") for k in METRICS)
            fit = f"{row['fit_s'][0]:.0f}" if "fit_s" in row else "–"
            lines.append(f"| {method} | {WEIGHTS.get(method, '?')} | {cells} | {fit} |")
    verdict = results.get("verdict")
    if verdict:
        lines += ["", verdict]
    return "\n".join(lines)


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    return {m: {k: [float(np.mean([r[m][k] for r in per_seed])), float(np.std([r[m][k] for r in per_seed]))] for k in per_seed[0][m]}
            for m in per_seed[0]}


def verdict_text(datasets: dict) -> str:
    """Whether the self-supervised backbone beats the random default on both datasets (image and pixel AUROC, AUPRO, Dice)."""
    if not all(d in datasets for d in ("phantom", "anatomy")):
        return "Verdict needs both datasets."
    wins = {d: {k: datasets[d]["summary"]["patchcore_mae"][k][0] > datasets[d]["summary"]["patchcore"][k][0] for k in METRICS}
            for d in ("phantom", "anatomy") if "patchcore_mae" in datasets[d]["summary"]}
    if len(wins) < 2:
        return "Verdict needs patchcore_mae on both datasets."
    both = all(all(w.values()) for w in wins.values())
    detail = "; ".join(f"{d}: better on {', '.join(k for k, v in w.items() if v) or 'nothing'}" for d, w in wins.items())
    return (f"patchcore_mae vs the random-init default (patchcore), mean over seeds — {detail}. "
            + ("It beats the default on every metric of both datasets." if both else "The default stays the random-init ResNet-18 PatchCore."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["phantom", "anatomy"], choices=["phantom", "anatomy"])
    parser.add_argument("--methods", nargs="+", default=["patchcore", "patchcore_vit_random", "patchcore_mae", "anomalydino_mae"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--n-train", type=int, default=150)
    parser.add_argument("--n-val", type=int, default=40)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=40, help="MAE pretraining epochs")
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=96)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--templates", type=Path, default=None, help="mricron-data's templates folder (default: apt-get download into /tmp)")
    parser.add_argument("--anatomy-dir", type=Path, default=None, help="where the anatomy PNGs are generated (default: a temporary folder)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "healthcare_pretrained.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    output = Path(args.output)
    previous = json.loads(output.read_text()) if output.is_file() else {}
    settings = {k: getattr(args, k) for k in ("size", "n_train", "n_val", "n_test", "epochs", "patch_size", "hidden_size", "num_layers", "lr")}
    datasets = previous.get("datasets", {}) if previous.get("settings") == settings else {}
    sample = {"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test}
    command = " ".join(["python", str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            per_seed = []
            for seed in range(args.seeds):
                if dataset == "phantom":
                    dm = HealthcareDataModule(image_size=args.size, sample=sample, batch_size=16, seed=seed)
                    description = "built-in phantom sample"
                else:
                    root = (args.anatomy_dir or Path(tmp) / "anatomy") / f"seed{seed}"
                    write_anatomy_folder(root, find_templates(args.templates), args.size, args.n_train, args.n_val, args.n_test, seed)
                    dm = HealthcareDataModule(path=str(root), image_size=args.size, batch_size=16, seed=seed)
                    description = "Colin27 T1 slices (mricron-data, BSD-3-clause) with planted lesions"
                per_seed.append(run_dataset(dataset, dm, args, seed))
            datasets[dataset] = {"description": description, "seeds": args.seeds, "command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "summary": summarise(per_seed),
                                 "per_seed": per_seed}
    results = {"settings": settings, "weights": WEIGHTS, "datasets": datasets}
    results["verdict"] = verdict_text(datasets)
    results["table"] = markdown(results)
    print(results["table"])
    save_results(output, results)


if __name__ == "__main__":
    main()
