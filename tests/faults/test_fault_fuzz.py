"""Property-based fuzzing of every domain's readers (hypothesis): random bytes, random CSV and Parquet tables
(shapes, column names and dtypes drawn around what the reader expects, inf/1e308/NaN/text values included) and
random images and NIfTI volumes for healthcare. Each input is parsed or refused with a one-line
DataError/ConfigError; any other exception is a bug. The default run draws a fixed, small number of examples per
reader (derandomised: the same examples every run); ``-m slow`` draws many more."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fault_catalogue import READERS, healthcare_manifest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sectorkit.core.errors import ConfigError, DataError

BUDGETS = [pytest.param(25, id="default"), pytest.param(400, id="heavy", marks=pytest.mark.slow)]
COLUMNS = {
    "finance": ["TX_DATETIME", "TX_AMOUNT", "TX_FRAUD", "CUSTOMER_ID", "TERMINAL_ID", "TRANSACTION_ID"],
    "retail": ["user_id", "item_id", "rating", "timestamp"],
    "agriculture": ["series_id", "date", "tmax", "tmin", "precip", "units"],
    "agriculture_yield": ["region", "year", "yield"],
    "healthcare": ["path", "label", "mask_path", "split"],
}
CELLS = st.one_of(
    st.integers(-3, 3), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 0.0, 1.0, "inf", "-inf", "nan", "", "NA", "1e400", "2001-01-01", "03/04/2001", "12:00",
                     "img0.png", "../../etc/passwd", "/etc/hostname", "train", "val", "test", "degC", "0", "1", "é", "a,b", '"']),
    st.text(max_size=6),
)


def fuzz(budget: int, strategy: st.SearchStrategy, check: Callable[[Any], None]) -> None:
    """Run ``check`` on ``budget`` examples of ``strategy``, the same ones every run."""
    settings(max_examples=budget, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck),
             phases=[Phase.explicit, Phase.generate], report_multiple_bugs=True)(
        given(strategy)(check))()


def parsed_or_refused(read: Callable[[Path], Any], path: Path) -> None:
    """The reader returns, or raises a one-line DataError/ConfigError; anything else fails the test."""
    try:
        read(path)
    except (DataError, ConfigError) as err:
        assert "\n" not in str(err), str(err)


@st.composite
def tables(draw: st.DrawFn, domain: str) -> pd.DataFrame:
    """A table whose columns are mostly the reader's own names (so checks past the header are reached)."""
    known = COLUMNS[domain]
    names = draw(st.lists(st.one_of(st.sampled_from(known), st.text(min_size=1, max_size=4)), min_size=0, max_size=len(known) + 2,
                          unique=True))
    if draw(st.booleans()):
        names = list(dict.fromkeys([*known, *names]))
    n_rows = draw(st.integers(0, 25))
    columns = {}
    for name in names:
        kind = draw(st.sampled_from(["cells", "ints", "floats", "text"]))
        if kind == "ints":
            values = draw(st.lists(st.integers(-2, 2000), min_size=n_rows, max_size=n_rows))
        elif kind == "floats":
            values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=n_rows, max_size=n_rows))
        elif kind == "text":
            values = draw(st.lists(st.text(max_size=5), min_size=n_rows, max_size=n_rows))
        else:
            values = draw(st.lists(CELLS, min_size=n_rows, max_size=n_rows))
        columns[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(columns)


def write(frame: pd.DataFrame, folder: Path, name: str, as_parquet: bool) -> Path:
    if as_parquet:
        path = folder / f"{Path(name).stem}.parquet"
        try:
            frame.astype(str).to_parquet(path, index=False) if frame.shape[1] else path.write_bytes(b"PAR1")
        except Exception:  # noqa: BLE001 - a frame pyarrow cannot store: write it as text instead
            path.write_bytes(frame.to_csv(index=False).encode("utf-8", "surrogatepass"))
        return path
    path = folder / name
    path.write_bytes(frame.to_csv(index=False).encode("utf-8", "surrogatepass"))
    return path


DOMAIN_FILES = [("finance", "tx.csv"), ("retail", "log.csv"), ("agriculture", "weather.csv"), ("agriculture_yield", "yield.csv")]


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize(("domain", "name"), DOMAIN_FILES, ids=[d for d, _ in DOMAIN_FILES])
def test_random_tables(domain, name, budget) -> None:
    def check(example: tuple[pd.DataFrame, bool]) -> None:
        frame, as_parquet = example
        with tempfile.TemporaryDirectory() as folder:
            parsed_or_refused(READERS[domain], write(frame, Path(folder), name, as_parquet))

    fuzz(budget, st.tuples(tables(domain), st.booleans()), check)


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize(("domain", "name"), [*DOMAIN_FILES, ("healthcare", "manifest.csv"), ("retail", "log.csv.gz"),
                                              ("finance", "tx.parquet"), ("retail", "u.data")], ids=lambda v: str(v))
def test_random_bytes(domain, name, budget) -> None:
    def check(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            path.write_bytes(data)
            parsed_or_refused(READERS[domain], path)

    fuzz(budget, st.binary(max_size=600), check)


@pytest.mark.parametrize("budget", BUDGETS)
def test_random_manifests(budget) -> None:
    """Manifests over real images whose rows are drawn at random (paths inside and outside the folder, odd labels)."""
    with tempfile.TemporaryDirectory() as base:
        images = healthcare_manifest(Path(base) / "images", n_normal=6, n_abnormal=4, size=8).parent

        def check(frame: pd.DataFrame) -> None:
            frame.to_csv(images / "manifest.csv", index=False)
            parsed_or_refused(READERS["healthcare"], images / "manifest.csv")

        fuzz(budget, tables("healthcare"), check)


@st.composite
def images(draw: st.DrawFn) -> tuple[str, Any]:
    """(suffix, content): random bytes under an image suffix, or a random array as PNG, .npy or NIfTI."""
    kind = draw(st.sampled_from(["bytes", "png", "npy", "nifti"]))
    if kind == "bytes":
        return draw(st.sampled_from([".png", ".jpg", ".dcm", ".nii", ".nii.gz", ".npy", ".tif"])), draw(st.binary(max_size=300))
    ndim = draw(st.integers(0, 4)) if kind != "png" else draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=ndim, max_size=ndim)))
    if kind == "png" and ndim == 3:
        shape = (*shape[:2], draw(st.sampled_from([1, 3, 4])))
    dtype = np.uint8 if kind == "png" else draw(st.sampled_from([np.uint8, np.int16, np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    array = (rng.normal(0, draw(st.sampled_from([1.0, 1e3, 1e30])), shape)).astype(np.float64)
    if np.issubdtype(dtype, np.floating) and array.size and draw(st.booleans()):
        array.flat[0] = draw(st.sampled_from([np.nan, np.inf, 1e308]))
    with np.errstate(all="ignore"):
        return {"png": ".png", "npy": ".npy", "nifti": ".nii.gz"}[kind], np.nan_to_num(array).astype(dtype) if dtype != np.float64 and not np.issubdtype(dtype, np.floating) else array.astype(dtype)


@pytest.mark.parametrize("budget", BUDGETS)
def test_random_images_and_volumes(budget) -> None:
    """An image of the manifest replaced by a random file: the transform chain reads it or names it."""
    import nibabel as nib
    from PIL import Image

    with tempfile.TemporaryDirectory() as base:
        manifest = healthcare_manifest(Path(base) / "images", n_normal=6, n_abnormal=4, size=8)
        rows = pd.read_csv(manifest)

        def check(example: tuple[str, Any]) -> None:
            suffix, content = example
            target = manifest.parent / f"odd{suffix}"
            if isinstance(content, bytes):
                target.write_bytes(content)
            elif suffix == ".png":
                Image.fromarray(content.squeeze(-1) if content.ndim == 3 and content.shape[-1] == 1 else content).save(target)
            elif suffix == ".npy":
                np.save(target, content)
            else:
                nib.save(nib.Nifti1Image(content if content.ndim else content.reshape(1), np.eye(4)), target)
            rows.assign(path=[target.name, *rows["path"][1:]]).to_csv(manifest, index=False)
            parsed_or_refused(READERS["healthcare"], manifest)

        fuzz(budget, images(), check)
