"""Find the images of the three supported input layouts and split them into train (normal only), val and test.

A record is a dict ``{"image": path | array, "mask": path | array | None, "label": 0|1, "name": str}``; the name
identifies the input within its dataset (a path relative to the folder, the manifest's ``path`` as written, or
``<split>_<row>`` in a MedMNIST file), so two inputs never share one.

* **folder** (medical anomaly-detection benchmarks such as BMAD): ``train/good/``; ``valid/`` (or ``val/``)
  and ``test/`` each with ``good/`` and ``Ungood/``; images directly in those folders or in an ``img/``
  subfolder, masks in ``anomaly_mask/`` (or ``label/``, ``mask/``) beside ``img/`` with the same file stem.
* **medmnist**: a MedMNIST ``.npz`` (``train_images``, ``train_labels``, ``val_*``, ``test_*``); images whose
  label equals ``normal_label`` are normal (multi-label sets: rows with no positive label are normal).
  Only normal training images are kept for training (unless the network is supervised).
* **manifest**: a CSV with columns ``path,label`` (+ optional ``mask_path`` and ``split`` in
  train|val|test); relative paths are resolved against the CSV's folder, and every path must stay inside it
  (``../`` or an absolute path elsewhere is refused naming the row) unless ``data.allowed_root`` names a folder
  that holds them. Without ``split``, normals are split 60/20/20 and abnormals 50/50 between val and test,
  deterministically by ``seed``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sectorkit.core.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz", ".npy")
MASK_DIRS = ("anomaly_mask", "label", "mask", "masks")
Record = dict[str, Any]
Splits = dict[str, list[Record]]


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(IMAGE_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _images_in(folder: Path) -> list[Path]:
    """Images of one class folder: in ``folder/img/`` when it exists, else directly in ``folder``."""
    source = folder / "img" if (folder / "img").is_dir() else folder
    return sorted(p for p in source.iterdir() if _is_image(p))


def _mask_for(image: Path, class_dir: Path) -> Path | None:
    for name in MASK_DIRS:
        folder = class_dir / name
        if folder.is_dir():
            matches = [p for p in folder.iterdir() if _is_image(p) and _stem(p) == _stem(image)]
            if not matches:
                raise DataError(f"{image}: no mask with the same name in {folder} (expected e.g. {folder / image.name})")
            return matches[0]
    return None


def _class_records(class_dir: Path, label: int, root: Path) -> list[Record]:
    return [
        {"image": str(p), "mask": (str(m) if (m := _mask_for(p, class_dir)) else None), "label": label, "name": p.relative_to(root).as_posix()}
        for p in _images_in(class_dir)
    ]


def read_folder(root: Path, supervised: bool = False) -> Splits:
    """Records of the benchmark folder layout (see module docstring); ``supervised`` also reads train/Ungood."""
    train_dir = root / "train" / "good"
    if not train_dir.is_dir():
        raise DataError(f"{root}: expected a train/good/ folder of normal images (benchmark folder layout)")
    splits: Splits = {"train": _class_records(train_dir, 0, root)}
    if supervised and (root / "train" / "Ungood").is_dir():
        splits["train"] += _class_records(root / "train" / "Ungood", 1, root)
    for stage, names in (("val", ("valid", "val")), ("test", ("test",))):
        folder = next((root / n for n in names if (root / n).is_dir()), None)
        if folder is None:
            raise DataError(f"{root}: expected a {' or '.join(names)}/ folder with good/ and Ungood/ inside")
        records: list[Record] = []
        for cls, label in (("good", 0), ("Ungood", 1)):
            if (folder / cls).is_dir():
                records += _class_records(folder / cls, label, root)
        if not records:
            raise DataError(f"{folder}: no images found in good/ or Ungood/ (suffixes {', '.join(IMAGE_SUFFIXES)})")
        splits[stage] = records
    return splits


def _medmnist_images(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) -> a (N, C, H, W) view, in the file's dtype (uint8: a quarter of float32's memory; each
    image becomes float32 when it is transformed)."""
    return images[:, None] if images.ndim == 3 else np.moveaxis(images, -1, 1)


def require_file(path: Path, expected: str) -> None:
    """A DataError naming ``path`` when it is a folder or missing (``expected``: what the file should be)."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file ({expected}); for the folder layout use data.layout=auto or folder")
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected {expected})")


def read_medmnist(path: Path, normal_label: int = 0, supervised: bool = False) -> Splits:
    """Records of a MedMNIST ``.npz`` (arrays in memory); abnormal training images are dropped."""
    require_file(path, "a MedMNIST .npz")
    try:
        data = np.load(path)
    except Exception as exc:  # noqa: BLE001 - any numpy/zip failure means the file is unreadable
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    splits: Splits = {}
    for stage, prefix in (("train", "train"), ("val", "val"), ("test", "test")):
        keys = (f"{prefix}_images", f"{prefix}_labels")
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise DataError(f"{path}: missing arrays {missing}; a MedMNIST file has {prefix}_images/{prefix}_labels")
        labels = np.asarray(data[keys[1]])
        if labels.ndim == 2 and labels.shape[1] > 1:
            abnormal = labels.sum(axis=1) > 0
        else:
            flat = labels.reshape(-1)
            if not (flat == normal_label).any():
                raise ConfigError(f"data.normal_label={normal_label} never occurs in {path}:{keys[1]} (labels {np.unique(flat).tolist()})")
            abnormal = flat != normal_label
        images = _medmnist_images(np.asarray(data[keys[0]]))
        keep = ~abnormal if stage == "train" and not supervised else np.ones(len(abnormal), dtype=bool)
        idx = np.flatnonzero(keep)
        splits[stage] = [
            {"image": images[i], "mask": None, "label": int(abnormal[i]), "name": f"{prefix}_{i}"} for i in idx
        ]
    return splits


def inside(base: Path, written: str, allowed_root: Path | None) -> Path | None:
    """``written`` (a manifest entry) resolved against ``base``, lexically (``..`` folded, symbolic links kept), and
    the folder it must stay in: ``allowed_root`` when given, else ``base``; ``None`` for a path outside it."""
    root = Path(os.path.abspath(allowed_root if allowed_root is not None else base))
    resolved = Path(os.path.abspath(base / Path(written).expanduser()))
    return resolved if resolved.is_relative_to(root) else None


def _checked_paths(entries: pd.Series, column: str, path: Path, allowed_root: Path | None) -> pd.Series:
    """The entries of the manifest's column ``column`` resolved inside the manifest's folder (or ``allowed_root``); the
    first entry that resolves outside it is a DataError naming the manifest, the row and the path, so a shared manifest
    cannot make a run read ``../../../../etc/passwd`` or another absolute path."""
    out = []
    for position, written in enumerate(entries):
        if not isinstance(written, str) or not written.strip():
            out.append(None)
            continue
        resolved = inside(path.parent, written.strip(), allowed_root)
        if resolved is None:
            where = f"data.allowed_root {allowed_root}" if allowed_root is not None else f"the manifest's folder {Path(os.path.abspath(path.parent))}"
            raise DataError(f"{path}: row {int(entries.index[position]) + 2} column {column!r} names {written!r}, which resolves outside "
                            f"{where}; move the files there or set data.allowed_root to a folder that holds them")
        out.append(str(resolved))
    return pd.Series(out, index=entries.index, dtype=object)


def read_manifest(path: Path, seed: int = 0, supervised: bool = False, allowed_root: Path | None = None) -> Splits:
    """Records of a CSV manifest ``path,label[,mask_path][,split]``; every file it names must resolve inside the
    manifest's folder, or inside ``allowed_root`` when given."""
    require_file(path, "a CSV manifest path,label[,mask_path][,split]")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    missing = {"path", "label"} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}; expected path,label[,mask_path][,split]")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 2  # 1-based, after the header line
        raise DataError(f"{path}: column 'label' must be 0 (normal) or 1 (abnormal); row {row} has {frame['label'][bad].iloc[0]!r}")
    frame = frame.reset_index(drop=True)
    empty = frame["path"].isna() | (frame["path"].astype(str).str.strip() == "")
    if empty.any():
        raise DataError(f"{path}: column 'path' is empty in row {int(np.flatnonzero(empty.to_numpy())[0]) + 2}; every row names an image")
    frame = frame.assign(label=labels.astype(int), name=frame["path"].astype(str),
                         path=_checked_paths(frame["path"].astype(str), "path", path, allowed_root))
    if "mask_path" in frame:
        frame["mask_path"] = _checked_paths(frame["mask_path"], "mask_path", path, allowed_root)
    else:
        frame["mask_path"] = None
    if "split" in frame:
        frame["split"] = frame["split"].astype(str).str.lower().replace({"valid": "val", "validation": "val"})
        odd = ~frame["split"].isin(["train", "val", "test"])
        if odd.any():
            raise DataError(f"{path}: column 'split' must be train, val or test; found {frame['split'][odd].iloc[0]!r}")
        if not supervised and ((frame["split"] == "train") & (frame["label"] == 1)).any():
            frame = frame[~((frame["split"] == "train") & (frame["label"] == 1))]  # documented: trained on normals only
    else:
        u = np.random.default_rng(seed).random(len(frame))
        normal = frame["label"].to_numpy() == 0
        abnormal_split = np.where(u < 0.4, "train", np.where(u < 0.7, "val", "test")) if supervised else np.where(u < 0.5, "val", "test")
        split = np.where(normal, np.where(u < 0.6, "train", np.where(u < 0.8, "val", "test")), abnormal_split)
        frame = frame.assign(split=split)
    records = pd.DataFrame({
        "image": frame["path"], "mask": frame["mask_path"], "label": frame["label"],
        "name": frame["name"], "split": frame["split"],
    })
    out = {stage: records[records["split"] == stage].drop(columns="split").to_dict("records") for stage in ("train", "val", "test")}
    for rows in out.values():  # pandas turns missing masks into NaN: the pipeline expects None
        for row in rows:
            row["mask"] = row["mask"] if isinstance(row["mask"], str) else None
    return out


def detect_layout(path: Path) -> str:
    """'folder', 'medmnist' or 'manifest' from what ``path`` is."""
    if path.is_dir():
        return "folder"
    name = path.name.lower()
    if name.endswith(".npz"):
        return "medmnist"
    if name.endswith(".csv"):
        return "manifest"
    raise DataError(f"{path}: cannot tell the layout; give a folder (train/good, test/...), a MedMNIST .npz or a CSV manifest")


def read_splits(path: Path, layout: str = "auto", normal_label: int = 0, seed: int = 0, supervised: bool = False,
                allowed_root: str | Path | None = None) -> Splits:
    """Train/val/test records of ``path`` in ``layout`` (auto-detected by default); checks the normal set.

    ``supervised`` keeps abnormal training images (for a supervised network such as the classifier);
    ``allowed_root``: the folder a manifest's files may lie in (default: the manifest's own folder)."""
    layout = detect_layout(path) if layout == "auto" else layout
    if layout == "folder":
        splits = read_folder(path, supervised)
    elif layout == "medmnist":
        splits = read_medmnist(path, normal_label, supervised)
    elif layout == "manifest":
        splits = read_manifest(path, seed, supervised, Path(allowed_root).expanduser() if allowed_root else None)
    else:
        raise ConfigError(f"data.layout={layout!r}; expected auto, folder, medmnist or manifest")
    if not any(r["label"] == 0 for r in splits["train"]):
        raise DataError(f"{path}: the normal training set is empty; anomaly detection trains on normal images only")
    if supervised and not any(r["label"] == 1 for r in splits["train"]):
        raise DataError(f"{path}: the training split has no abnormal images, which a supervised network (model.net) needs")
    for stage in ("val", "test"):
        if not splits[stage]:
            raise DataError(f"{path}: the {stage} split is empty")
    return splits


def array_records(arrays: dict[str, np.ndarray]) -> list[Record]:
    """Records of image arrays held in memory, keyed like an ``.npz`` (``test_images`` -> ``test_0``, ``test_1``, ...):
    (N, H, W), (N, C, H, W) or MedMNIST's (N, H, W, C)."""
    channels_first = {key: a.ndim == 4 and a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3) for key, a in arrays.items()}
    return [{"image": image, "mask": None, "label": 0, "name": f"{key.removesuffix('_images')}_{i}"} for key, a in arrays.items()
            for i, image in enumerate(a if channels_first[key] else _medmnist_images(a))]


def list_images(path: Path) -> list[Record]:
    """Records for ``sectorkit predict``: one image file, every image of a folder (recursively), or the image arrays
    of an ``.npz`` (every ``*_images`` array, (N, H, W), (N, C, H, W) or MedMNIST's (N, H, W, C))."""
    if path.is_file() and path.name.lower().endswith(".npz"):
        with np.load(path) as data:
            keys = [key for key in data.files if key.endswith("_images")]
            if not keys:
                raise DataError(f"{path}: no '*_images' array in this .npz (expected e.g. test_images, as MedMNIST files hold)")
            arrays = {key: np.asarray(data[key]) for key in keys}
        return array_records(arrays)
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if _is_image(p) and not any(d in p.parts for d in MASK_DIRS))
    if not files:
        raise DataError(f"{path}: no images found (suffixes {', '.join(IMAGE_SUFFIXES)})")
    return [{"image": str(p), "mask": None, "label": 0, "name": p.relative_to(path).as_posix() if path.is_dir() else p.name} for p in files]
