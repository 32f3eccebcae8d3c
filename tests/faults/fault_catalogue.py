"""The fault catalogue: for each domain, a small valid input and the faults injected into it.

Each :class:`Fault` writes its faulty input under a folder and names the overrides that feed it to
``sectorkit train`` (through the real CLI) and the domain's reader functions (called directly, fast). The
expected outcome is a one-line error matching ``expect`` (exit status 2, no traceback), or, for faults a
domain tolerates by design (``expect=None``), a clean run; never a half-written output. The tests in this
folder and ``benchmarks/faults.py`` both run this catalogue.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DOMAINS = ("finance", "retail", "agriculture", "healthcare")
ONE_LINE_ERRORS = ("DataError", "ConfigError")
# The least training that reaches every output: one batch of train, val and test, one thread, no progress bar.
SMOKE = ["debug=fast_dev_run", "runtime.torch_threads=1", "callbacks.progress_bar=null", "callbacks.model_summary=null",
         "with_baselines=false"]


# --- the valid inputs -------------------------------------------------------------------------------------
def finance_frame(n_days: int = 50, rows_per_day: int = 40, seed: int = 0) -> pd.DataFrame:
    """A small transaction table laid out like the simulator's (a few percent fraud)."""
    rng = np.random.default_rng(seed)
    n = n_days * rows_per_day
    seconds = np.sort(rng.uniform(0, n_days * 86_400, n))
    return pd.DataFrame({
        "TRANSACTION_ID": np.arange(n),
        "TX_DATETIME": (pd.Timestamp("2018-04-01") + pd.to_timedelta(seconds, unit="s")).strftime("%Y-%m-%d %H:%M:%S"),
        "CUSTOMER_ID": rng.integers(0, 200, n), "TERMINAL_ID": rng.integers(0, 300, n),
        "TX_AMOUNT": np.round(rng.gamma(2.0, 30.0, n), 2), "TX_FRAUD": (rng.random(n) < 0.05).astype(int),
    })


def retail_frame(n_users: int = 60, per_user: int = 12, n_items: int = 80, seed: int = 0) -> pd.DataFrame:
    """A small explicit-feedback log ``user_id, item_id, rating, timestamp`` without repeated pairs."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{i}") for u in range(n_users) for i in rng.choice(n_items, per_user, replace=False)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    frame["rating"] = rng.integers(1, 6, len(frame))
    frame["timestamp"] = 1_000_000 + np.arange(len(frame)) * 60
    return frame


def weather_frame(n_series: int = 2, n_days: int = 420, seed: int = 0) -> pd.DataFrame:
    """A long daily table ``series_id, date, tmax, tmin, precip`` with a seasonal cycle."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_series):
        day = np.arange(n_days)
        tmax = 15 + 10 * np.sin(2 * np.pi * day / 365.25) + rng.normal(0, 2, n_days)
        parts.append(pd.DataFrame({"series_id": f"s{s}", "date": pd.date_range("2001-01-01", periods=n_days).strftime("%Y-%m-%d"),
                                   "tmax": tmax.round(2), "tmin": (tmax - 8 + rng.normal(0, 1, n_days)).round(2),
                                   "precip": rng.gamma(0.5, 2.0, n_days).round(2)}))
    return pd.concat(parts, ignore_index=True)


def yield_frame(n_regions: int = 6, years: tuple[int, int] = (1995, 2018), seed: int = 0) -> pd.DataFrame:
    """A region x year yield table with a trend."""
    rng = np.random.default_rng(seed)
    rows = [(f"r{r}", y, 3.0 + 0.05 * (y - years[0]) + rng.normal(0, 0.3)) for r in range(n_regions) for y in range(years[0], years[1] + 1)]
    return pd.DataFrame(rows, columns=["region", "year", "yield"]).round(3)


def healthcare_manifest(folder: Path, n_normal: int = 24, n_abnormal: int = 12, size: int = 16, seed: int = 0) -> Path:
    """PNG images (abnormal ones with a bright square) and ``manifest.csv`` with ``path,label,split``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_normal + n_abnormal):
        label = int(i >= n_normal)
        image = rng.normal(100, 10, (size, size))
        if label:
            image[4:9, 4:9] += 100
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
        split = ("train" if i < n_normal * 0.6 else "val" if i < n_normal * 0.8 else "test") if not label else ("val" if i % 2 else "test")
        rows.append({"path": f"img{i}.png", "label": label, "split": split})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


# --- readers called directly ------------------------------------------------------------------------------
def read_finance(path: Path) -> Any:
    from sectorkit.domains.finance.readers import ColumnSpec, read_transactions

    return read_transactions(path, ColumnSpec(id="TRANSACTION_ID"))


def read_retail(path: Path, duplicates: str = "error") -> Any:
    from sectorkit.domains.retail.data import prepare_interactions
    from sectorkit.domains.retail.readers import read_interactions

    return prepare_interactions(read_interactions(path), str(path), duplicates=duplicates)


def read_weather(path: Path, date_format: str | None = None) -> Any:
    from sectorkit.domains.agriculture.readers import read_series_table, validate_series

    values = ["tmax", "tmin", "precip"]
    return validate_series(read_series_table(path, "series_id", values), str(path), "tmax", ["tmin", "precip"], min_length=63,
                           date_format=date_format)


def read_yield(path: Path) -> Any:
    from sectorkit.core.io import read_table
    from sectorkit.domains.agriculture.readers import validate_yield

    return validate_yield(read_table(path, "yield table"), str(path))


def read_healthcare(path: Path, allowed_root: str | None = None) -> Any:
    """The records of ``path`` and every image read through the domain's transform chain (uncached)."""
    from sectorkit.domains.healthcare.data import HealthcareDataModule
    from sectorkit.domains.healthcare.readers import read_splits

    splits = read_splits(path, allowed_root=allowed_root)
    module = HealthcareDataModule(path=str(path), image_size=16, cache="none")
    return {stage: module.make_dataset(records, augment=False, cache="none") for stage, records in splits.items()}


# --- the catalogue --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """One fault: ``make(folder)`` writes the input and returns ``data.path``; ``overrides`` choose the preset."""

    domain: str
    name: str
    make: Callable[[Path], Path]
    expect: str | None  # regex of the one-line error; None: a clean run (a fault the domain tolerates by design)
    overrides: tuple[str, ...] = ()
    read: Callable[[Path], Any] | None = None  # the reader functions; None: only the run can tell (split or config level)
    reader_expect: str | None = field(default=None)  # the reader's error when it differs from the run's
    preset: str = ""  # the key of PRESETS (default: the domain)

    @property
    def id(self) -> str:
        return f"{self.domain}:{self.name}"

    def argv(self, path: Path) -> list[str]:
        """``sectorkit train`` arguments that feed the faulty input to the domain with the least training."""
        return ["train", f"domain={self.domain}", *PRESETS[self.preset or self.domain], *self.overrides, f"data.path={path}", *SMOKE]


PRESETS = {
    "finance": ("data=csv", "data.columns.id=TRANSACTION_ID", "model=mlp_small", "data.split.train_start=null",
                "data.split.train_days=14", "data.split.valid_days=7", "data.split.test_days=7", "data.split.delay_days=7"),
    "retail": ("data=file", "model=bpr"),
    "agriculture": ("data=weather", "model=dlinear", "data.lookback=28"),
    "agriculture_yield": ("data=yield", "model=yield_mlp", "data.test_years=3", "data.val_years=2"),
    "healthcare": ("data=folder", "model=padim", "data.image_size=16", "data.cache=none"),
}
READERS: dict[str, Callable[[Path], Any]] = {"finance": read_finance, "retail": read_retail, "agriculture": read_weather,
                                             "agriculture_yield": read_yield, "healthcare": read_healthcare}


def _table(frame_fn: Callable[[], pd.DataFrame], name: str, edit: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
           writer: str = "csv") -> Callable[[Path], Path]:
    """A maker writing ``edit(frame_fn())`` to ``folder/name`` as CSV (or Parquet, gzip CSV)."""

    def make(folder: Path) -> Path:
        frame = frame_fn()
        frame = edit(frame) if edit else frame
        path = folder / name
        if writer == "parquet":
            frame.to_parquet(path, index=False)
        elif writer == "gzip":
            with gzip.open(path, "wt") as handle:
                frame.to_csv(handle, index=False)
        else:
            frame.to_csv(path, index=False)
        return path

    return make


def _bytes(name: str, data: bytes | Callable[[Path], bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(data(folder) if callable(data) else data)
        return folder / name

    return make


def _truncated(inner: Callable[[Path], Path], keep: float = 0.5) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = inner(folder)
        raw = path.read_bytes()
        path.write_bytes(raw[: max(1, int(len(raw) * keep))])
        return path

    return make


def _header_only(frame_fn: Callable[[], pd.DataFrame], name: str) -> Callable[[Path], Path]:
    return _bytes(name, lambda folder: (",".join(frame_fn().columns) + "\n").encode())


def _folder(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).mkdir(parents=True, exist_ok=True)
        return folder / name

    return make


def _missing(name: str) -> Callable[[Path], Path]:
    return lambda folder: folder / name


def _set(column: str, row: int, value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame

    return edit


def _non_utf8(frame_fn: Callable[[], pd.DataFrame], name: str) -> Callable[[Path], Path]:
    def data(folder: Path) -> bytes:
        text = frame_fn().to_csv(index=False).encode()
        lines = text.split(b"\n")
        lines[3] = lines[3].replace(b",", b"\xe9\xff,", 1)  # latin-1 bytes in the first id of data row 3
        return b"\n".join(lines)

    return _bytes(name, data)


def _common(domain: str, frame_fn: Callable[[], pd.DataFrame], name: str, folder_ok: bool = False) -> list[Fault]:
    """The file faults every table-reading domain gets."""
    read = READERS[domain]
    key = domain.split("_")[0]
    preset = {"preset": domain}
    faults = [
        Fault(key, f"{domain} empty file", _bytes(name, b""), r"empty", read=read, **preset),
        Fault(key, f"{domain} header only", _header_only(frame_fn, name), r"no rows|header but no|no interactions|empty|too short|shorter", read=read, **preset),
        Fault(key, f"{domain} random bytes", _bytes(name, bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8))),
              r"\S", read=read, **preset),
        Fault(key, f"{domain} non-UTF-8 bytes", _non_utf8(frame_fn, name), r"UTF-8|utf-8|codec|non-numeric|numeric|could not be read", read=read, **preset),
        Fault(key, f"{domain} truncated .csv.gz", _truncated(_table(frame_fn, name + ".gz", writer="gzip"), 0.4),
              r"truncated|damaged|could not be read|compressed|Compressed|EOF", read=read, **preset),
        Fault(key, f"{domain} truncated parquet", _truncated(_table(frame_fn, Path(name).stem + ".parquet", writer="parquet"), 0.5),
              r"Parquet|parquet|could not be read", read=read, **preset),
        Fault(key, f"{domain} missing file", _missing(name), r"no such file|not found", read=read, **preset),
    ]
    if not folder_ok:  # finance reads a folder of Parquet shards: an empty one is refused as such
        faults.append(Fault(key, f"{domain} folder for a file", _folder("a_folder.csv"),
                            r"is a folder, expected a file" + (r"|folder holds no \.parquet files" if key == "finance" else ""), read=read, **preset))
    return faults


def catalogue() -> list[Fault]:
    """Every file fault of every domain."""
    fin, ret, wea, yld = finance_frame, retail_frame, weather_frame, yield_frame
    faults = [
        *_common("finance", fin, "tx.csv"),
        Fault("finance", "inf amount", _table(fin, "tx.csv", _set("TX_AMOUNT", 5, "inf")), r"'TX_AMOUNT' must hold finite numbers; row 5", read=read_finance),
        Fault("finance", "1e308 amount", _table(fin, "tx.csv", _set("TX_AMOUNT", 5, 1e308)), None, read=read_finance),
        Fault("finance", "text amount", _table(fin, "tx.csv", _set("TX_AMOUNT", 7, "12,5 EUR")), r"'TX_AMOUNT' must be numeric", read=read_finance),
        Fault("finance", "missing amount", _table(fin, "tx.csv", _set("TX_AMOUNT", 7, None)), r"amount\) has missing values", read=read_finance),
        Fault("finance", "label 2", _table(fin, "tx.csv", _set("TX_FRAUD", 3, 2)), r"must hold 0/1", read=read_finance),
        Fault("finance", "duplicate ids", _table(fin, "tx.csv", _set("TRANSACTION_ID", 9, 8)), r"has duplicates", read=read_finance),
        Fault("finance", "bad date", _table(fin, "tx.csv", _set("TX_DATETIME", 4, "yesterday")), r"TX_DATETIME", read=read_finance),
        Fault("finance", "missing column", _table(fin, "tx.csv", lambda f: f.drop(columns=["TX_AMOUNT"])), r"missing column", read=read_finance),
        Fault("finance", "unsorted rows", _table(fin, "tx.csv", lambda f: f.sample(frac=1.0, random_state=0)), None, read=read_finance),
        *_common("retail", ret, "log.csv"),
        Fault("retail", "empty user id", _table(ret, "log.csv", _set("user_id", 4, None)), r"empty user or item id", read=read_retail),
        Fault("retail", "text rating", _table(ret, "log.csv", _set("rating", 4, "five")), r"'rating' has 1 non-numeric", read=read_retail),
        Fault("retail", "duplicate pairs (data.duplicates=error)", _table(ret, "log.csv", lambda f: pd.concat([f, f.iloc[:3]])),
              r"duplicate", overrides=("data.duplicates=error",), read=read_retail),
        Fault("retail", "duplicate pairs (default: last kept)", _table(ret, "log.csv", lambda f: pd.concat([f, f.iloc[:3]])),
              None, read=lambda p: read_retail(p, duplicates="last")),
        Fault("retail", "missing item column", _table(ret, "log.csv", lambda f: f.drop(columns=["item_id"])), r"no item column", read=read_retail),
        *_common("agriculture", wea, "weather.csv", folder_ok=True),
        Fault("agriculture", "empty folder", _folder("stations"), r"no station files", read=read_weather),
        Fault("agriculture", "inf covariate", _table(wea, "weather.csv", _set("precip", 10, "inf")), r"'precip' has 1 infinite", read=read_weather),
        Fault("agriculture", "duplicate dates", _table(wea, "weather.csv", lambda f: pd.concat([f, f.iloc[[5]]])), r"duplicate", read=read_weather),
        Fault("agriculture", "ambiguous dates (every day <= 12)", _table(wea, "weather.csv", _ambiguous_dates),
              r"read both day-first and month-first.*set data.date_format", read=read_weather),
        Fault("agriculture", "text target", _table(wea, "weather.csv", _set("tmax", 12, "warm")), r"non-numeric|tmax", read=read_weather),
        Fault("agriculture", "kelvin target", _table(wea, "weather.csv", lambda f: f.assign(tmax=f["tmax"] + 273.15)), r"valid_range|outside|units", read=read_weather),
        Fault("agriculture", "gap in dates", _table(wea, "weather.csv", lambda f: f.drop(index=range(20, 30))), r"gap|missing", read=read_weather),
        Fault("agriculture", "unsorted rows", _table(wea, "weather.csv", lambda f: f.sample(frac=1.0, random_state=0)), None, read=read_weather),
        *_common("agriculture_yield", yld, "yield.csv"),
        Fault("agriculture", "yield inf", _table(yld, "yield.csv", _set("yield", 3, "inf")), r"infinite", read=read_yield, preset="agriculture_yield"),
        Fault("agriculture", "yield duplicate region-year", _table(yld, "yield.csv", lambda f: pd.concat([f, f.iloc[[2]]])),
              r"duplicated region-year", read=read_yield, preset="agriculture_yield"),
        Fault("agriculture", "yield fractional year", _table(yld, "yield.csv", _set("year", 3, 2001.5)), r"integer years",
              read=read_yield, preset="agriculture_yield"),
        Fault("healthcare", "manifest ../ traversal", _manifest_edit(lambda f: _set("path", 1, "../../../../etc/passwd")(f)),
              r"row 3 column 'path' names '\.\./\.\./\.\./\.\./etc/passwd', which resolves outside the manifest's folder", read=read_healthcare),
        Fault("healthcare", "manifest absolute path outside", _manifest_edit(lambda f: _set("path", 0, "/etc/hostname")(f)),
              r"row 2 column 'path' names '/etc/hostname', which resolves outside", read=read_healthcare),
        Fault("healthcare", "manifest absolute path inside", _manifest_edit(lambda f, d=None: f, absolute=True), None, read=read_healthcare),
        Fault("healthcare", "manifest label 2", _manifest_edit(_set("label", 2, 2)), r"must be 0 \(normal\) or 1", read=read_healthcare),
        Fault("healthcare", "manifest missing path column", _manifest_edit(lambda f: f.drop(columns=["path"])), r"missing column", read=read_healthcare),
        Fault("healthcare", "manifest empty", _bytes("manifest.csv", b""), r"not a readable CSV|empty", read=read_healthcare),
        Fault("healthcare", "manifest header only", _bytes("manifest.csv", b"path,label\n"), r"empty", read=read_healthcare),
        Fault("healthcare", "manifest names a missing image", _manifest_edit(_set("path", 0, "nope.png")), r"nope\.png", read=read_healthcare),
        Fault("healthcare", "image of random bytes", _corrupt_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), r"img0\.png: cannot read", read=read_healthcare),
        Fault("healthcare", "truncated image", _corrupt_image(None), r"img0\.png", read=read_healthcare),
        Fault("healthcare", "NaN in a .npy image", _npy_image(np.nan), r"NaN/inf", read=read_healthcare),
        Fault("healthcare", "manifest folder for a file", _folder("manifest.csv"), r"is a folder, expected a file",
              ("data.layout=manifest",), read=lambda p: read_healthcare_layout(p, "manifest")),
        Fault("healthcare", "folder without train/good", _folder("images"), r"expected a train/good/ folder", read=read_healthcare),
        Fault("healthcare", "missing manifest", _missing("manifest.csv"), r"no such file", read=read_healthcare,
              reader_expect=r"no such file|not a readable CSV"),
    ]
    return faults


def _ambiguous_dates(frame: pd.DataFrame) -> pd.DataFrame:
    dates = pd.to_datetime(frame["date"])
    return frame[dates.dt.day <= 12].assign(date=dates[dates.dt.day <= 12].dt.strftime("%d/%m/%Y"))


def read_healthcare_layout(path: Path, layout: str) -> Any:
    from sectorkit.domains.healthcare.readers import read_splits

    return read_splits(path, layout=layout)


def _manifest_edit(edit: Callable[[pd.DataFrame], pd.DataFrame], absolute: bool = False) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = healthcare_manifest(folder / "images")
        frame = pd.read_csv(path)
        if absolute:
            frame["path"] = [str(path.parent / p) for p in frame["path"]]
        edit(frame).to_csv(path, index=False)
        return path

    return make


def _corrupt_image(data: bytes | None) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = healthcare_manifest(folder / "images")
        image = path.parent / "img0.png"
        image.write_bytes(data if data is not None else image.read_bytes()[:30])
        return path

    return make


def _npy_image(value: float) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = healthcare_manifest(folder / "images")
        array = np.random.default_rng(0).normal(100, 10, (16, 16)).astype(np.float32)
        array[3, 3] = value
        np.save(path.parent / "odd.npy", array)
        frame = pd.read_csv(path)
        frame.loc[0, "path"] = "odd.npy"
        frame.to_csv(path, index=False)
        return path

    return make


def faults_of(domain: str) -> list[Fault]:
    return [f for f in catalogue() if f.domain == domain]


# --- crafted checkpoints ----------------------------------------------------------------------------------
# each domain's default data module: the ``data._target_`` a crafted checkpoint's run record names
DATA_TARGETS = {"finance": "sectorkit.domains.finance.data.FraudDataModule", "retail": "sectorkit.domains.retail.data.RetailDataModule",
                "agriculture": "sectorkit.domains.agriculture.weather.data.WeatherDataModule",
                "healthcare": "sectorkit.domains.healthcare.data.HealthcareDataModule"}


class _Payload:
    """Unpickled, it would run a shell command: what a checkpoint must never be allowed to do."""

    def __reduce__(self):
        import os

        return (os.system, ("echo never",))


def payload_checkpoint(path: Path) -> Path:
    """A checkpoint at ``path`` whose unpickling would call ``os.system``."""
    import torch

    torch.save({"state_dict": {}, "payload": _Payload()}, path)
    return path


def hold_lock(folder: Path, seconds: int = 600) -> subprocess.Popen:
    """A process holding ``folder``'s run lock until killed or ``seconds`` pass: the lock protocol of
    core/run_lock.py (flock on ``<run>/.lock`` holding the owner's pid), without importing torch."""
    code = ("import fcntl, os, sys, time\nhandle = open(os.path.join(sys.argv[1], '.lock'), 'a+')\n"
            "fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB); handle.write(str(os.getpid())); handle.flush()\n"
            f"print('claimed', flush=True); time.sleep({seconds})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    if proc.stdout is None or proc.stdout.readline().strip() != "claimed":
        proc.kill()
        proc.wait()
        raise AssertionError(f"the lock holder did not claim {folder}")
    return proc


# --- outputs ----------------------------------------------------------------------------------------------
def half_written(root: Path) -> list[str]:
    """Outputs under ``root`` that do not parse: metrics.json, predictions tables, checkpoints; and temporary
    files an atomic write left behind."""
    import torch

    bad = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            if path.name.endswith(".tmp"):
                bad.append(f"{path}: a temporary file left behind")
            elif path.name == "metrics.json":
                json.loads(path.read_text())
            elif path.name.startswith("predictions") and path.suffix == ".csv":
                pd.read_csv(path)
            elif path.suffix == ".parquet" and "predictions" in path.name:
                pd.read_parquet(path)
            elif path.suffix == ".ckpt":
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any parse failure is a half-written output
            bad.append(f"{path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    return bad


def one_line_error(stderr: str) -> str | None:
    """The ``sectorkit: error: ...`` line when ``stderr`` holds exactly that and no traceback; else None."""
    if "Traceback" in stderr:
        return None
    lines = [line for line in stderr.splitlines() if line.startswith("sectorkit: error: ")]
    return lines[-1] if len(lines) == 1 else None


def run_cli(argv: list[str], root: Path) -> tuple[int, str]:
    """``sectorkit.core.cli.main(argv)`` in this process with ``SECTORKIT_ROOT=root``: the status and stderr."""
    import contextlib
    import os

    from sectorkit.core.cli import main

    saved = os.environ.get("SECTORKIT_ROOT")
    os.environ["SECTORKIT_ROOT"] = str(root)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as exit_:  # Hydra exits 1 after printing a traceback
                status = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        if saved is None:
            os.environ.pop("SECTORKIT_ROOT", None)
        else:
            os.environ["SECTORKIT_ROOT"] = saved
    return status, err.getvalue()
