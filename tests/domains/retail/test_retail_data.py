"""Readers, cleaning, splits and bad input for the retail domain."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import torch

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.domains.retail.data import RetailDataModule, prepare_interactions
from sectorkit.domains.retail.preprocess import handle_duplicates, k_core, to_implicit
from sectorkit.domains.retail.readers import read_interactions
from sectorkit.domains.retail.sample import generate_interactions
from sectorkit.domains.retail.metrics import activity_segments
from sectorkit.domains.retail.splits import leave_one_out_split, ratio_counts, ratio_split, recbole_split, temporal_split


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


def test_recbole_split_counts_match_a_hand_computed_case():
    # per-user counts of RecBole's _calcu_split_ids, worked out by hand for 8:1:1:
    # n=1: floor(0.1)=0 each, train keeps 1 (<= 1: no bump); n=2: test bumped, then train is 1 -> [1, 0, 1];
    # n=3: both bumped -> [1, 1, 1]; n=5 -> [3, 1, 1]; n=9 -> [7, 1, 1]; n=10: 0.1 * 10 = 1, no bump -> [8, 1, 1];
    # n=19: floor(1.9) = 1 -> [17, 1, 1]; n=20 -> [16, 2, 2]
    hand = {1: [1, 0, 0], 2: [1, 0, 1], 3: [1, 1, 1], 5: [3, 1, 1], 9: [7, 1, 1], 10: [8, 1, 1], 19: [17, 1, 1], 20: [16, 2, 2]}
    sizes = list(hand)
    frame = pd.DataFrame({"user": np.repeat(np.arange(len(sizes)), sizes), "item": np.arange(sum(sizes)),
                          "timestamp": np.arange(sum(sizes), dtype=float)})
    for order in ("random", "temporal"):
        labels = recbole_split(frame, [0.8, 0.1, 0.1], order, seed=2020)
        counts = {n: np.bincount(labels[frame["user"].to_numpy() == u], minlength=3).tolist() for u, n in enumerate(sizes)}
        assert counts == hand
    # unnormalised ratios 7:2:1 (RecBole divides by their sum): n=4 -> floor(0.8)=floor(0.4)=0, both bumped -> [2, 1, 1];
    # n=7 -> valid floor(1.4)=1, test 0.7 bumped -> [5, 1, 1]
    small = pd.DataFrame({"user": np.repeat([0, 1], [4, 7]), "item": np.arange(11), "timestamp": np.arange(11.0)})
    labels = recbole_split(small, [7, 2, 1], "temporal")
    assert np.bincount(labels[:4]).tolist() == [2, 1, 1] and np.bincount(labels[4:]).tolist() == [5, 1, 1]


def test_recbole_split_follows_recboles_ordering_rules():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 6, 60)
    frame = pd.DataFrame({"user": users, "item": np.arange(60), "timestamp": rng.integers(0, 20, 60).astype(float)})
    # RO: RecBole shuffles the whole table with torch.randperm right after torch.manual_seed(seed), then each
    # user's rows, in shuffled order, fill train, then validation, then test
    torch.manual_seed(7)
    shuffled = torch.randperm(len(frame)).numpy()
    expected = np.zeros(len(frame), dtype=int)
    for user in np.unique(users):
        rows = [r for r in shuffled if users[r] == user]
        train, valid, _ = ratio_counts(np.array([len(rows)]), [0.8, 0.1, 0.1])[0]
        expected[rows[train : train + valid]] = 1
        expected[rows[train + valid :]] = 2
    assert recbole_split(frame, [0.8, 0.1, 0.1], "random", seed=7).tolist() == expected.tolist()
    assert recbole_split(frame, [0.8, 0.1, 0.1], "random", seed=8).tolist() != expected.tolist()
    # TO: a stable sort by timestamp (ties keep row order), so every test row is as late as any train row
    labels = recbole_split(frame, [0.8, 0.1, 0.1], "temporal")
    for user in np.unique(users):
        mine = frame[users == user]
        assert mine["timestamp"][labels[users == user] == 2].min() >= mine["timestamp"][labels[users == user] == 0].max()
        tied = mine[mine["timestamp"] == mine["timestamp"].iloc[0]].index  # tied rows keep file order: labels never decrease
        assert (np.diff(labels[tied]) >= 0).all()


def test_recbole_split_through_the_datamodule_and_config():
    dm = RetailDataModule(sample={"n_users": 60, "n_items": 50}, split={"method": "recbole", "ratios": [0.8, 0.1, 0.1], "order": "random"}, seed=2020)
    dm.setup("fit")
    n = dm.lists["train"].lengths() + dm.lists["valid"].lengths() + dm.lists["test"].lengths()
    counts = ratio_counts(n, [0.8, 0.1, 0.1])
    assert (dm.lists["valid"].lengths() == counts[:, 1]).all() and (dm.lists["test"].lengths() == counts[:, 2]).all()
    frame = generate_interactions(n_users=60, n_items=50, seed=2020).assign(timestamp=np.nan)  # random order needs no time
    assert len(prepare_interactions(frame, split={"method": "recbole"}, seed=2020).test) > 0
    with pytest.raises(DataError, match="no timestamp"):
        prepare_interactions(frame, split={"method": "recbole", "order": "temporal"})


@pytest.mark.parametrize("content, message", [
    (b"user_id,item_id\nu1,i1\nu2,i\xe9\n", r"bad\.csv: not UTF-8 text \(line 3, byte 0xe9 at column 5\)"),
    (b"user_id,item_id\n\xff\xfe,i1\n", r"bad\.csv: not UTF-8 text \(line 2, byte 0xff at column 1\)"),
])
def test_non_utf8_ids_are_one_line_data_errors(tmp_path, content, message):
    file = tmp_path / "bad.csv"
    file.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        read_interactions(file)
    assert "\n" not in str(err.value)


def test_truncated_or_damaged_compressed_logs_are_one_line_data_errors(tmp_path):
    body = "user_id,item_id,rating\n" + "".join(f"u{i % 50},i{i % 37},4\n" for i in range(20_000))
    blob = gzip.compress(body.encode())
    whole = tmp_path / "log.csv.gz"
    whole.write_bytes(blob)
    assert len(read_interactions(whole)) == 20_000  # a .csv.gz is recognised and read
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"cut\.csv\.gz: the compressed file is truncated or damaged \(.*; it breaks off after line \d+\)") as err:
        read_interactions(cut)
    assert "\n" not in str(err.value)
    junk = tmp_path / "junk.inter.gz"
    junk.write_bytes(b"not gzip at all\n")
    with pytest.raises(DataError, match=r"junk\.inter\.gz: the compressed file is truncated or damaged"):
        read_interactions(junk)


def test_activity_segments_cut_at_quantiles_with_a_very_light_segment():
    activity = np.array([1, 3, 5, 6, 7, 8, 9, 10, 20, 30, 40, 50])
    segments = activity_segments(activity, very_light_max=5, quantiles=[0.5])
    # the 9 users above 5 have median 10: 6-10 (5 users) and 11+ (4 users)
    assert segments.names == ["very light", "Q1", "Q2"] and segments.ranges == ["0-5", "6-10", "11+"]
    assert segments.codes.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    heavy = activity_segments(np.array([20, 20, 20, 40]), very_light_max=5, quantiles=[0.25, 0.5])
    assert heavy.ranges == ["0-5", "6-20", "21+"] and heavy.codes.tolist() == [1, 1, 1, 2]  # empty very light stays; tied cuts merge
    with pytest.raises(ConfigError, match=r"data\.segments\.quantiles"):
        RetailDataModule(segments={"quantiles": [0.5, 1.5]})


def test_evaluated_users_mask_their_own_history_when_some_users_have_no_test_items():
    """A global temporal split leaves many users without test items: each batch row's history and exclusion list
    must be that row's user's known items, not those of the user whose code equals the row number."""
    dm = RetailDataModule(sample={"n_users": 60, "n_items": 50}, split={"method": "temporal"}, eval_batch_size=1000)
    dm.setup("fit")
    dataset = dm.eval_dataset("test")
    assert len(dataset.users) < dm.n_users  # some users have no test items
    batch = dataset[list(range(len(dataset.users)))]
    known = dm.known_history("test")
    for row, user in enumerate(batch["users"].tolist()):
        excluded = set(batch["exclude"][row].tolist()) - {-1}
        assert excluded == set(known.padded(np.array([user]), -1)[0].tolist()) - {-1}
