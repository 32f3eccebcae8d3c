"""The out-of-core join: bucket features written one row group per output batch, each feature row read once, and
the joined features equal to the in-memory path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sectorkit.domains.finance import scale
from sectorkit.domains.finance.features import build_features
from sectorkit.domains.finance.readers import sample_spec, to_canonical
from sectorkit.domains.finance.sample import SimulatorConfig, simulate

SMALL = SimulatorConfig(n_customers=200, n_terminals=400, n_days=40, grid_size=20.0, seed=5)
FEATURES = {"windows": (1, 7, 30), "delay_days": 7, "amount_ratios": True, "card_history": True, "terminal_recency": True}


def test_batch_groups_read_each_row_once_in_its_batch(tmp_path):
    starts = [0, 100, 200, 300]  # four batches of 100 row ids
    rng = np.random.default_rng(0)
    join = scale._BatchGroups(starts)
    buckets = np.array_split(rng.permutation(400), 3)
    for b, rows in enumerate(buckets):
        ids = np.sort(np.setdiff1d(rows, np.arange(100, 200)) if b == 1 else rows)  # bucket 1 has no row in batch 1
        join.write(tmp_path / f"b{b}.parquet", pa.table({scale.ROW_ID: ids, "x": ids * 2.0}), ids)
    meta = pq.ParquetFile(tmp_path / "b1.parquet").metadata
    assert meta.num_row_groups == 3 and 1 not in join.groups[tmp_path / "b1.parquet"]
    seen = []
    for n, lo in enumerate(starts):
        pieces = join.read(n)
        assert len(pieces) == (2 if n == 1 else 3)
        for piece in pieces:
            got = piece.column(scale.ROW_ID).to_numpy()
            assert (got >= lo).all() and (got < lo + 100).all() and (np.diff(got) > 0).all()
            np.testing.assert_array_equal(piece.column("x").to_numpy(), got * 2.0)
            seen.append(got)
    join.close()
    seen = np.concatenate(seen)
    assert len(seen) == len(np.unique(seen))  # each row read once
    assert len(seen) == sum(len(r) for r in buckets) - np.isin(buckets[1], np.arange(100, 200)).sum()


def _in_memory(raw: pd.DataFrame) -> pd.DataFrame:
    frame = to_canonical(raw, sample_spec(), "sample")
    return pd.concat([frame, build_features(frame, **FEATURES)], axis=1)


def test_join_equals_in_memory_features_exactly_with_one_bucket(tmp_path):
    raw = simulate(SMALL)
    source = tmp_path / "source.parquet"
    pq.write_table(pa.Table.from_pandas(raw, preserve_index=False), source)
    expected = _in_memory(raw)
    # one bucket (the in-memory kernels see the same rows, so every float equals), many uneven batches
    batch = len(raw) // 7 + 13
    folder = scale.build_features_out_of_core(source, tmp_path / "oc", sample_spec(), FEATURES, batch_rows=batch, bucket_rows=10**9)
    files = sorted(folder.glob("*.parquet"))
    assert len(files) == -(-len(raw) // batch)
    got = pd.read_parquet(folder)
    np.testing.assert_array_equal(got.pop(scale.ROW_ID).to_numpy(), np.arange(len(raw)))
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_join_with_many_buckets_and_batches_matches_in_memory(tmp_path):
    raw = simulate(SMALL)
    source = tmp_path / "source.parquet"
    pq.write_table(pa.Table.from_pandas(raw, preserve_index=False), source)
    expected = _in_memory(raw)
    # more buckets than batches and batches cutting every bucket: rows of one batch come from every bucket file
    folder = scale.build_features_out_of_core(source, tmp_path / "oc", sample_spec(), FEATURES, batch_rows=3_001, bucket_rows=1_500)
    got = pd.read_parquet(folder)
    # the same buckets joined in one batch (every row group of every bucket file read at once): exactly equal
    whole = pd.read_parquet(scale.build_features_out_of_core(source, tmp_path / "one", sample_spec(), FEATURES,
                                                             batch_rows=len(raw), bucket_rows=1_500))
    pd.testing.assert_frame_equal(got, whole, check_exact=True)
    np.testing.assert_array_equal(got.pop(scale.ROW_ID).to_numpy(), np.arange(len(raw)))
    assert list(got.columns) == list(expected.columns)
    # against the in-memory path: counts, ids, times and labels exactly; window sums are accumulated per bucket
    # instead of over the whole table, so their floats differ in the last digits
    loose = ("card_hist_std_amount", "card_amount_hist_zscore")
    for column in expected.columns:
        a, b = expected[column].to_numpy(), got[column].to_numpy()
        if "nb_tx" in column or a.dtype.kind != "f":
            np.testing.assert_array_equal(b, a, err_msg=column)
        else:
            tol = {"rtol": 1e-6, "atol": 1e-3} if column in loose else {"rtol": 1e-7, "atol": 1e-9}
            np.testing.assert_allclose(b, a, equal_nan=True, err_msg=column, **tol)
