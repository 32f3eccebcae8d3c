"""Per-rank shares of a Parquet table: disjoint, complete, and read by two real gloo processes."""

from __future__ import annotations

import os
import socket

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.sharding import distributed_rank, read_shard, row_groups, shard_items, shard_row_groups


def write_table(folder, n_rows: int = 1_000, n_files: int = 3, row_group_size: int = 70) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(np.array_split(np.arange(n_rows), n_files)):
        frame = pd.DataFrame({"id": rows, "value": rows * 0.5})
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"part-{i}.parquet", row_group_size=row_group_size)


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_shares_are_disjoint_and_complete(tmp_path, world):
    write_table(tmp_path / "t")
    shares = [read_shard(tmp_path / "t", rank, world) for rank in range(world)]
    ids = np.concatenate([s["id"].to_numpy() for s in shares])
    assert len(ids) == 1_000 and len(np.unique(ids)) == 1_000  # no row twice, none missing
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 70  # within one row group of each other
    assert all((np.diff(s["id"].to_numpy()) > 0).all() for s in shares)  # table order kept


def test_more_ranks_than_row_groups_and_bad_ranks(tmp_path):
    write_table(tmp_path / "t", n_rows=10, n_files=1, row_group_size=10)
    assert len(row_groups(tmp_path / "t")) == 1
    assert len(read_shard(tmp_path / "t", 0, 2)) == 10
    empty = read_shard(tmp_path / "t", 1, 2, columns=["id"])
    assert empty.empty and list(empty.columns) == ["id"]
    with pytest.raises(ConfigError, match="rank 2 of world size 2"):
        shard_row_groups([], 2, 2)
    with pytest.raises(DataError, match="no such file"):
        read_shard(tmp_path / "missing", 0, 1)
    blocks = [shard_items(10, r, 3) for r in range(3)]
    assert [len(b) for b in blocks] == [4, 3, 3] and sorted(i for b in blocks for i in b) == list(range(10))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, folder: str, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        assert distributed_rank() == (rank, world)
        share = read_shard(folder)  # rank and world size from the process group
        gathered: list = [None] * world
        dist.all_gather_object(gathered, share["id"].tolist())
        if rank == 0:
            pd.Series([len(g) for g in gathered]).to_json(out + ".sizes")
            np.save(out, np.concatenate([np.asarray(g, dtype=np.int64) for g in gathered]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~15 s: two interpreters importing torch
def test_two_gloo_processes_read_disjoint_complete_shares(tmp_path):
    write_table(tmp_path / "t")
    out = str(tmp_path / "ids.npy")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "t"), out), nprocs=2, join=True)
    ids = np.load(out)
    sizes = pd.read_json(out + ".sizes", typ="series").tolist()
    assert len(sizes) == 2 and all(s > 0 for s in sizes)
    assert sorted(ids.tolist()) == list(range(1_000))


def test_rank_from_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    assert distributed_rank() == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed_rank() == (3, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed_rank() == (1, 2)
