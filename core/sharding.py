"""Per-rank shares of a Parquet table, so a multi-node run never reads the whole table on every rank.

A table (one Parquet file or a folder of them) is cut into its row groups, listed in a fixed order (files sorted by
path, row groups in file order); row group ``i`` goes to rank ``i % world_size``. The shares are disjoint and their
union is the table, whatever the number of ranks, and each rank reads only its own row groups' bytes (pyarrow reads
a row group at a time). Round-robin over many row groups keeps the shares within one row group of each other;
writers that want even shares write row groups of a fixed size (``row_group_size`` of ``pyarrow.parquet.write_table``).
Evaluation loaders shard rows the same way without padding (:class:`ShardBatchSampler`), so metrics summed over the
ranks count every row once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import DistributedSampler

from sectorkit.core.errors import ConfigError, DataError


@dataclass(frozen=True)
class RowGroup:
    """One row group of one Parquet file and how many rows it holds."""

    path: str
    index: int
    rows: int


def distributed_rank() -> tuple[int, int]:
    """``(global_rank, world_size)`` of this process: torch.distributed when initialised, else the launcher's
    ``RANK``/``WORLD_SIZE`` (torchrun, Lightning) or SLURM's ``SLURM_PROCID``/``SLURM_NTASKS``, else ``(0, 1)``."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_key in os.environ and world_key in os.environ:
            return int(os.environ[rank_key]), int(os.environ[world_key])
    return 0, 1


def parquet_files(source: str | Path) -> list[Path]:
    """The Parquet files of ``source`` (a file, or every ``*.parquet`` below a folder), sorted by path."""
    source = Path(source).expanduser()
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.parquet") if p.is_file())
        if files:
            return files
        raise DataError(f"{source}: folder holds no .parquet files")
    raise DataError(f"{source}: no such file or folder")


def row_groups(source: str | Path) -> list[RowGroup]:
    """Every row group of ``source`` in the fixed order the shares are cut from (reads footers only)."""
    out = []
    for path in parquet_files(source):
        meta = pq.ParquetFile(path).metadata
        out += [RowGroup(str(path), i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    return out


def shard_row_groups(groups: Sequence[RowGroup], rank: int, world_size: int) -> list[RowGroup]:
    """The row groups of ``rank`` among ``world_size`` ranks: every ``world_size``-th one from ``rank`` on."""
    _check_rank(rank, world_size)
    return list(groups[rank::world_size])


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} of world size {world_size}: expected 0 <= rank < world_size and world_size >= 1")


def read_shard(
    source: str | Path, rank: int | None = None, world_size: int | None = None, columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The rows of ``source`` that belong to ``rank`` of ``world_size`` (default: this process's), as one frame in
    table order. Only this rank's row groups are read."""
    if rank is None or world_size is None:
        rank, world_size = distributed_rank()
    groups = row_groups(source)
    mine = shard_row_groups(groups, rank, world_size)
    tables = []
    by_file: dict[str, list[int]] = {}
    for g in mine:
        by_file.setdefault(g.path, []).append(g.index)
    for path, indices in by_file.items():
        tables.append(pq.ParquetFile(path).read_row_groups(indices, columns=list(columns) if columns else None))
    if not tables:  # more ranks than row groups: an empty frame with the table's columns
        schema = pq.read_schema(groups[0].path) if groups else pa.schema([])
        names = list(columns) if columns else schema.names
        return schema.empty_table().select(names).to_pandas() if groups else pd.DataFrame(columns=names)
    return pa.concat_tables(tables).to_pandas()


def shard_items(n_items: int, rank: int, world_size: int) -> range:
    """Indices ``0..n_items-1`` of ``rank``'s contiguous block (block sizes differ by at most one): for items that
    are not row groups, e.g. the series of a panel."""
    _check_rank(rank, world_size)
    base, extra = divmod(n_items, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class ShardBatchSampler(DistributedSampler):
    """Batches of ``batch_size`` consecutive indices of ``rank``'s contiguous block of ``0..n-1`` (:func:`shard_items`).

    For evaluation under DDP: the ranks' blocks are disjoint and together hold every index once (they may differ by
    one in size). ``DistributedSampler`` instead pads the ranks to equal shares by repeating indices, so metrics
    summed over ranks would count some rows twice. It subclasses ``DistributedSampler`` only so that Lightning
    keeps it rather than injecting its own sampler into the loader; it yields whole batches (``batch_size=None``
    loaders index a dataset once per batch).
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(range(n), num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
        self.block = shard_items(n, rank, world_size)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        stop = self.block.stop
        for start in range(self.block.start, stop, self.batch_size):
            yield list(range(start, min(start + self.batch_size, stop)))

    def __len__(self) -> int:
        return len(range(0, len(self.block), self.batch_size))


def evaluation_rank(trainer: Any) -> tuple[int, int]:
    """``(global_rank, world_size)`` for an evaluation loader a Lightning ``trainer`` asks for while it validates or
    tests (sanity check included) on several processes; ``(0, 1)`` otherwise, so a loader built outside the
    trainer's loops (a prediction table written on rank 0 after testing, say) covers every row."""
    if trainer is None or trainer.world_size <= 1 or not (trainer.validating or trainer.testing or trainer.sanity_checking):
        return 0, 1
    return trainer.global_rank, trainer.world_size
