"""Weather data sharded by series across ranks (data.shard_by_rank): disjoint, complete shares that add up to the
one-process data, statistics every rank shares, equal training steps per rank; ranks simulated in one process,
and two real gloo processes (slow)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.domains.agriculture import scale
from sectorkit.domains.agriculture.weather import data as weather_data
from sectorkit.domains.agriculture.weather.baselines import ridge_ar_scaled_weights
from sectorkit.domains.agriculture.weather.data import RankShareSampler, WeatherDataModule
from sectorkit.domains.agriculture.weather.module import WeatherForecaster

SETTINGS = {"lookback": 28, "horizon": 7, "split": [0.6, 0.2], "batch_size": 64}
NET = {"_target_": "sectorkit.domains.agriculture.models.dlinear.DLinear"}


def stations(tmp_path, n_series: int = 13, n_days: int = 300):
    """``n_series`` stations in files of 5 (row groups of whole stations), so shares cut across files."""
    return scale.synthetic_stations_to_parquet(tmp_path / "stations", n_series=n_series, n_days=n_days, seed=3, series_per_chunk=5)


def module_of_rank(monkeypatch, folder, rank: int, world: int, **kwargs) -> WeatherDataModule:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    dm = WeatherDataModule(path=str(folder), shard_by_rank=True, **{**SETTINGS, **kwargs})
    dm.setup("fit")
    return dm


def rows_by_key(dm: WeatherDataModule) -> dict[tuple[str, np.datetime64], np.ndarray]:
    """Each panel row (scaled inputs and raw target) keyed by (series, date)."""
    names = np.asarray(dm.stats.series)[dm.panel.series_index]
    return {(s, d): np.append(p, t) for s, d, p, t in zip(names, dm.panel.dates, dm.panel.past, dm.panel.target)}


def stage_keys(dm: WeatherDataModule, stage: str) -> list[tuple[str, np.datetime64]]:
    origins = dm.origins[stage]
    return list(zip(np.asarray(dm.stats.series)[dm.panel.series_index[origins]], dm.panel.dates[origins]))


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_hold_disjoint_complete_shares_equal_to_one_process(tmp_path, monkeypatch, world):
    folder = stations(tmp_path)
    full = WeatherDataModule(path=str(folder), **SETTINGS)
    full.setup("fit")
    ranks = [module_of_rank(monkeypatch, folder, r, world) for r in range(world)]
    # whole series per rank, disjoint, together every series; each rank read only its own series' rows
    series = [set(np.asarray(dm.stats.series)[np.unique(dm.panel.series_index)]) for dm in ranks]
    assert all(a.isdisjoint(b) for i, a in enumerate(series) for b in series[i + 1:])
    assert set().union(*series) == set(full.stats.series) and max(map(len, series)) - min(map(len, series)) <= 1
    assert sum(len(dm.panel.target) for dm in ranks) == len(full.panel.target)
    # the union of the shares is the one-process panel, row for row (scaled with the same statistics)
    expected, got = rows_by_key(full), {}
    for dm in ranks:
        got.update(rows_by_key(dm))
    assert got.keys() == expected.keys()
    np.testing.assert_allclose(np.stack([got[k] for k in expected]), np.stack(list(expected.values())), rtol=1e-6, atol=1e-6)
    # every rank holds the statistics of every series, the one-process ones, in the same order
    for dm in ranks:
        assert dm.stats.series == full.stats.series
        for name in ("loc", "scale", "clim", "mase_scale"):
            np.testing.assert_allclose(getattr(dm.stats, name), getattr(full.stats, name), rtol=1e-12, err_msg=name)
        assert dm.model_kwargs()["n_series"] == len(full.stats.series)
    # windows: each stage's windows split exactly across the ranks
    for stage in ("train", "val", "test"):
        keys = [k for dm in ranks for k in stage_keys(dm, stage)]
        assert sorted(keys) == sorted(stage_keys(full, stage)) and len(set(keys)) == len(keys)
    # the ridge reference of every series, fitted once, equals the one-process fit
    reference = ridge_ar_scaled_weights(full.panel, full.origins["train"], full.horizon)
    for dm in ranks:
        np.testing.assert_allclose(dm.training_state()["reference_weights"], reference, rtol=1e-9, atol=1e-9)


def test_every_rank_runs_the_same_number_of_steps(tmp_path, monkeypatch):
    folder = stations(tmp_path)
    ranks = [module_of_rank(monkeypatch, folder, r, 2) for r in range(2)]
    counts = [len(dm.origins["train"]) for dm in ranks]
    assert ranks[0].shard["train_windows"] == counts and counts[0] != counts[1]  # 7 + 6 series of equal length
    loaders = [dm.train_dataloader() for dm in ranks]
    assert all(isinstance(loader.sampler, RankShareSampler) for loader in loaders)
    assert len(loaders[0]) == len(loaders[1]) == -(-max(counts) // SETTINGS["batch_size"])
    # the shorter rank repeats its own windows from the start, never another rank's
    drawn = [int(i) for i in loaders[1].sampler]
    assert len(drawn) == max(counts) and set(drawn) == set(range(counts[1]))
    loaders[1].sampler.set_epoch(1)
    assert [int(i) for i in loaders[1].sampler] != drawn  # reshuffled each epoch
    # evaluation: each window once, in order
    val = ranks[1].val_dataloader().sampler
    assert [int(i) for i in val] == list(range(len(ranks[1].origins["val"])))


def test_shared_statistics_file_is_checked_and_waited_for(tmp_path, monkeypatch):
    folder = stations(tmp_path, n_series=4, n_days=200)
    dm = module_of_rank(monkeypatch, folder, 0, 2)
    written = dm.stats_file()
    assert written.is_file() and written.parent == folder and written.name.startswith(".series_stats-")
    # other settings: another file, never the stale one; an explicit file made with other settings is an error
    other = WeatherDataModule(path=str(folder), shard_by_rank=True, **{**SETTINGS, "horizon": 5})
    assert other.stats_file() != written
    other = WeatherDataModule(path=str(folder), shard_by_rank=True, stats_path=str(written), **{**SETTINGS, "horizon": 5})
    with pytest.raises(DataError, match="horizon=7"):
        other.setup("fit")
    # a rank that is not its node's first process waits for the file, then says which file it waited for
    monkeypatch.setattr(weather_data, "STATS_WAIT_S", 0.0)
    with pytest.raises(DataError, match="missing.npz: the series statistics did not appear"):
        module_of_rank(monkeypatch, folder, 1, 2, stats_path=str(tmp_path / "missing.npz"))
    csv = tmp_path / "table.csv"
    csv.write_text("series_id,date,tmax,tmin,precip\n")
    with pytest.raises(ConfigError, match="reads Parquet"):
        WeatherDataModule(path=str(csv), shard_by_rank=True, **SETTINGS).setup("fit")
    with pytest.raises(DataError, match="4 series for 5 ranks"):
        module_of_rank(monkeypatch, folder, 0, 5)


def _worker(rank: int, world: int, port: int, folder: str, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(key, None)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dm = WeatherDataModule(path=folder, shard_by_rank=True, **SETTINGS)
        dm.setup("fit")  # rank from the process group; rank 0 writes the statistics, rank 1 waits for them
        torch.manual_seed(0)
        model = WeatherForecaster(net=NET, **dm.model_kwargs(), reference="ridge_ar")
        model.prepare_fit(dm.training_state())
        with torch.no_grad():  # as in the validation loop
            parts = [model.validation_outputs(batch) for batch in dm.val_dataloader()]
        model.calibrate({k: torch.cat([p[k] for p in parts]) for k in parts[0]})  # gathers every rank's windows
        mine = {"series": sorted(set(np.asarray(dm.stats.series)[dm.panel.series_index].tolist())),
                "train_batches": len(dm.train_dataloader()), "rows": len(dm.panel.target),
                "calibration": model.calibration.numpy(), "band_weight": model.band_weight.numpy(),
                "reference": model.reference.weight.numpy()}
        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            torch.save(gathered, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~20 s: two interpreters importing torch and Lightning
def test_two_gloo_processes_hold_disjoint_series_and_shared_state(tmp_path, free_port):
    folder = stations(tmp_path)
    out = str(tmp_path / "gathered.pt")
    mp.spawn(_worker, args=(2, free_port, str(folder), out), nprocs=2, join=True)
    gathered = torch.load(out, weights_only=False)
    full = WeatherDataModule(path=str(folder), **SETTINGS)
    full.setup("fit")
    a, b = (set(g["series"]) for g in gathered)
    assert a.isdisjoint(b) and a | b == set(full.stats.series)
    assert gathered[0]["rows"] + gathered[1]["rows"] == len(full.panel.target)
    assert gathered[0]["train_batches"] == gathered[1]["train_batches"]
    # per-series state fitted from every rank's share is the same on both ranks and equals the one-process fit
    torch.manual_seed(0)
    model = WeatherForecaster(net=NET, **full.model_kwargs(), reference="ridge_ar")
    model.prepare_fit(full.training_state())
    with torch.no_grad():
        parts = [model.validation_outputs(batch) for batch in full.val_dataloader()]
    model.calibrate({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
    for g in gathered:
        np.testing.assert_allclose(g["reference"], model.reference.weight.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g["calibration"], model.calibration.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(g["band_weight"], model.band_weight.numpy())
