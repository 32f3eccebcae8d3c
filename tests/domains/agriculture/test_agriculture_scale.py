"""Agriculture at scale: many synthetic stations, batch-gathered windows and per-rank series shares (small sizes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from sectorkit.domains.agriculture import scale
from sectorkit.domains.agriculture.weather.windows import WindowDataset, build_panel, fit_stats, stage_origins, train_end_rows


def test_many_stations_generator_in_memory_equals_parquet(tmp_path):
    frame = scale.synthetic_stations(n_series=120, n_days=400, seed=2, series_per_chunk=50)
    assert len(frame) == 120 * 400 and frame["series_id"].nunique() == 120
    assert frame["series_id"].iloc[0] == "station_00000" and frame["series_id"].iloc[-1] == "station_00119"
    per_series = frame.groupby("series_id")["tmax"].mean()
    assert per_series.std() > 1.0  # stations differ (not one block copied)
    again = scale.synthetic_stations(n_series=120, n_days=400, seed=2, series_per_chunk=50)
    pd.testing.assert_frame_equal(frame, again)
    folder = scale.synthetic_stations_to_parquet(tmp_path / "st", n_series=120, n_days=400, seed=2, series_per_chunk=50)
    assert len(list(folder.glob("*.parquet"))) == 3
    written = pd.read_parquet(folder)
    pd.testing.assert_frame_equal(written.reset_index(drop=True), frame, check_dtype=False)
    # two ranks: whole series each, disjoint, together all
    shares = [scale.read_series_shard(folder, rank, 2) for rank in (0, 1)]
    ids = [set(s["series_id"]) for s in shares]
    assert ids[0].isdisjoint(ids[1]) and ids[0] | ids[1] == set(frame["series_id"]) and abs(len(ids[0]) - len(ids[1])) <= 1
    assert sum(len(s) for s in shares) == len(frame)
    assert all((s.groupby("series_id").size() == 400).all() for s in shares)


def test_gathered_windows_equal_the_per_item_dataset():
    frame = scale.synthetic_stations(n_series=30, n_days=300, seed=0, series_per_chunk=30)
    lengths = frame.groupby("series_id", sort=False).size().to_numpy()
    cuts = train_end_rows(lengths, (0.6, 0.2))
    stats = fit_stats(frame, "tmax", ["tmin", "precip"], cuts[:, 0])
    panel = build_panel(frame, stats, "tmax", ["tmin", "precip"])
    origins = stage_origins(panel, 28, 7, cuts)
    # the index holds one integer per window, not the windows: memory is the panel plus 8 bytes a window
    assert origins["train"].dtype == np.int64 and len(origins["train"]) == sum(int(c) - 7 - 27 for c in cuts[:, 0])
    batch = np.random.default_rng(0).choice(origins["train"], 64, replace=False)
    got = scale.gather_windows(panel, batch, 28, 7)
    items = WindowDataset(panel, batch, 28, 7)
    for key in ("past", "future", "target", "loc", "scale", "mase_scale", "origin", "series"):
        expected = torch.stack([items[i][key] for i in range(len(batch))])
        torch.testing.assert_close(got[key], expected, msg=key)
    batches = scale.batched_origins(origins["train"], 100, seed=1)
    assert sorted(np.concatenate(batches).tolist()) == sorted(origins["train"].tolist())
