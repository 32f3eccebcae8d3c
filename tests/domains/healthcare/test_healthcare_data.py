"""Phantom generator, the three input layouts, file formats and bad-input handling."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sectorkit.core.config import validate_overrides
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.domains.healthcare import DOMAIN
from sectorkit.domains.healthcare.data import HealthcareDataModule
from sectorkit.domains.healthcare.sample import SIZE_BUCKETS, make_phantoms

warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _dicom(path: Path, array: np.ndarray) -> None:
    """A minimal single-frame 16-bit MR DICOM."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing, ds.ImagePositionPatient, ds.ImageOrientationPatient = [1, 1], [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelData = array.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def _benchmark_folder(root: Path, size: int = 24, n: int = 6, writer=None, suffix: str = ".png") -> Path:
    """train/good, valid|test/{good,Ungood}/img + anomaly_mask from phantoms."""
    ph = make_phantoms(3 * n, 2 * n, size=size, seed=3)
    to8 = lambda a: (np.clip(a, 0, 1) * 255).astype(np.uint8)  # noqa: E731
    write = writer or (lambda p, a: _png(p, to8(a)))
    for i in range(n):
        write(root / "train" / "good" / f"n{i}{suffix}", ph.images[i, 0])
    for j, stage in enumerate(("valid", "test")):
        for i in range(n // 2):
            write(root / stage / "good" / "img" / f"g{i}{suffix}", ph.images[n + j * n + i, 0])
            k = 3 * n + j * n + i
            write(root / stage / "Ungood" / "img" / f"u{i}{suffix}", ph.images[k, 0])
            _png(root / stage / "Ungood" / "anomaly_mask" / f"u{i}.png", ph.masks[k, 0] * 255)
    return root


def _scaled(image: np.ndarray, size: int) -> np.ndarray:
    """A grey uint8 image as the pipeline gives it: scaled to 0..1 per image, area-resized to ``size``."""
    x = torch.as_tensor(image, dtype=torch.float32)
    x = (x - x.min()) / (x.max() - x.min())
    return torch.nn.functional.interpolate(x[None, None], size=(size, size), mode="area")[0, 0].numpy()


def _setup(path: Path, **kw) -> HealthcareDataModule:
    dm = HealthcareDataModule(path=str(path), image_size=16, **kw)
    dm.setup("fit")
    return dm


# --- phantoms ------------------------------------------------------------------------------------
def test_phantoms_are_deterministic_with_exact_masks():
    a, b = make_phantoms(4, 4, size=32, seed=7), make_phantoms(4, 4, size=32, seed=7)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, make_phantoms(4, 4, size=32, seed=8).images)
    assert a.images.shape == (8, 1, 32, 32) and a.masks.dtype == np.uint8
    assert a.labels.tolist() == [0] * 4 + [1] * 4
    assert a.masks[:4].sum() == 0 and (a.masks[4:].reshape(4, -1).sum(1) > 0).all()
    # lesion radius log-uniform within the documented range, contrast both signs within range
    big = make_phantoms(0, 400, size=32, seed=1)
    assert 0.03 <= big.radius.min() and big.radius.max() <= 0.15
    assert 0.04 <= np.abs(big.contrast).min() and np.abs(big.contrast).max() <= 0.35
    assert (big.contrast > 0).mean() == pytest.approx(0.5, abs=0.1)
    buckets = pd.Series(big.size_bucket).value_counts()
    assert set(buckets.index) == set(SIZE_BUCKETS) and buckets.min() > 60


def test_lesion_changes_exactly_the_masked_pixels():
    """Same seed with and without lesions differs only where the mask is (noise aside, the anatomy is shared)."""
    ph = make_phantoms(0, 6, size=48, seed=2, noise=0.0, bias=0.0)
    big = ph.radius > 0.06
    masked_area = ph.masks.reshape(6, -1).sum(1)
    expected = np.pi * (ph.radius * 48) ** 2
    assert np.all(masked_area[big] > 0.25 * expected[big]) and np.all(masked_area[big] < 4 * expected[big])


def test_tiny_3d_volumes():
    ph = make_phantoms(2, 2, size=12, spatial_dims=3, seed=0)
    assert ph.images.shape == (4, 1, 12, 12, 12) and ph.masks[2:].sum() > 0


# --- layouts and formats -----------------------------------------------------------------------
def test_benchmark_folder_layout_png(tmp_path):
    dm = _setup(_benchmark_folder(tmp_path / "bmad"))
    x, m, y = dm.arrays("test")
    assert x.shape == (6, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [0, 0, 0, 1, 1, 1] and m[3:].sum() > 0 and m[:3].sum() == 0
    assert dm.arrays("train")[2].sum() == 0 and len(dm.arrays("val")[2]) == 6
    # names are paths inside the folder: same-named files of two classes stay apart in tables and heatmaps
    assert [r["name"] for r in dm.records["test"]][::3] == ["test/good/img/g0.png", "test/Ungood/img/u0.png"]


def test_nifti_and_16bit_dicom_inputs(tmp_path):
    nii = lambda p, a: (p.parent.mkdir(parents=True, exist_ok=True), nib.save(nib.Nifti1Image(a.astype(np.float32), np.eye(4)), p))  # noqa: E731
    dm = _setup(_benchmark_folder(tmp_path / "nii", writer=nii, suffix=".nii.gz"))
    assert dm.arrays("test")[0].shape == (6, 1, 16, 16)
    dcm = lambda p, a: _dicom(p, np.clip(a, 0, 1) * 4000)  # noqa: E731 - 12-bit range stored in 16 bits
    dm = _setup(_benchmark_folder(tmp_path / "dcm", writer=dcm, suffix=".dcm"))
    x = dm.arrays("test")[0]
    assert x.shape == (6, 1, 16, 16) and 0.5 < x.max() <= 1.0 and x.min() >= 0


def test_manifest_with_masks_and_mixed_sizes_and_channels(tmp_path):
    ph = make_phantoms(12, 6, size=20, seed=4)
    rows = []
    for i in range(18):
        img = (np.clip(ph.images[i, 0], 0, 1) * 255).astype(np.uint8)
        if i % 3 == 0:
            img = np.stack([img] * 3, axis=-1)  # RGB: averaged to grey
        if i % 4 == 0:
            img = np.array(Image.fromarray(img).resize((28, 28)))  # other size: resized
        _png(tmp_path / f"i{i}.png", img)
        mask = ""
        if ph.labels[i]:
            m = ph.masks[i, 0] * 255
            if i % 4 == 0:
                m = np.array(Image.fromarray(m).resize((28, 28), Image.NEAREST))
            _png(tmp_path / f"m{i}.png", m)
            mask = f"m{i}.png"
        rows.append({"path": f"i{i}.png", "label": int(ph.labels[i]), "mask_path": mask})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    dm = _setup(tmp_path / "manifest.csv", seed=1)
    sizes = {s: len(dm.records[s]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 18 and all(r["label"] == 0 for r in dm.records["train"])
    x, m, y = dm.arrays("test")
    assert x.shape[1:] == (1, 16, 16) and (m.reshape(len(y), -1).sum(1)[y == 1] > 0).all()


def test_medmnist_npz_with_configurable_normal_label(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 8), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2)[:, None]
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    dm = _setup(tmp_path / "pneumoniamnist.npz", normal_label=1)
    assert len(dm.records["train"]) == 10 and dm.arrays("test")[2].tolist() == [1, 0] * 5
    with pytest.raises(ConfigError, match="normal_label=7"):
        _setup(tmp_path / "pneumoniamnist.npz", normal_label=7)
    # memory: the records keep the file's uint8 pixels; data.cache=memory holds the train and val splits, never the
    # test split (read as it is scored), and a maskless image's all-zero mask is made per batch, not cached
    assert dm.records["test"][0]["image"].dtype == np.uint8 and dm.records["test"][0]["image"].shape == (1, 28, 28)
    assert [type(dm.datasets[s]).__name__ for s in ("train", "val", "test")] == ["CacheDataset", "CacheDataset", "Dataset"]
    assert "mask" not in dm.datasets["train"]._cache[0]
    batch = next(iter(dm.test_dataloader()))
    assert batch["mask"].shape == batch["inputs"].shape and not batch["mask"].any()
    np.testing.assert_allclose(batch["inputs"][0, 0].numpy(), _scaled(arrays["test_images"][0], 16), atol=1e-5)


# --- bad input ---------------------------------------------------------------------------------
def test_corrupt_image_names_the_file(tmp_path):
    root = _benchmark_folder(tmp_path / "bad")
    (root / "test" / "good" / "img" / "g1.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"g1\.png: cannot read"):
        _setup(root)


def test_uncached_pipeline_also_fails_early_naming_the_file(tmp_path):
    root = _benchmark_folder(tmp_path / "bad")
    (root / "train" / "good" / "n2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"n2\.png"):
        _setup(root, cache="none")


def test_mask_that_does_not_match_its_image(tmp_path):
    root = _benchmark_folder(tmp_path / "bad")
    _png(root / "test" / "Ungood" / "anomaly_mask" / "u0.png", np.zeros((7, 9), np.uint8))
    with pytest.raises(DataError, match=r"u0\.png: mask size .* does not match its image .*u0\.png"):
        _setup(root)


def test_missing_mask_is_named(tmp_path):
    root = _benchmark_folder(tmp_path / "bad")
    (root / "valid" / "Ungood" / "anomaly_mask" / "u1.png").unlink()
    with pytest.raises(DataError, match=r"u1\.png: no mask with the same name"):
        _setup(root)


def test_empty_normal_set(tmp_path):
    root = _benchmark_folder(tmp_path / "bad")
    for p in (root / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="normal training set is empty"):
        _setup(root)


def test_supervised_network_needs_abnormal_training_images(tmp_path):
    from sectorkit.domains.healthcare.models.classifier import ClassifierDetector

    root = _benchmark_folder(tmp_path / "sup")
    with pytest.raises(DataError, match=r"sup: the training split has no abnormal images, which a supervised network"):
        _setup(root, network=ClassifierDetector)
    ph = make_phantoms(0, 2, size=24, seed=5)
    for i in range(2):
        _png(root / "train" / "Ungood" / f"a{i}.png", (np.clip(ph.images[i, 0], 0, 1) * 255).astype(np.uint8))
    assert _setup(root, network=ClassifierDetector).arrays("train")[2].tolist() == [0] * 6 + [1, 1]
    assert _setup(root).arrays("train")[2].sum() == 0  # an unsupervised network never sees them


def test_nan_in_nifti_error_or_zero_policy(tmp_path):
    def nii(p: Path, a: np.ndarray) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        a = a.astype(np.float32).copy()
        if p.name == "n1.nii.gz":
            a[3, 4] = np.nan
        nib.save(nib.Nifti1Image(a, np.eye(4)), p)

    root = _benchmark_folder(tmp_path / "nan", writer=nii, suffix=".nii.gz")
    with pytest.raises(DataError, match=r"n1\.nii\.gz: image contains 1 NaN"):
        _setup(root)
    dm = _setup(root, nan_policy="zero")
    assert np.isfinite(dm.arrays("train")[0]).all()


def test_bad_config_values():
    with pytest.raises(ConfigError, match="data.cache='ram': expected one of memory, disk, none"):
        validate_overrides(DOMAIN, ["domain=healthcare", "data.cache=ram"])
    with pytest.raises(ConfigError, match="data.cache_dir"):
        HealthcareDataModule(cache="disk")


def test_disk_cache_matches_memory_cache(tmp_path):
    root = _benchmark_folder(tmp_path / "ok")
    a = _setup(root).arrays("test")[0]
    b = _setup(root, cache="disk", cache_dir=str(tmp_path / "cache")).arrays("test")[0]
    np.testing.assert_allclose(a, b)
    assert any((tmp_path / "cache").iterdir())


def test_manifest_schema_errors_name_file_column_and_row(tmp_path):
    pd.DataFrame({"file": ["a.png"], "label": [0]}).to_csv(tmp_path / "m1.csv", index=False)
    with pytest.raises(DataError, match=r"m1\.csv: missing column\(s\) \['path'\]"):
        _setup(tmp_path / "m1.csv")
    pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, "tumour"]}).to_csv(tmp_path / "m2.csv", index=False)
    with pytest.raises(DataError, match=r"m2\.csv: column 'label' must be 0 \(normal\) or 1 \(abnormal\); row 3 has 'tumour'"):
        _setup(tmp_path / "m2.csv")
    with pytest.raises(DataError, match="cannot tell the layout"):
        (tmp_path / "x.txt").write_text("hi")
        _setup(tmp_path / "x.txt")
