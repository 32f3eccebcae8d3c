"""Readers, cleaning, splits and bad input for the retail domain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.domains.retail.data import RetailDataModule, prepare_interactions
from sectorkit.domains.retail.preprocess import handle_duplicates, k_core, to_implicit
from sectorkit.domains.retail.readers import read_interactions
from sectorkit.domains.retail.sample import generate_interactions
from sectorkit.domains.retail.splits import leave_one_out_split, ratio_counts, ratio_split, temporal_split


def _recbole_counts(tot: int, ratios: list[float]) -> list[int]:
    cnt = [int(ratios[i] * tot) for i in range(len(ratios))]
    cnt[0] = tot - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * tot < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


def test_readers_give_the_same_frame_for_every_layout(tmp_path):
    rows = pd.DataFrame({"u": ["1", "2", "1"], "i": ["10", "20", "30"], "r": [4, 5, 3], "t": [100, 200, 300]})
    (tmp_path / "u.data").write_text("\n".join("\t".join(map(str, r)) for r in rows.itertuples(index=False)) + "\n")
    rows.rename(columns={"u": "userId", "i": "movieId", "r": "rating", "t": "timestamp"}).to_csv(tmp_path / "ratings.csv", index=False)
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (tmp_path / "x.inter").write_text(header + "\n".join("\t".join(map(str, r)) for r in rows.itertuples(index=False)) + "\n")
    rows.to_parquet(tmp_path / "x.parquet")
    frames = [
        read_interactions(tmp_path / "u.data"),
        read_interactions(tmp_path / "ratings.csv"),
        read_interactions(tmp_path / "x.inter"),
        read_interactions(tmp_path / "x.parquet", user_column="u", item_column="i", rating_column="r", timestamp_column="t"),
    ]
    for frame in frames:
        assert frame["user"].tolist() == ["1", "2", "1"] and frame["item"].tolist() == ["10", "20", "30"]
        assert frame["rating"].tolist() == [4.0, 5.0, 3.0] and frame["timestamp"].tolist() == [100.0, 200.0, 300.0]


def test_string_ids_and_missing_rating_column(tmp_path):
    file = tmp_path / "log.csv"
    pd.DataFrame({"customer": ["alice", "bob"], "sku": ["A-1", "B 2"]}).to_csv(file, index=False)
    frame = read_interactions(file, user_column="customer", item_column="sku")
    assert frame["user"].tolist() == ["alice", "bob"] and frame["item"].tolist() == ["A-1", "B 2"]
    assert frame["rating"].eq(1.0).all() and frame["timestamp"].isna().all()


@pytest.mark.parametrize(
    "content, message",
    [("", "empty"), ("user_id,item_id\n", "no interactions"), ("a,b\n1,2\n", "no user column 'user_id'"), ("user_id,item_id,rating\n1,2,x\n", "non-numeric")],
)
def test_bad_files_raise_data_errors(tmp_path, content, message):
    file = tmp_path / "bad.csv"
    file.write_text(content)
    with pytest.raises(DataError, match=message):
        read_interactions(file)


def test_duplicates_policies_and_missing_timestamps():
    frame = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "x", "y"], "rating": [1.0, 5.0, 3.0], "timestamp": [1.0, 2.0, np.nan]})
    assert handle_duplicates(frame, "last")["rating"].tolist() == [5.0, 3.0]
    assert handle_duplicates(frame, "first")["rating"].tolist() == [1.0, 3.0]
    with pytest.raises(DataError, match="repeat a \\(user, item\\) pair"):
        handle_duplicates(frame, "error")
    with pytest.raises(DataError, match="no timestamp"):
        prepare_interactions(frame, split={"method": "leave_one_out"})
    with pytest.raises(ConfigError, match="data.duplicates"):
        handle_duplicates(frame, "sometimes")


def test_implicit_threshold_and_k_core():
    frame = generate_interactions(n_users=60, n_items=50, seed=1)
    implicit = to_implicit(frame, 4.0)
    assert len(implicit) == int((frame["rating"] >= 4).sum()) and implicit["rating"].eq(1).all()
    core = k_core(implicit, 5, 5)
    assert core.groupby("user").size().min() >= 5 and core.groupby("item").size().min() >= 5
    with pytest.raises(DataError, match="removed every interaction"):
        k_core(implicit, 10_000, 0)


def test_generator_is_deterministic_with_long_tail():
    a, b = generate_interactions(n_users=80, n_items=60, seed=3), generate_interactions(n_users=80, n_items=60, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate_interactions(n_users=80, n_items=60, seed=4))

    def head_share(frame: pd.DataFrame) -> float:
        counts = frame["item"].value_counts().to_numpy()
        return counts[: len(counts) // 10].sum() / counts.sum()

    sparse_log = generate_interactions(n_users=100, n_items=200, mean_length=10, seed=3)
    assert head_share(sparse_log) > 0.18  # the top 10% of items take far more than 10% of interactions
    steeper = generate_interactions(n_users=100, n_items=200, mean_length=10, seed=3, popularity_exponent=1.5)
    assert head_share(steeper) > head_share(sparse_log) + 0.1
    assert not a.duplicated(["user", "item"]).any()


def test_ratio_split_matches_recbole_counts_and_orders():
    n = np.arange(1, 200)
    assert (ratio_counts(n, [0.8, 0.1, 0.1]) == np.array([_recbole_counts(t, [0.8, 0.1, 0.1]) for t in n])).all()
    frame = pd.DataFrame({"user": np.repeat([0, 1], [20, 3]), "item": np.arange(23), "timestamp": np.r_[np.arange(20)[::-1], [5, 6, 7]].astype(float)})
    labels = ratio_split(frame, order="temporal")
    assert np.bincount(labels[:20]).tolist() == [16, 2, 2]
    assert frame["timestamp"][:20][labels[:20] == 2].min() > frame["timestamp"][:20][labels[:20] == 0].max()
    assert labels[20:].tolist() == [0, 1, 2]  # 3 interactions: one each (RecBole rule)
    random_labels = ratio_split(frame, order="random", seed=1)
    assert np.bincount(random_labels[:20]).tolist() == [16, 2, 2]


def test_leave_one_out_and_global_temporal():
    frame = pd.DataFrame({"user": [0, 0, 0, 0, 1, 1], "item": [1, 2, 3, 4, 1, 2], "timestamp": [4.0, 3, 2, 1, 1, 2]})
    assert leave_one_out_split(frame).tolist() == [2, 1, 0, 0, 0, 0]  # single-history user trains only
    labels = temporal_split(pd.DataFrame({"user": 0, "item": range(10), "timestamp": np.arange(10.0)}))
    assert labels.tolist() == [0] * 8 + [1, 2]


def test_datamodule_masks_and_id_state_round_trip(tmp_path):
    dm = RetailDataModule(sample={"n_users": 60, "n_items": 50}, eval_batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))
    user = int(batch["users"][0])
    seen = set(batch["exclude"][0][batch["exclude"][0] >= 0].tolist())
    expected = set(dm.lists["train_valid"].items[dm.lists["train_valid"].indptr[user] : dm.lists["train_valid"].indptr[user + 1]].tolist())
    assert seen == expected and not seen & set(batch["targets"][0].tolist())
    state = dm.state_dict()
    assert isinstance(state["user_ids"], list) and isinstance(state["user_ids"][0], str)
    restored = RetailDataModule(path=None)
    restored.load_state_dict(state)
    assert restored.item_ids == dm.item_ids and restored.n_users == dm.n_users


def test_single_interaction_users_only_train():
    frame = pd.DataFrame({"user": ["a"] * 10 + ["solo"], "item": [str(i) for i in range(11)], "rating": 1.0, "timestamp": np.arange(11.0)})
    prepared = prepare_interactions(frame)
    solo = prepared.user_ids.index("solo")
    assert solo in prepared.train["user"].tolist() and solo not in prepared.test["user"].tolist()
    with pytest.raises(DataError, match="no test interactions"):
        prepare_interactions(frame[frame["user"] == "solo"])


def test_datamodule_reads_udata_with_threshold_and_k_core(tmp_path):
    frame = generate_interactions(n_users=80, n_items=60, seed=2)
    file = tmp_path / "u.data"
    frame.assign(user=frame["user"].str[1:], item=frame["item"].str[1:]).to_csv(file, sep="\t", header=False, index=False)
    dm = RetailDataModule(path=str(file), rating_threshold=4, min_user_interactions=3, min_item_interactions=3)
    dm.setup("fit")
    kept = to_implicit(frame, 4.0)
    assert dm.n_items <= kept["item"].nunique() and all(not u.startswith("u") for u in dm.user_ids)
    total = sum(len(dm.lists[s].items) for s in ("train", "valid", "test"))
    assert total == len(k_core(kept, 3, 3))
