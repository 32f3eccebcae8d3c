"""Agriculture at scale: thousands of synthetic stations for one global model, windows gathered a batch at a time
from the per-series arrays, and per-rank shares of a station table.

Windows are never materialised: the panel holds each series' days once and a window is its origin row (see
:mod:`sectorkit.domains.agriculture.weather.windows`); :func:`gather_windows` slices a whole batch of origins with
one fancy index instead of one Python call per window, which is what the per-item ``WindowDataset`` costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch

from sectorkit.core.sharding import parquet_files, shard_items
from sectorkit.domains.agriculture.sample import synthetic_weather
from sectorkit.domains.agriculture.weather.windows import Panel


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


def read_series_shard(source: str | Path, rank: int, world_size: int, id_column: str = "series_id") -> pd.DataFrame:
    """The whole series of ``rank`` among ``world_size``: the sorted series ids cut into contiguous blocks
    (:func:`sectorkit.core.sharding.shard_items`); only the id column is read to find them, then only their rows."""
    dataset = ds.dataset([str(p) for p in parquet_files(source)], format="parquet")
    ids = np.unique(dataset.to_table(columns=[id_column]).column(id_column).to_numpy(zero_copy_only=False))
    mine = ids[list(shard_items(len(ids), rank, world_size))]
    return dataset.to_table(filter=ds.field(id_column).isin(pa.array(mine))).to_pandas()


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
