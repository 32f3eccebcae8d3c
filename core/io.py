"""File input and output: tables read with errors that name the file, and atomic writes (a crash never leaves a
half-written output behind)."""

from __future__ import annotations

import errno
import json
import lzma
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sectorkit.core.errors import ConfigError, DataError, SectorkitError

if TYPE_CHECKING:
    import numpy as np

DISK_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)  # a full or read-only disk: one line
TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", ".csv.zip", ".csv.bz2", ".txt")


def read_table(path: str | Path, expected: str = "table") -> pd.DataFrame:
    """Read a CSV (optionally compressed) or Parquet file; a missing, empty or unreadable file, a folder or an
    unknown suffix is a :class:`DataError` naming the file (``expected`` says what it should hold)."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file (one CSV or Parquet {expected})")
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a CSV or Parquet {expected})")
    if not name.endswith(TABLE_SUFFIXES):
        raise DataError(f"{path}: unsupported file type; expected .csv (optionally .gz/.zip/.bz2) or .parquet")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; expected a CSV or Parquet {expected}")
    try:
        frame = pd.read_parquet(path) if name.endswith((".parquet", ".pq")) else pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty; expected a CSV or Parquet {expected}") from exc
    except (pd.errors.ParserError, OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile, lzma.LZMAError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # a truncated .gz is an EOFError
        raise DataError(f"{path}: could not be read as a table ({detail})") from None
    if frame.empty:
        raise DataError(f"{path}: has a header but no rows")
    return frame


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, target)
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        raise SectorkitError(f"{target.parent}: cannot write {target.name} ({err.strerror or err}); the previous file, if any, "
                             "is kept") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_with(path: str | Path, writer: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return _write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN written as null)."""
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=False)
    return atomic_write_text(path, text + "\n")


def atomic_write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame atomically as CSV, or Parquet when the name ends in ``.parquet``."""
    if str(path).endswith(".parquet"):
        return _write_with(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return _write_with(path, lambda tmp: frame.to_csv(tmp, index=False))


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    try:
        return _write_with(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)


def _json_safe(obj: Any) -> Any:
    """Convert tensors, numpy scalars and NaN to JSON-friendly values."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_input(data: pd.DataFrame | str | Path | np.ndarray, folder: Path) -> Path:
    """``data`` as a path the domain's reader takes (predict here and the server's requests)."""
    import numpy as np

    if isinstance(data, (str, Path)):
        return Path(data).expanduser().resolve()
    if isinstance(data, pd.DataFrame):
        path = folder / "input.parquet"
        data.to_parquet(path, index=False)
        return path
    if isinstance(data, np.ndarray):
        if data.ndim not in (3, 4):
            raise DataError(f"image arrays must be (N, H, W) or (N, C, H, W), got shape {data.shape}")
        path = folder / "input.npz"
        np.savez_compressed(path, test_images=data, test_labels=np.zeros(len(data), dtype=np.int64))
        return path
    raise ConfigError(f"predict: expected a pandas DataFrame, a path or an image array, got {type(data).__name__}")
