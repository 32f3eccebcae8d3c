"""3D volumes: ``experiment=volumes`` end to end on NIfTI files (train → evaluate → predict with NIfTI heatmaps →
export), PaDiM on phantom volumes, the separable blur, the bounded phantom draws and chunk sizes, and the volume
workloads of benchmarks/healthcare_volumes.py and benchmarks/gpu_scale.py at tiny sizes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from sectorkit.core.cli import main
from sectorkit.core.config import compose_config
from sectorkit.domains.healthcare import DOMAIN
from sectorkit.domains.healthcare import data as healthcare_data
from sectorkit.domains.healthcare.data import images_per_chunk, phantom_parts, phantom_records
from sectorkit.domains.healthcare.models.common import GaussianBlur
from sectorkit.domains.healthcare.report import chunk_size
from sectorkit.domains.healthcare.sample import make_phantoms

warnings.filterwarnings("ignore", message=".*nvImageCodec.*")

QUIET = ["~logger", "callbacks.progress_bar=null", "callbacks.model_summary=null", "runtime.torch_threads=1"]


def _full_kernel_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The Gaussian blur as first written: one (2r+1)^D kernel, replicate padding on every side."""
    d = x.ndim - 2
    radius = max(1, int(round(3 * sigma)))
    g = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    kernel = g / g.sum()
    for _ in range(d - 1):
        kernel = kernel[..., None] * (g / g.sum())
    conv = F.conv2d if d == 2 else F.conv3d
    return conv(F.pad(x, (radius,) * (2 * d), mode="replicate"), kernel[None, None])


@pytest.mark.parametrize("shape,sigma", [((2, 1, 23, 17), 2.0), ((2, 1, 9, 14, 11), 1.5), ((1, 1, 6, 5, 7), 4.0)])
def test_separable_blur_equals_the_full_kernel(shape, sigma):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    blurred = GaussianBlur(len(shape) - 2, sigma)(x)
    assert blurred.shape == x.shape
    torch.testing.assert_close(blurred, _full_kernel_blur(x, sigma), rtol=1e-5, atol=1e-6)


def test_phantom_volumes_are_drawn_in_bounded_parts():
    assert phantom_parts(128, 0, 64, 2, 7) == [(128, 0, 7)]  # every small 2D sample: one draw with its own seed, as before
    parts = phantom_parts(3, 2, 128, 3, 7)  # 2 volumes of 128³ per draw
    assert [(a, b) for a, b, _ in parts] == [(2, 0), (1, 0), (0, 2)] and len({s for *_, s in parts}) == 3
    assert all(a + b <= healthcare_data.PHANTOM_CHUNK_VOXELS // 128**3 for a, b, _ in parts)


def test_chunked_phantom_records_keep_the_split_shape(monkeypatch):
    monkeypatch.setattr(healthcare_data, "PHANTOM_CHUNK_VOXELS", 2 * 12**3)
    records = phantom_records(5, 4, 3, size=12, spatial_dims=3, seed=0)
    for stage, n in (("train", 5), ("val", 4), ("test", 3)):
        labels = [r["label"] for r in records[stage]]
        assert len(labels) == n and sum(labels) == (0 if stage == "train" else n // 2) and labels == sorted(labels)
        assert [r["name"] for r in records[stage]] == [f"{stage}_{i:04d}" for i in range(n)]
        assert all(r["image"].shape == (1, 12, 12, 12) for r in records[stage])
    assert not np.array_equal(records["train"][0]["image"], records["train"][2]["image"])  # the draws differ


def test_report_and_baselines_recompute_volumes_a_few_at_a_time():
    class Geometry:
        def __init__(self, size: int, dims: int) -> None:
            self.image_size, self.spatial_dims = size, dims

    assert chunk_size(Geometry(64, 2)) == 64 and chunk_size(Geometry(256, 2)) == 64  # 2D: as before
    assert chunk_size(Geometry(128, 3)) == 2 and chunk_size(Geometry(32, 3)) == 64 and chunk_size(Geometry(512, 3)) == 1
    from sectorkit.domains.healthcare.baselines import CHUNK, MAX_TRAIN_IMAGES, MAX_VOXELS

    assert images_per_chunk(Geometry(256, 2), CHUNK, MAX_VOXELS) == 256 and images_per_chunk(Geometry(128, 3), CHUNK, MAX_VOXELS) == 8
    assert images_per_chunk(Geometry(128, 3), MAX_TRAIN_IMAGES, 4 * MAX_VOXELS) == 32


def test_volume_patch_store_stays_at_its_cap_whatever_the_number_of_volumes():
    from sectorkit.domains.healthcare.models.patchcore import PatchCoreDetector

    net = PatchCoreDetector(spatial_dims=3, image_size=16, coreset_size=50, max_pool=True, max_bank_patches=700).eval()
    volumes = torch.rand(6, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i, volume in enumerate(volumes.split(1)):
            net.collect(volume)
            assert len(net._collected[0]) == min(700, (i + 1) * 8**3)  # 8³ patches per 16³ volume, then the cap
        net.fit_memory()
        amap = net(volumes[:2])
    assert net.bank.shape == (50, 192) and amap.shape == (2, 1, 16, 16, 16) and torch.isfinite(amap).all()


def _nifti_folder(root: Path, size: int = 20) -> None:
    """The benchmark folder layout with NIfTI volumes: train/good, valid and test with good/ and Ungood/ (+ masks)."""
    def save(folder: Path, volumes: np.ndarray, start: int = 0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i, volume in enumerate(volumes):
            nib.save(nib.Nifti1Image((volume[0] * 1000).astype(np.int16), np.eye(4)), str(folder / f"vol{start + i:02d}.nii.gz"))

    save(root / "train" / "good", make_phantoms(6, 0, size=size, spatial_dims=3, seed=1).images)
    for split, seed in (("valid", 2), ("test", 3)):
        ph = make_phantoms(2, 2, size=size, spatial_dims=3, seed=seed)
        save(root / split / "good" / "img", ph.images[:2])
        save(root / split / "Ungood" / "img", ph.images[2:], start=2)
        save(root / split / "Ungood" / "anomaly_mask", ph.masks[2:].astype(np.float32) / 1000, start=2)


def test_volumes_experiment_on_nifti_trains_evaluates_predicts_and_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _nifti_folder(tmp_path / "volumes")
    small = ["data=folder", f"data.path={tmp_path / 'volumes'}", "data.image_size=16", "model.net.coreset_size=200",
             "model.net.max_bank_patches=1500"]  # 6 training volumes x 8³ patches = 3,072 > the cap
    run = tmp_path / "run"
    assert main(["train", "domain=healthcare", "experiment=volumes", *small, f"paths.output_dir={run}", *QUIET]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["image_auroc"] <= 1 and 0 <= metrics["test"]["pixel_auroc"] <= 1
    assert metrics["data"]["splits"]["test"] == {"images": 4, "normal": 2, "abnormal": 2, "abnormal share": "50.0%"}
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["state_dict"]["net.bank"].shape == (200, 192)  # the coreset of the capped store
    heatmaps = run / "plots" / "heatmaps"
    volume = nib.load(next(heatmaps.glob("*.nii.gz")))
    values = volume.get_fdata()  # uint8 on disk, 0..1 once read (scale slope 1/255)
    assert volume.shape == (16, 16, 16) and 0 <= values.min() < values.max() <= 1.0 + 1e-6 and volume.get_data_dtype() == np.uint8
    assert len(list(heatmaps.glob("*.png"))) == len(list(heatmaps.glob("*.nii.gz"))) == 4

    # evaluate rebuilds the data from the checkpoint's record and gives the same test metrics
    assert main(["evaluate", "domain=healthcare", f"ckpt_path={metrics['checkpoint']}", f"paths.output_dir={tmp_path / 'eval'}", *QUIET]) == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "dice"):
        assert again["test"][key] == pytest.approx(metrics["test"][key], abs=1e-6)

    # predict on a folder of NIfTI volumes: one row per volume, a PNG (middle slice) and a NIfTI map per volume
    output = tmp_path / "scored" / "volumes.csv"
    assert main(["predict", "domain=healthcare", f"ckpt_path={metrics['checkpoint']}", f"data.path={tmp_path / 'volumes' / 'test'}",
                 f"output={output}", f"paths.output_dir={tmp_path / 'predict'}", "runtime.torch_threads=1"]) == 0
    table = pd.read_csv(output)
    assert len(table) == 4 and table["score"].between(0, 1).all() and table["name"].str.endswith(".nii.gz").all()
    written = tmp_path / "scored" / "volumes_plots" / "heatmaps"
    assert len(list(written.glob("*.nii.gz"))) == len(list(written.glob("*.png"))) == 4

    # export: the ONNX graph gives the checkpoint's outputs
    onnx = tmp_path / "model.onnx"
    assert main(["export", "domain=healthcare", f"ckpt_path={metrics['checkpoint']}", "format=onnx", f"output={onnx}",
                 f"paths.output_dir={tmp_path / 'export'}", *QUIET]) == 0
    report = json.loads(onnx.with_suffix(".json").read_text())
    assert onnx.is_file() and report["max_abs_diff"] < 1e-3


@pytest.mark.slow  # the network on volumes: test_every_model_on_a_tiny_volume (default suite); here the whole run
def test_padim_on_phantom_volumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "domain=healthcare", "model=padim", "model.net.n_features=16", "data.spatial_dims=3", "data.image_size=16",
                 "data.sample.n_train=6", "data.sample.n_val=4", "data.sample.n_test=4", "data.batch_size=2", "data.max_heatmaps=1",
                 f"paths.output_dir={tmp_path / 'run'}", *QUIET]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model_name"] == "padim" and 0 <= metrics["test"]["image_auroc"] <= 1 and 0 <= metrics["test"]["pixel_auroc"] <= 1


def test_volumes_experiment_composes_with_the_bounded_settings():
    cfg = compose_config(DOMAIN, ["experiment=volumes", "paths.output_dir=/tmp/x"])
    assert cfg.data.spatial_dims == 3 and cfg.data.image_size == 128 and cfg.data.batch_size == 1 and cfg.data.cache == "none"
    assert cfg.model.net._target_.endswith("PatchCoreDetector") and cfg.model.net.max_bank_patches > 0 and cfg.model.net.max_pool


def test_volume_benchmark_measures_and_renders(monkeypatch):
    from benchmarks import healthcare_volumes

    result = healthcare_volumes.measure(16, n_train=2, n_test=2, n_val=2, overrides=["model.net.max_bank_patches=600"])
    assert result["patches_per_volume"] == 8**3 and result["bank"] <= 600 and result["inference_s_per_volume"] > 0
    assert 0 <= result["image_auroc"] <= 1 and 0 <= result["voxel_auroc"] <= 1 and result["peak_rss_mb"] >= result["rss_start_mb"]
    bigger = {**result, "size": 32, "voxels": 32**3, "collect_s_per_volume": 8 * result["collect_s_per_volume"],
              "fit_s_per_volume": 8 * result["fit_s_per_volume"], "inference_s_per_volume": 16 * result["inference_s_per_volume"]}
    (growth,) = healthcare_volumes.growth([result, bigger])
    assert growth["voxel_ratio"] == 8 and growth["collect"] == pytest.approx(1) and growth["inference"] == pytest.approx(2)
    text = healthcare_volumes.markdown({"results": [result, bigger], "growth": [growth]})
    assert "| 16³ | 2 / 2 | 512 |" in text and "Growth 16³ → 32³ (8x the voxels)" in text


def test_gpu_scale_volume_workload_at_tiny_size():
    from benchmarks import gpu_scale

    cpu = torch.device("cpu")
    (record,) = gpu_scale.healthcare_volumes(cpu, "small", gpu_scale.ceilings(cpu, small=True), bf16=False)
    assert record["workload"] == "PatchCore 3D" and record["finite"] and record["inference_per_s"] > 0 and record["tflops"] > 0
    assert record["shape"].startswith(f"{gpu_scale.SIZES['small']['healthcare_volumes']['volume_size']}³ volumes")


@pytest.mark.requires_gpu
def test_gpu_scale_volume_workload_on_cuda():
    from benchmarks import gpu_scale

    cuda = torch.device("cuda")
    (record,) = gpu_scale.healthcare_volumes(cuda, "small", gpu_scale.ceilings(cuda, small=True), bf16=True)
    assert record["device"] == "cuda" and record["finite"] and record["peak_gpu_mb"] > 0 and record["inference_per_s"] > 0
