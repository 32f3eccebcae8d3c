"""Finance at scale: the transaction simulator written to Parquet a day range at a time, and the window features
computed out-of-core, so neither ever holds the whole table.

**Chunked simulator** (:func:`simulate_to_parquet`). Customer and terminal profiles (and which terminals each
customer can reach) are drawn exactly as in :func:`sample.simulate` with the same seed; transactions are then drawn
day by day from a generator seeded by ``(seed, day)``, so the table does not depend on how many days a file
holds. The compromised terminals and cards of each day are drawn up front (a few per day). It is *statistically the
same* as the in-memory simulator, not identical: scenario 3 marks each transaction of a compromised card in its
window with probability ``customer_fraud_share`` (the in-memory one picks exactly that share of each day's group),
and the random streams are consumed in a different order.

**Out-of-core features** (:func:`build_features_out_of_core`), on pyarrow datasets. Every window feature depends
only on the rows of one card (card windows, card history) or one terminal (terminal windows and recency), so the
rows are hash-partitioned by card and by terminal into buckets on disk (a streaming pass over the table's record
batches), each bucket is computed with the same numpy kernels as the in-memory path
(:func:`features.build_features`), and the results are joined back by row id, one output file per input batch. Memory
is bounded by one batch plus one bucket, and the features equal the in-memory ones (ties in time are broken by
file order in both). Why pyarrow rather than DuckDB or Polars window functions: their ``RANGE`` frames count
every row with the same timestamp, the in-memory path counts only the earlier ones, so the two would differ on
ties; the partition-then-compute design needs no SQL and no new dependency (pyarrow is already required).

**The join costs the same per row at any size.** A bucket holds rows from the whole table, so a bucket's features
sorted by row id and cut into fixed-size row groups put the rows of one output batch into a row group that also
spans ``n_buckets`` other batches: filtering by row id then decodes about ``n_buckets`` times the batch from each
bucket (6.7 M rows read per 1 M joined at 100 M rows), and the join grows with the square of the table. Instead
each bucket's features are written with one row group per output batch (the rows of that batch's row-id range,
sorted by row id; a batch with no row in the bucket gets none), and the join reads exactly that row group from
every bucket file (:class:`_BatchGroups`): each feature row is decoded once, the per-batch overhead is one small
read per bucket file, and memory stays one batch plus one bucket. A sort-merge reading each bucket file once would
also be linear but keeps one open stream per bucket; writing one file per (bucket, batch) would be linear too but
leaves ``n_buckets x n_batches`` files (10 k at 100 M rows).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.sharding import parquet_files
from sectorkit.domains.finance.features import build_features, calendar_flags
from sectorkit.domains.finance.readers import ColumnSpec, to_canonical
from sectorkit.domains.finance.sample import (
    SECONDS_PER_DAY,
    SimulatorConfig,
    customer_profiles,
    draw_amounts_and_terminals,
    reachable_terminals,
    terminal_profiles,
)

ENGINES = ("auto", "pandas", "pyarrow")
AUTO_ROWS = 20_000_000  # data.engine=auto: the out-of-core path from this many transactions on
ROW_ID = "_row_id"
DONE = "_SUCCESS.json"


# --- chunked simulator --------------------------------------------------------------------------------------
def expected_rows(cfg: SimulatorConfig) -> int:
    """About how many transactions the simulator draws (2 a day per customer on average, ~97% kept)."""
    return int(cfg.n_customers * cfg.n_days * 2 * 0.97)


def _compromised(rng: np.random.Generator, n_days: int, n_items: int, per_day: int) -> np.ndarray:
    """``(n_days, k)`` distinct items drawn each day (k = min(per_day, n_items))."""
    k = min(per_day, n_items)
    if k <= 0:
        return np.zeros((n_days, 0), np.int64)
    return np.stack([rng.choice(n_items, k, replace=False) for _ in range(n_days)]).astype(np.int64)


def _day_transactions(cfg: SimulatorConfig, day: int, rate: np.ndarray, mean_amount: np.ndarray, indptr: np.ndarray,
                      terminal_idx: np.ndarray, comp_t: np.ndarray, comp_c: np.ndarray) -> pd.DataFrame:
    """One day's transactions with their fraud labels (columns of :func:`sample.simulate`, ids added later)."""
    rng = np.random.default_rng([cfg.seed, 1, day])
    counts = rng.poisson(rate)
    cust = np.repeat(np.arange(cfg.n_customers), counts)
    n = len(cust)
    seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, n)
    mean = mean_amount[cust]
    amount, terminal, keep = draw_amounts_and_terminals(rng, cust, seconds, mean, mean / 2, indptr, terminal_idx)
    cust, terminal, amount = cust[keep], terminal[keep], np.round(amount[keep], 2)
    tx_seconds = seconds[keep].astype(np.int64) + day * SECONDS_PER_DAY
    fraud = np.zeros(len(cust), np.int8)
    scenario = np.zeros(len(cust), np.int8)
    s1 = amount > cfg.amount_threshold
    fraud[s1], scenario[s1] = 1, 1
    # scenario 2: terminals compromised on a day in (day - terminal_days, day]
    active_t = np.unique(comp_t[max(day - cfg.terminal_days + 1, 0): day + 1])
    s2 = np.isin(terminal, active_t)
    fraud[s2], scenario[s2] = 1, 2
    # scenario 3: each event (card compromised on a day in (day - customer_days, day]) marks each of that card's
    # transactions today with probability customer_fraud_share; the amount is multiplied once per marking event
    events = comp_c[max(day - cfg.customer_days + 1, 0): day + 1].ravel()
    times = np.zeros(len(cust), np.int64)
    if len(events):
        event_cards, event_counts = np.unique(events, return_counts=True)
        where = np.searchsorted(event_cards, cust)
        hit = (where < len(event_cards)) & (event_cards[np.minimum(where, len(event_cards) - 1)] == cust)
        n_events = np.where(hit, event_counts[np.minimum(where, len(event_cards) - 1)], 0)
        times = rng.binomial(n_events, cfg.customer_fraud_share)
    amount = np.round(amount * cfg.customer_amount_factor ** times, 2)
    s3 = times > 0
    fraud[s3], scenario[s3] = 1, 3
    frame = pd.DataFrame({"TX_TIME_SECONDS": tx_seconds, "TX_TIME_DAYS": np.full(len(cust), day, np.int64), "CUSTOMER_ID": cust,
                          "TERMINAL_ID": terminal, "TX_AMOUNT": amount, "TX_FRAUD": fraud, "TX_FRAUD_SCENARIO": scenario})
    return frame.sort_values(["TX_TIME_SECONDS", "CUSTOMER_ID"], kind="stable", ignore_index=True)


def simulate_to_parquet(cfg: SimulatorConfig, out_dir: str | Path, days_per_file: int = 7, row_group_size: int = 1_000_000) -> Path:
    """Write the simulated table to ``out_dir/part-<first day>.parquet``, ``days_per_file`` days a file (rows in time
    order, transaction ids running across files); memory holds one file's rows. Returns ``out_dir``.

    A finished folder carries ``_SUCCESS.json`` with the settings and is reused; it is written under a private name and
    renamed when complete, so processes that build the same folder at once (the ranks of a job) never see half of one."""
    final = Path(out_dir).expanduser()
    if _finished(final, asdict(cfg)):
        return final
    out = _private(final)
    marker = out / DONE
    rng = np.random.default_rng(cfg.seed)
    customers = customer_profiles(cfg, rng)
    terminals = terminal_profiles(cfg, rng)
    indptr, terminal_idx = reachable_terminals(customers, terminals, cfg.radius)
    comp_t = _compromised(rng, cfg.n_days, cfg.n_terminals, cfg.n_compromised_terminals)
    comp_c = _compromised(rng, cfg.n_days, cfg.n_customers, cfg.n_compromised_customers)
    rate, mean_amount = customers["mean_nb_tx_per_day"].to_numpy(), customers["mean_amount"].to_numpy()
    start, next_id = pd.Timestamp(cfg.start_date), 0
    for first in range(0, cfg.n_days, max(int(days_per_file), 1)):
        days = range(first, min(first + max(int(days_per_file), 1), cfg.n_days))
        frame = pd.concat([_day_transactions(cfg, d, rate, mean_amount, indptr, terminal_idx, comp_t, comp_c) for d in days], ignore_index=True)
        frame.insert(0, "TRANSACTION_ID", np.arange(next_id, next_id + len(frame)))
        frame.insert(1, "TX_DATETIME", start + pd.to_timedelta(frame["TX_TIME_SECONDS"], unit="s"))
        next_id += len(frame)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / f"part-{first:05d}.parquet", row_group_size=row_group_size)
    marker.write_text(json.dumps({"config": asdict(cfg), "rows": next_id}))
    return _publish(out, final, asdict(cfg))


def _finished(folder: Path, config: Any) -> bool:
    marker = folder / DONE
    return marker.is_file() and json.loads(marker.read_text()).get("config") == config


def _private(final: Path) -> Path:
    """An empty folder beside ``final`` that only this process writes to."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, final: Path, config: Any) -> Path:
    """Rename the finished ``tmp`` to ``final``; when another process published the same result first, keep theirs."""
    if _finished(final, config):
        shutil.rmtree(tmp, ignore_errors=True)
        return final
    if final.exists():  # unfinished, or built with other settings
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:  # another process renamed its copy in between
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --- out-of-core features -----------------------------------------------------------------------------------
def table_rows(source: str | Path) -> int:
    """Rows of a Parquet file or folder, from the footers (a file that is not readable Parquet: DataError naming it)."""
    total = 0
    for path in parquet_files(source):
        try:
            total += pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    return total


def resolve_engine(engine: str, n_rows: int, threshold: int = AUTO_ROWS) -> str:
    """``data.engine``: ``pandas`` (in memory), ``pyarrow`` (out-of-core) or ``auto`` (out-of-core from ``threshold``
    rows on)."""
    if engine not in ENGINES:
        raise ConfigError(f"data.engine={engine!r}: expected one of {list(ENGINES)}")
    if engine == "auto":
        return "pyarrow" if n_rows >= threshold else "pandas"
    return engine


def _batches(files: Sequence[Path], columns: Sequence[str] | None, batch_rows: int):
    """The files' rows in order, ``batch_rows`` at a time across file boundaries (the last batch may be shorter)."""
    pending, held = [], 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
            pending.append(batch)
            held += batch.num_rows
            if held >= batch_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, batch_rows)
                rest = table.slice(batch_rows)
                pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


# intermediate files are read once: no compression, no dictionary pages (float columns rarely repeat)
SCRATCH = {"compression": "none", "use_dictionary": False}


class _BatchGroups:
    """Bucket feature files written with one row group per output batch, and the reads of the join: ``groups[path]``
    maps a batch's number to its row group in that file (absent when no row of the batch fell into the bucket)."""

    def __init__(self, starts: Sequence[int]) -> None:
        self.starts = np.asarray(starts, np.int64)  # first row id of each batch, increasing
        self.groups: dict[Path, dict[int, int]] = {}
        self.files: dict[Path, pq.ParquetFile] = {}

    def write(self, path: Path, table: pa.Table, row_ids: np.ndarray) -> None:
        """``table`` (rows sorted by ``row_ids``) as one row group per batch that has rows in it."""
        cuts = np.searchsorted(row_ids, self.starts, side="left")
        ends = np.append(cuts[1:], len(row_ids))
        groups: dict[int, int] = {}
        with pq.ParquetWriter(path, table.schema, **SCRATCH) as writer:
            for n, (lo, hi) in enumerate(zip(cuts.tolist(), ends.tolist())):
                if hi > lo:
                    writer.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)
                    groups[n] = len(groups)
        self.groups[path] = groups

    def read(self, n: int) -> list[pa.Table]:
        """Batch ``n``'s rows from every bucket file (each in row-id order; files kept open between batches)."""
        parts = []
        for path, groups in self.groups.items():
            if n in groups:
                if path not in self.files:
                    self.files[path] = pq.ParquetFile(path)
                parts.append(self.files[path].read_row_group(groups[n]))
        return parts

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
        self.files.clear()


def _bucket(values: np.ndarray, n_buckets: int) -> np.ndarray:
    return (pd.util.hash_array(np.asarray(values)) % np.uint64(n_buckets)).astype(np.int64)


def _source_columns(spec: ColumnSpec, with_label: bool) -> list[str]:
    return list(dict.fromkeys([*spec.required(with_label), *([spec.label] if spec.label else [])]))


def build_features_out_of_core(
    source: str | Path,
    out_dir: str | Path,
    spec: ColumnSpec,
    feature_cfg: dict[str, Any],
    with_label: bool = True,
    batch_rows: int = 1_000_000,
    bucket_rows: int = 2_000_000,
) -> Path:
    """The canonical frame of ``source`` (a Parquet file or folder) with its features, written to
    ``out_dir/features/part-<n>.parquet`` in the source's row order (the in-memory path's order when the source is
    in time order), ``batch_rows`` rows a file. Buckets hold about ``bucket_rows`` rows. Returns the features folder.

    Columns equal ``pd.concat([to_canonical(table), build_features(...)], axis=1)`` plus ``_row_id`` (the row's
    position in the source)."""
    files = parquet_files(source)
    out = Path(out_dir).expanduser()
    if out.exists():
        shutil.rmtree(out)
    for sub in ("base", "card", "terminal", "card_features", "terminal_features", "features"):
        (out / sub).mkdir(parents=True)
    cfg = dict(feature_cfg)
    n_rows = table_rows(source)
    n_buckets = max(1, math.ceil(n_rows / max(int(bucket_rows), 1)))
    first_time: pd.Timestamp | None = None  # the table's first transaction; its midnight is day 0, as in memory
    read_spec = replace(spec, numeric=[*spec.numeric, ROW_ID])
    columns = _source_columns(spec, with_label)
    card_on = bool(cfg.get("card_features", True)) and spec.card is not None
    terminal_on = bool(cfg.get("terminal_features", True)) and spec.terminal is not None
    writers: dict[tuple[str, int], pq.ParquetWriter] = {}

    def scatter(kind: str, frame: pd.DataFrame) -> None:
        """The rows grouped by bucket (a stable sort keeps their order), each group appended to its bucket's file."""
        codes = _bucket(frame[kind].to_numpy(), n_buckets)
        order = np.argsort(codes, kind="stable")
        table = pa.Table.from_pandas(frame.iloc[order], preserve_index=False)
        present, firsts = np.unique(codes[order], return_index=True)
        for b, lo, hi in zip(present.tolist(), firsts.tolist(), [*firsts[1:].tolist(), len(order)]):
            part = table.slice(lo, hi - lo)
            if (kind, b) not in writers:
                writers[kind, b] = pq.ParquetWriter(out / kind / f"bucket-{b:05d}.parquet", part.schema, **SCRATCH)
            writers[kind, b].write_table(part)

    # pass 1: canonical rows of each batch (validated, global day 0), scattered by card and by terminal
    offset, n_parts, starts = 0, 0, []
    for batch in _batches(files, columns, batch_rows):
        starts.append(offset)
        raw = batch.to_pandas()
        raw[ROW_ID] = np.arange(offset, offset + len(raw), dtype=np.int64)
        frame = to_canonical(raw, read_spec, f"{source} (rows {offset}..{offset + len(raw) - 1})", with_label=with_label)
        frame[ROW_ID] = frame[ROW_ID].to_numpy().astype(np.int64)
        frame = frame.sort_values(ROW_ID, ignore_index=True)
        low = pd.Timestamp(frame["datetime"].min())
        first_time = low if first_time is None or low < first_time else first_time
        # seconds since 1970 for the window kernels (they only use differences); rebased on day 0 in pass 3
        frame["seconds"] = ((frame["datetime"] - pd.Timestamp(0)) / pd.Timedelta(seconds=1)).to_numpy(np.float64)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / "base" / f"part-{n_parts:05d}.parquet", **SCRATCH)
        keep = [ROW_ID, "seconds", "amount"]
        if card_on:
            scatter("card", frame[[*keep, "card"]])
        if terminal_on:
            scatter("terminal", frame[[*keep, "terminal", *(["label"] if "label" in frame else [])]])
        offset += len(raw)
        n_parts += 1
    for writer in writers.values():
        writer.close()
    if n_parts == 0:
        raise DataError(f"{source}: the transaction table is empty")

    # pass 2: each bucket's window features with the in-memory kernels, rows sorted by row id
    only_card = {**cfg, "calendar": False, "terminal_features": False}
    only_terminal = {**cfg, "calendar": False, "card_features": False, "amount_ratios": False, "card_history": False}
    # (one row group per output batch: the join below reads each feature row once, see the module's docstring)
    joins = {"card": _BatchGroups(starts), "terminal": _BatchGroups(starts)}
    for kind, settings in (("card", only_card), ("terminal", only_terminal)):
        for path in sorted((out / kind).glob("*.parquet")):
            bucket = pq.read_table(path).to_pandas().sort_values(ROW_ID, ignore_index=True)
            feats = build_features(bucket, **settings)
            ids = bucket[ROW_ID].to_numpy()
            feats.insert(0, ROW_ID, ids)
            joins[kind].write(out / f"{kind}_features" / path.name, pa.Table.from_pandas(feats, preserve_index=False), ids)
            path.unlink()

    # pass 3: per batch, base rows + calendar flags + the bucket features of its row-id range
    # row groups of at most 1/256 of the table (>= 1024 rows): many of them, so per-rank shares come out even
    group_rows = max(1024, min(131_072, math.ceil(offset / 256)))
    for n in range(n_parts):
        base_path = out / "base" / f"part-{n:05d}.parquet"
        frame = pq.read_table(base_path).to_pandas()
        frame["seconds"] = ((frame["datetime"] - first_time.normalize()) / pd.Timedelta(seconds=1)).to_numpy(np.float64)
        frame["day"] = np.floor(frame["seconds"].to_numpy() / SECONDS_PER_DAY).astype(np.int64)
        ids = frame[ROW_ID].to_numpy()
        parts = [frame]
        if cfg.get("calendar", True):
            parts.append(pd.DataFrame(calendar_flags(frame["datetime"])))
        for kind, on in (("card", card_on), ("terminal", terminal_on)):
            if not on:
                continue
            pieces = joins[kind].read(n)
            if not pieces:
                raise DataError(f"{out}: features of rows {ids[0]}..{ids[-1]} are incomplete (a bucket file is missing)")
            got = pa.concat_tables(pieces).to_pandas()
            del pieces  # the Arrow copy is not needed past here (one batch's worth of memory)
            got = got.sort_values(ROW_ID, ignore_index=True)
            if len(got) != len(frame) or not np.array_equal(got[ROW_ID].to_numpy(), ids):
                raise DataError(f"{out}: features of rows {ids[0]}..{ids[-1]} are incomplete (a bucket file is missing)")
            parts.append(got.drop(columns=[ROW_ID]))
        whole = pd.concat(parts, axis=1)
        pq.write_table(pa.Table.from_pandas(whole, preserve_index=False), out / "features" / f"part-{n:05d}.parquet", row_group_size=group_rows,
                       use_dictionary=False)
        base_path.unlink()
    for join in joins.values():
        join.close()
    for sub in ("base", "card", "terminal", "card_features", "terminal_features"):
        shutil.rmtree(out / sub)
    (out / "features" / DONE).write_text(json.dumps({"rows": offset, "buckets": n_buckets}))
    return out / "features"


def feature_table_key(source: str | Path, spec: ColumnSpec, feature_cfg: dict[str, Any]) -> str:
    """A short stable hash naming a cached features folder (source, its size and mtime, column roles, settings)."""
    what = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in parquet_files(source)]
    settings = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in feature_cfg.items()}
    text = json.dumps([what, asdict(spec), settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_features(source: str | Path, cache_dir: Path, key: str, spec: ColumnSpec, feature_cfg: dict[str, Any],
                    with_label: bool = True) -> Path:
    """The features folder of ``source`` under ``cache_dir/finance_features_<key>``, computed out-of-core once."""
    folder = cache_dir / f"finance_features_{key}"
    if _finished(folder, key):
        return folder / "features"
    tmp = _private(folder)
    build_features_out_of_core(source, tmp, spec, feature_cfg, with_label=with_label)
    (tmp / DONE).write_text(json.dumps({"config": key}))
    return _publish(tmp, folder, key) / "features"
