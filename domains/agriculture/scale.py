"""Agriculture at scale: thousands of synthetic stations for one global model, windows gathered a batch at a time
from the per-series arrays, and per-rank shares of a station table.

Windows are never materialised: the panel holds each series' days once and a window is its origin row (see
:mod:`sectorkit.domains.agriculture.weather.windows`); :func:`gather_windows` slices a whole batch of origins with
one fancy index instead of one Python call per window, which is what the per-item ``WindowDataset`` costs.

Per-rank shares are whole series: the sorted ids cut into contiguous blocks (:func:`series_shard_ids`), each rank
reading only its block's rows (:func:`read_series_rows`); the per-series statistics every rank needs for every series
travel in one file (:func:`save_series_stats` / :func:`load_series_stats`), written by the weather data module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch

from sectorkit.core.errors import DataError
from sectorkit.core.io import atomic_path
from sectorkit.core.sharding import parquet_files, shard_items
from sectorkit.domains.agriculture.sample import synthetic_weather
from sectorkit.domains.agriculture.weather.windows import Panel, SeriesStats


def synthetic_stations(n_series: int = 5_000, n_days: int = 3 * 365, seed: int = 0, series_per_chunk: int = 500,
                       start: str = "2000-01-01") -> pd.DataFrame:
    """``n_series`` synthetic stations (the sample generator, :func:`sample.synthetic_weather`, run on blocks of
    ``series_per_chunk`` stations, block ``b`` seeded with ``(seed, b)``), ids ``station_00000``...; the same rows as
    :func:`synthetic_stations_to_parquet` writes."""
    return pd.concat(list(_station_chunks(n_series, n_days, seed, series_per_chunk, start)), ignore_index=True)


def _station_chunks(n_series: int, n_days: int, seed: int, series_per_chunk: int, start: str):
    width = max(5, len(str(n_series - 1)))
    for block, first in enumerate(range(0, n_series, series_per_chunk)):
        k = min(series_per_chunk, n_series - first)
        frame = synthetic_weather(n_series=k, n_days=n_days, start=start, seed=[seed, block])
        frame["series_id"] = np.repeat([f"station_{first + i:0{width}d}" for i in range(k)], n_days)
        yield frame


def synthetic_stations_to_parquet(out_dir: str | Path, n_series: int = 5_000, n_days: int = 3 * 365, seed: int = 0,
                                  series_per_chunk: int = 500, start: str = "2000-01-01") -> Path:
    """Write :func:`synthetic_stations` to ``out_dir/stations-<n>.parquet``, one block of stations a file (memory holds
    one block), each row group whole stations. Returns ``out_dir``."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for n, frame in enumerate(_station_chunks(n_series, n_days, seed, series_per_chunk, start)):
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / f"stations-{n:05d}.parquet", row_group_size=n_days * 50)
    return out


def series_dataset(source: str | Path) -> ds.Dataset:
    """The Parquet file or folder ``source`` as one pyarrow dataset (files in path order)."""
    return ds.dataset([str(p) for p in parquet_files(source)], format="parquet")


def series_ids(source: str | Path, id_column: str = "series_id") -> list:
    """The distinct series ids of ``source``, sorted: only the id column is read, a record batch at a time."""
    dataset = series_dataset(source)
    if id_column not in dataset.schema.names:
        raise DataError(f"{source}: no column {id_column!r} (data.id_column); a table sharded by series needs one")
    seen: set = set()
    for batch in dataset.to_batches(columns=[id_column]):
        seen.update(pc.unique(batch.column(0)).to_pylist())
    seen.discard(None)
    return sorted(seen, key=str)  # the validated table's order (ids as text)


def series_shard_ids(ids: Sequence, rank: int, world_size: int) -> list:
    """The ids of ``rank`` among ``world_size``: the sorted ids cut into contiguous blocks
    (:func:`sectorkit.core.sharding.shard_items`), disjoint and together all of them."""
    return [ids[i] for i in shard_items(len(ids), rank, world_size)]


def read_series_rows(source: str | Path, ids: Sequence, id_column: str = "series_id", columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of the series ``ids`` only (a pyarrow filter on the id column: row groups whose id statistics
    exclude them are skipped), with ``columns`` (default all), in file order."""
    dataset = series_dataset(source)
    names = None if columns is None else [c for c in dict.fromkeys([id_column, *columns]) if c in dataset.schema.names]
    return dataset.to_table(columns=names, filter=ds.field(id_column).isin(pa.array(list(ids)))).to_pandas()


def read_series_shard(source: str | Path, rank: int, world_size: int, id_column: str = "series_id",
                      columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The whole series of ``rank`` among ``world_size`` (:func:`series_shard_ids`); only the id column is read to
    find them, then only their rows."""
    return read_series_rows(source, series_shard_ids(series_ids(source, id_column), rank, world_size), id_column, columns)


# --- statistics every rank shares -----------------------------------------------------------------------------
STATS_ARRAYS = ("loc", "scale", "clim", "mase_scale", "present", "lengths", "reference_weights")


def merge_series_stats(pieces: Sequence[SeriesStats]) -> SeriesStats:
    """One :class:`SeriesStats` from the statistics of disjoint groups of series, in the order given."""
    return SeriesStats(
        [s for p in pieces for s in p.series],
        *(np.concatenate([getattr(p, k) for p in pieces]) for k in ("loc", "scale", "clim", "mase_scale")),
        present=np.concatenate([p.columns_present() for p in pieces]),
    )


def save_series_stats(path: str | Path, stats: SeriesStats, lengths: np.ndarray, reference_weights: np.ndarray, meta: dict[str, Any]) -> Path:
    """Write the statistics of every series (plus each series' rows and ridge reference weights) and the settings
    they were fitted with to ``path`` (``.npz``), atomically: a reader never sees half a file."""
    path = Path(path).expanduser()
    with atomic_path(path) as tmp, open(tmp, "wb") as file:  # a file object: np.savez would add ".npz" to a name
        np.savez(file, series=np.asarray([str(s) for s in stats.series]), loc=stats.loc, scale=stats.scale, clim=stats.clim,
                 mase_scale=stats.mase_scale, present=stats.columns_present(), lengths=np.asarray(lengths, dtype=np.int64),
                 reference_weights=reference_weights, meta=np.asarray(json.dumps(meta, sort_keys=True)))
    return path


def load_series_stats(path: str | Path, meta: dict[str, Any]) -> tuple[SeriesStats, np.ndarray, np.ndarray]:
    """``(stats, lengths, reference_weights)`` from a file :func:`save_series_stats` wrote with the same ``meta``
    (other settings or other data: DataError naming the file and the first setting that differs)."""
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("series", *STATS_ARRAYS, "meta")}
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: not a series statistics file ({err})") from None
    stored = json.loads(str(arrays["meta"]))
    wanted = json.loads(json.dumps(meta, sort_keys=True))
    differ = [k for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    if differ:
        raise DataError(f"{path}: the series statistics were computed with {differ[0]}={stored.get(differ[0])!r}, this run has "
                        f"{wanted.get(differ[0])!r}; delete the file (it is rebuilt) or point data.stats_path elsewhere")
    stats = SeriesStats([str(s) for s in arrays["series"]], arrays["loc"], arrays["scale"], arrays["clim"], arrays["mase_scale"],
                        present=arrays["present"].astype(bool))
    return stats, arrays["lengths"], arrays["reference_weights"]


def window_offsets(lookback: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets from an origin ``t``: the lookback rows ``t-L+1..t`` and the horizon rows ``t+1..t+H``."""
    return np.arange(-lookback + 1, 1), np.arange(1, horizon + 1)


def gather_windows(panel: Panel, origins: np.ndarray, lookback: int, horizon: int) -> dict[str, torch.Tensor]:
    """A batch of windows (the ``WindowDataset`` items, stacked) sliced at once from the panel's arrays."""
    past_rows, future_rows = window_offsets(lookback, horizon)
    origins = np.asarray(origins, dtype=np.int64)
    s = panel.series_index[origins]
    stats = panel.stats
    return {
        "past": torch.from_numpy(panel.past[origins[:, None] + past_rows]),
        "future": torch.from_numpy(panel.future[origins[:, None] + future_rows]),
        "target": torch.from_numpy(panel.target[origins[:, None] + future_rows].astype(np.float32)),
        "loc": torch.from_numpy(stats.loc[s, 0].astype(np.float32)),
        "scale": torch.from_numpy(stats.scale[s, 0].astype(np.float32)),
        "mase_scale": torch.from_numpy(stats.mase_scale[s].astype(np.float32)),
        "origin": torch.from_numpy(origins),
        "series": torch.from_numpy(s.astype(np.int64)),
    }


def batched_origins(origins: np.ndarray, batch_size: int, seed: int | None = 0) -> Sequence[np.ndarray]:
    """The origins cut into batches, shuffled once with ``seed`` (None: in order)."""
    order = np.random.default_rng(seed).permutation(len(origins)) if seed is not None else np.arange(len(origins))
    return [origins[order[i: i + batch_size]] for i in range(0, len(origins), batch_size)]
