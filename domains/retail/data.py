"""Interaction data pipeline: read → clean → implicit → k-core → id maps → split → padded user batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.export import ExportGraph
from sectorkit.core.network import Network
from sectorkit.core.progress import phase
from sectorkit.core.sharding import ShardBatchSampler, evaluation_rank
from sectorkit.domains.retail.export import RawUserRecommender, integer_ids
from sectorkit.domains.retail.interactions import UserLists, sequence_windows
from sectorkit.domains.retail.metrics import Segments, activity_segments, check_quantiles
from sectorkit.domains.retail.models.base import recommender_network
from sectorkit.domains.retail.preprocess import build_id_map, encode, handle_duplicates, handle_missing_timestamps, k_core, to_implicit
from sectorkit.domains.retail.readers import read_interactions, standardise_rows
from sectorkit.domains.retail.sample import generate_interactions
from sectorkit.domains.retail.splits import make_split
from sectorkit.domains.retail.cold_start import CandidateBatches
from sectorkit.domains.retail.text import ItemSide, build_item_side


@dataclass
class PreparedData:
    """An encoded, split interaction log and its id maps."""

    user_ids: list[str]
    item_ids: list[str]
    train: pd.DataFrame  # columns user, item, timestamp (int indices)
    valid: pd.DataFrame
    test: pd.DataFrame

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def lists(self, name: str) -> UserLists:
        """Per-user item lists of a split (``train``, ``valid``, ``test``) or of ``train_valid`` (both, merged in
        time order; a tie puts the training item first)."""
        frame = pd.concat([self.train, self.valid], ignore_index=True) if name == "train_valid" else getattr(self, name)
        return UserLists.build(frame["user"].to_numpy(), frame["item"].to_numpy(), frame["timestamp"].to_numpy(), self.n_users)


def prepare_interactions(
    frame: pd.DataFrame,
    source: str = "interactions",
    rating_threshold: float | None = None,
    duplicates: str = "last",
    missing_timestamps: str = "auto",
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
    split: dict[str, Any] | None = None,
    seed: int = 0,
) -> PreparedData:
    """Clean a standard ``user, item, rating, timestamp`` frame, map ids to 0..n-1 and split it."""
    split = dict(split or {})
    method, order = split.get("method", "ratio"), split.get("order", "random")
    ratios = list(split.get("ratios", (0.8, 0.1, 0.1)))
    if missing_timestamps == "auto":
        needs_time = method not in ("ratio", "recbole", "cold_items") or order == "temporal"
        missing_timestamps = "error" if needs_time else "row_order"
    frame = handle_missing_timestamps(frame, missing_timestamps, source)
    frame = handle_duplicates(frame, duplicates, source)
    frame = to_implicit(frame, rating_threshold)
    frame = k_core(frame, min_user_interactions, min_item_interactions)
    user_ids, item_ids = build_id_map(frame["user"]), build_id_map(frame["item"])
    encoded = pd.DataFrame(
        {"user": encode(frame["user"], user_ids), "item": encode(frame["item"], item_ids), "timestamp": frame["timestamp"].to_numpy(dtype="float64")}
    )
    labels = make_split(encoded, method, ratios, order, seed)
    parts = [encoded[labels == i].reset_index(drop=True) for i in range(3)]
    if parts[2].empty:
        raise DataError(f"{source}: the {method} split left no test interactions; every user has too few interactions (fewer than 3)")
    return PreparedData(user_ids, item_ids, *parts)


class PairDataset(Dataset):
    """Training (user, item) pairs, indexed by whole batches of positions (no per-row Python work)."""

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        self.users, self.items = torch.as_tensor(users), torch.as_tensor(items)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index)
        return {"users": self.users[index], "items": self.items[index]}


class TensorDictDataset(Dataset):
    """Rows of a dict of equally long tensors, indexed by whole batches."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index)
        return {k: v[index] for k, v in self.tensors.items()}


class UserBatchDataset(Dataset):
    """Evaluation/prediction users; a batch holds padded history, items to exclude and (if any) targets."""

    def __init__(self, users: np.ndarray, history: UserLists, exclude: UserLists, targets: UserLists | None, n_items: int, max_seq_len: int) -> None:
        self.users, self.history, self.exclude, self.targets = np.asarray(users), history, exclude, targets
        self.n_items, self.max_seq_len = n_items, max_seq_len

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: list[int]) -> dict[str, torch.Tensor]:
        rows = np.arange(len(self.users))[np.asarray(index)]
        users = self.users[rows]
        batch = {
            "users": torch.from_numpy(users.astype(np.int64)),
            "history": torch.from_numpy(self.history.padded(rows, self.n_items, self.max_seq_len, right_align=True)),
            "exclude": torch.from_numpy(self.exclude.padded(rows, -1)),
        }
        if self.targets is not None:
            batch["targets"] = torch.from_numpy(self.targets.padded(rows, -1))
        return batch


def batch_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """A loader that indexes the dataset once per batch (vectorised) instead of once per row."""
    base = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=None, sampler=BatchSampler(base, batch_size, drop_last=False), num_workers=0)


class RetailDataModule(SectorDataModule):
    """Interaction logs (or the synthetic sample) for full-ranking recommendation.

    The training batches follow the network's ``input_type``: (user, item) pairs for ``pairwise`` and
    ``pointwise`` networks, one row per user for ``user_vector`` networks, next-item windows of the last
    ``max_seq_len`` items for ``sequence`` networks. The known history of an evaluated user
    (:meth:`known_history`) is their training items at validation and their training + validation items at
    test: it is masked, it is the ``history`` a network reads (all of it for ``history_input='full'``, the last
    ``max_seq_len`` items otherwise) and the seen rows the baselines score from. The id maps and training
    interactions are saved in checkpoints (as tensors/lists) for ``predict``.
    """

    def __init__(
        self,
        path: str | None = None,
        format: str = "auto",
        user_column: str = "user_id",
        item_column: str = "item_id",
        rating_column: str | None = "rating",
        timestamp_column: str | None = "timestamp",
        separator: str | None = None,
        rating_threshold: float | None = None,
        duplicates: str = "last",
        missing_timestamps: str = "auto",
        min_user_interactions: int = 0,
        min_item_interactions: int = 0,
        split: dict[str, Any] | None = None,
        segments: dict[str, Any] | None = None,
        sample: dict[str, Any] | None = None,
        items_path: str | None = None,
        item_id_column: str = "item_id",
        item_text_columns: Sequence[str] = ("title", "genre"),
        item_genre_column: str | None = "genre",
        text_model: str = "sentence-transformers/all-MiniLM-L6-v2",
        text_max_length: int = 64,
        text_batch_size: int = 64,
        max_seq_len: int = 50,
        top_k: int = 10,
        batch_size: int = 2048,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int = 0,
        cache_dir: str | None = None,
        network: type[Network] | None = None,
    ) -> None:
        super().__init__(path, batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed, cache_dir,
                         network=recommender_network(network) if network is not None else None)
        self.reader_kwargs = dict(format=format, user_column=user_column, item_column=item_column, rating_column=rating_column, timestamp_column=timestamp_column, separator=separator)
        self.clean_kwargs = dict(rating_threshold=rating_threshold, duplicates=duplicates, missing_timestamps=missing_timestamps, min_user_interactions=min_user_interactions, min_item_interactions=min_item_interactions)
        self.split_cfg = dict(split or {"method": "ratio", "ratios": [0.8, 0.1, 0.1], "order": "random"})
        self.sample_cfg = dict(sample or {})
        self.segments_cfg = {"very_light_max": 5, "quantiles": [0.25, 0.5, 0.75], **dict(segments or {})}
        check_quantiles(self.segments_cfg["quantiles"])
        self.max_seq_len, self.top_k = max_seq_len, top_k
        self.item_side_cfg = dict(items_path=items_path, item_id_column=item_id_column, text_columns=list(item_text_columns), genre_column=item_genre_column,
                                  text_model=text_model, text_max_length=text_max_length, text_batch_size=text_batch_size)
        self.prepared: PreparedData | None = None
        self.user_ids: list[str] = []
        self.item_ids: list[str] = []
        self.train_users = torch.zeros(0, dtype=torch.long)
        self.train_items = torch.zeros(0, dtype=torch.long)
        self.train_times = torch.zeros(0, dtype=torch.float64)

    # --- loading -------------------------------------------------------------------------------
    def load_frame(self) -> tuple[pd.DataFrame, str]:
        """The raw standard frame and a name for messages."""
        if self.path is None:
            with phase("generating the interaction sample"):
                return generate_interactions(**{"seed": self.seed, **self.sample_cfg}), "built-in sample"
        path = self.require_path()
        return read_interactions(path, **self.reader_kwargs), str(path)

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            return
        if self.prepared is None:
            frame, source = self.load_frame()
            self.prepared = prepare_interactions(frame, source, split=self.split_cfg, seed=self.seed, **self.clean_kwargs)
            p = self.prepared
            self.user_ids, self.item_ids = p.user_ids, p.item_ids
            self.train_users = torch.from_numpy(p.train["user"].to_numpy().copy())
            self.train_items = torch.from_numpy(p.train["item"].to_numpy().copy())
            self.train_times = torch.from_numpy(p.train["timestamp"].to_numpy().copy())
            self.lists = {name: p.lists(name) for name in ("train", "valid", "test")}
            self.lists["train_valid"] = p.lists("train_valid")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def model_kwargs(self) -> dict[str, Any]:
        """Catalogue sizes, the number of training interactions and the history length of sequence batches (and
        the size of the item text vectors for networks that read item text)."""
        text = {"item_text_dim": int(self.item_side.text.shape[1])} if self.uses_item_text else {}
        return {"n_users": self.n_users, "n_items": self.n_items, "n_train": int(len(self.train_users)), "max_seq_len": self.max_seq_len, **text}

    def training_state(self) -> dict[str, Any]:
        """The training interactions (time-ordered per user) the model keeps for negatives, graphs and popularity
        (and the items' text vectors for networks that read item text)."""
        text = {"item_text": self.item_side.text} if self.uses_item_text else {}
        return {"users": self.train_users, "items": self.train_items, **text}

    @property
    def uses_item_text(self) -> bool:
        return bool(self.network is not None and getattr(self.network, "uses_item_text", False))

    @cached_property
    def item_side(self) -> ItemSide:
        """The items' text vectors and genres (``data.items_path``, or the built-in sample's generated item
        table), computed on first use (after ``setup``)."""
        return build_item_side(self.item_ids, cache_dir=self.cache_dir, interactions_given=self.path is not None,
                               sample=self.sample_cfg, seed=self.seed, **self.item_side_cfg)

    def cold_candidates(self, stage: str) -> np.ndarray | None:
        """With ``data.split.method=cold_items``: the items held out for ``stage`` (the only ones ranked there)."""
        if self.split_cfg.get("method") != "cold_items" or self.prepared is None:
            return None
        return np.unique(getattr(self.prepared, stage)["item"].to_numpy())

    # --- loaders -------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Training batches in the layout of the network's ``input_type``."""
        if self.network is None:
            raise ConfigError("no network given: training batches follow the network's input_type (pass network=<RecommenderNetwork class>)")
        if self.network.input_type == "sequence":
            windows = sequence_windows(self.lists["train"], self.max_seq_len, self.n_items)
            return batch_loader(TensorDictDataset(windows), self.batch_size, True, self.seed)
        if self.network.input_type == "user_vector":  # one row per user with training items: an epoch is one pass over users
            users = torch.from_numpy(np.flatnonzero(self.lists["train"].lengths() > 0))
            return batch_loader(TensorDictDataset({"users": users}), self.batch_size, True, self.seed)
        return batch_loader(PairDataset(self.train_users.numpy(), self.train_items.numpy()), self.batch_size, True, self.seed)

    def data_summary(self) -> dict[str, Any]:
        """Users, items, interactions and density after cleaning; per split its interactions, users and items, and
        its first and last timestamp (as UTC dates when they read as Unix seconds; ``row_order`` ones are row numbers)."""
        if self.prepared is None:
            return super().data_summary()
        splits = {}
        for name in ("train", "valid", "test"):
            part = getattr(self.prepared, name)
            facts: dict[str, Any] = {"interactions": len(part), "users": int(part["user"].nunique()), "items": int(part["item"].nunique())}
            times = part["timestamp"].dropna()
            if len(times):
                unix = times.min() >= 1e8  # after 1973 as Unix seconds
                first, last = (str(pd.Timestamp(t, unit="s").date()) if unix else f"{t:g}" for t in (times.min(), times.max()))
                facts.update({"first timestamp": first, "last timestamp": last})
            splits[name] = facts
        total = sum(len(getattr(self.prepared, name)) for name in ("train", "valid", "test"))
        facts = {"users": self.n_users, "items": self.n_items, "interactions": total,
                 "density": f"{total / max(self.n_users * self.n_items, 1):.2%}",
                 "split": f"{self.split_cfg.get('method', 'ratio')} ({self.split_cfg.get('order', 'random')} order)"}
        return {"source": str(self.path) if self.path else "built-in sample", "facts": facts, "splits": splits}

    def known_history(self, stage: str) -> UserLists:
        """Every user's known items when ``stage`` ('valid' or 'test') is evaluated, in time order: the training
        items at validation, the training then validation items at test. The model's mask and ``history`` and
        the baselines' seen rows all come from here."""
        if stage not in ("valid", "test"):
            raise ValueError(f"stage {stage!r}: expected 'valid' or 'test'")
        return self.lists["train"] if stage == "valid" else self.lists["train_valid"]

    def history_length(self) -> int | None:
        """How many of the latest known items a batch's ``history`` holds: all of them (None) for networks that
        read the whole history (``history_input='full'``), else ``max_seq_len``."""
        return None if self.network is not None and self.network.history_input == "full" else self.max_seq_len

    def eval_dataset(self, stage: str) -> UserBatchDataset:
        """Users with at least one ``stage`` ('valid' or 'test') item, with their known history (masked, and the
        network's ``history``) and their ``stage`` items as targets; with the ``cold_items`` split, every item
        but the ones held out for ``stage`` is excluded too (``CandidateBatches``)."""
        targets = self.lists[stage]
        seen = self.known_history(stage)
        users = np.flatnonzero(targets.lengths() > 0)
        known = _reindex(seen, users)  # the dataset's lists are by row (its users' order), not by user code
        dataset = UserBatchDataset(users, known, known, _reindex(targets, users), self.n_items, self.history_length())
        candidates = self.cold_candidates(stage)
        return dataset if candidates is None else CandidateBatches(dataset, candidates, self.n_items)

    def test_segments(self) -> Segments:
        """The test users (in the order of the test loader) grouped by activity, their number of training
        interactions (``data.segments``)."""
        activity = self.lists["train"].lengths()[self.eval_dataset("test").users]
        return activity_segments(activity, int(self.segments_cfg["very_light_max"]), list(self.segments_cfg["quantiles"]))

    def eval_loader(self, stage: str) -> DataLoader:
        """Batches of the ``stage`` users in order. While a trainer on several processes validates or tests, each
        rank gets its contiguous block of the users only (``ShardBatchSampler``: disjoint, together complete, no
        padded duplicates); the ranking metrics sum their per-user values and user counts over the ranks and
        divide once, so a DDP evaluation gives exactly the one-process metrics."""
        dataset = self.eval_dataset(stage)
        rank, world_size = evaluation_rank(self.trainer)
        if len(dataset) < world_size:  # a rank without users would skip the loop and leave the others waiting
            raise DataError(f"{self.path or 'built-in sample'}: {len(dataset)} users to evaluate on the {stage} split for {world_size} "
                            "processes; each process needs at least one (use fewer trainer.devices)")
        return DataLoader(dataset, batch_size=None, sampler=ShardBatchSampler(len(dataset), self.eval_batch_size, rank, world_size), num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader("test")

    # --- prediction ----------------------------------------------------------------------------
    def training_lists(self) -> UserLists:
        """Each known user's training items in time order, from the training interactions the checkpoint holds."""
        return UserLists.build(self.train_users.numpy(), self.train_items.numpy(), self.train_times.numpy(), self.n_users)

    @cached_property
    def predict_dataset(self) -> tuple[UserBatchDataset, list[str]]:
        """Users to recommend for, with their names: those in ``data.path`` (a user column, optional item column)
        or all known users (read once)."""
        if not self.item_ids:
            raise DataError("no id maps: predict needs a checkpoint written by training (ckpt_path=...)")
        if self.path is None:
            known = self.training_lists()
            users = np.arange(self.n_users)
            lists = _reindex(known, users)
            return UserBatchDataset(users, lists, lists, None, self.n_items, self.history_length()), list(self.user_ids)
        return self.users_dataset(read_predict_users(lambda **kwargs: read_interactions(self.require_path(), **kwargs), self.reader_kwargs))

    def setup_predict(self, rows: pd.DataFrame, source: str = "request") -> None:
        """Users to recommend for from rows held in memory (a user column, optional item column, as in ``data.path``):
        what a Parquet file of those rows gives."""
        if not self.item_ids:
            raise DataError("no id maps: predict needs a checkpoint written by training (ckpt_path=...)")
        self.predict_dataset = self.users_dataset(read_predict_users(lambda **kwargs: standardise_rows(rows, source, **kwargs), self.reader_kwargs))

    def users_dataset(self, frame: pd.DataFrame) -> tuple[UserBatchDataset, list[str]]:
        """The predict batches of the standard frame ``frame`` (its users; its known items are excluded and extend each
        user's history) and the users' names."""
        known = self.training_lists()
        names = pd.unique(frame["user"]).tolist()
        codes = encode(pd.Series(names), self.user_ids)
        row_of = pd.Index(names).get_indexer(frame["user"])
        item_codes = encode(frame["item"], self.item_ids) if "item" in frame else np.full(len(frame), -1)
        keep = item_codes >= 0
        extra = UserLists.build(row_of[keep], item_codes[keep], frame["timestamp"].to_numpy()[keep] if "timestamp" in frame else np.arange(keep.sum()), len(names))
        seen = UserLists.concat(_reindex(known, codes), extra)
        return UserBatchDataset(codes, seen, seen, None, self.n_items, self.history_length()), names

    def predict_dataloader(self) -> DataLoader:
        return batch_loader(self.predict_dataset[0], self.eval_batch_size, False, self.seed)

    def predict_frame(self, outputs: Sequence[Any], stage: str) -> pd.DataFrame:
        """Long table: user, rank, item, score, source (model or popularity fallback); on the test split also
        the user's number of training interactions and activity segment (``data.segments``)."""
        items = torch.cat([o["items"] for o in outputs]).numpy()
        scores = torch.cat([o["scores"] for o in outputs]).numpy()
        fallback = torch.cat([o["fallback"] for o in outputs]).numpy()
        names = self.predict_dataset[1] if stage == "predict" else [self.user_ids[u] for u in self.eval_dataset("test").users]
        k = items.shape[1]
        item_names = np.asarray(self.item_ids, dtype=object)
        valid = np.isfinite(scores).ravel()
        table = {
            "user": np.repeat(np.asarray(names, dtype=object), k)[valid],
            "rank": np.tile(np.arange(1, k + 1), len(names))[valid],
            "item": item_names[items.ravel()][valid],
            "score": scores.ravel()[valid],
            "source": np.repeat(np.where(fallback, "popularity", "model"), k)[valid],
        }
        if stage != "predict":
            segments = self.test_segments()
            table["train_interactions"] = np.repeat(segments.activity, k)[valid]
            table["segment"] = np.repeat(np.asarray(segments.names, dtype=object)[segments.codes], k)[valid]
        return pd.DataFrame(table)

    def export_contract(self) -> dict[str, Any]:
        """The exported graph's input: the users, as raw integer ids when every training id is an integer, else as
        positions in the exported ``user_ids``; the id lookup, each known user's history and excluded items (the
        training interactions, in the graph), the popularity fallback and the top-K with the item ids are inside it."""
        k = min(self.top_k, self.n_items)
        raw_users, raw_items = integer_ids(self.user_ids) is not None, integer_ids(self.item_ids) is not None
        fallback = "an id not seen in training gets the popularity fallback (from_popularity)"
        users = ({"user_ids": {"dtype": "int64", "shape": ["batch"], "preprocessing": f"none: the raw user ids as the file holds them; {fallback}"}}
                 if raw_users else
                 {"users": {"dtype": "int64", "shape": ["batch"], "preprocessing": "the user's position in user_ids (the ids are not all "
                                                                                   f"integers, so the caller maps them); -1 for an unknown user: {fallback}"}})
        items = "raw item ids" if raw_items else "positions in item_ids (the ids are not all integers)"
        return {
            **users,
            "outputs": {"items": f"(batch, {k}) int64: the top {k} items per user, best first, as {items}",
                        "scores": f"(batch, {k}) float32: their scores; -inf past the items left to recommend (drop those ranks)",
                        "from_popularity": "(batch,) bool: the user got the popularity fallback (unknown, or no history for sequence models)"},
            "in_graph": "the id lookup (an equality match against the known ids); each known user's training items as its history "
                        f"(the latest {self.history_length() or 'all'}) and as the items not to recommend; the model's scores; the top {k}",
            "top_k": k, "n_users": self.n_users, "n_items": self.n_items,
            **({} if raw_users else {"user_ids": list(self.user_ids)}), **({} if raw_items else {"item_ids": list(self.item_ids)}),
            "known_items": "the training interactions, as the checkpoint holds them: interactions after training are not in the graph "
                           "(sectorkit predict takes them from data.path's item column)",
        }

    def export_graph(self, model: Any, batch: dict[str, torch.Tensor]) -> ExportGraph:
        """The model behind the id lookup and the top-K (:class:`RawUserRecommender`), traced on the first few known
        users and one unknown id; the parity check also runs the unknown id first, in a batch of three. Its scores and
        fallback flags must agree with what ``predict`` computes for those users."""
        user_ids, item_ids = integer_ids(self.user_ids), integer_ids(self.item_ids)
        known = self.training_lists()
        k = min(self.top_k, self.n_items)
        graph = RawUserRecommender(model, user_ids, item_ids, known.indptr, known.items, self.history_length(), k)
        codes = np.arange(min(self.n_users, 7))
        unknown = (int(user_ids.max()) + 1) if user_ids is not None else -1
        ids = torch.as_tensor(np.r_[user_ids[codes] if user_ids is not None else codes, unknown], dtype=torch.long)
        lists = _reindex(known, np.r_[codes, -1])
        rows = UserBatchDataset(np.r_[codes, -1], lists, lists, None, self.n_items, self.history_length())[list(range(len(codes) + 1))]
        with torch.inference_mode():
            reference = [None, torch.topk(model(*model.batch_inputs(rows)), k, dim=1).values, model.fallback_mask(rows["users"], rows["history"])]
        name = "user_ids" if user_ids is not None else "users"
        return ExportGraph(graph, (ids,), [name], ["items", "scores", "from_popularity"], {name: {0: "batch"}},
                           checks=[(ids[[-1, 0, 1]],)], reference=reference)

    # --- persisted preprocessing ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"user_ids": list(self.user_ids), "item_ids": list(self.item_ids), "train_users": self.train_users, "train_items": self.train_items, "train_times": self.train_times}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.user_ids, self.item_ids = list(state["user_ids"]), list(state["item_ids"])
        self.train_users, self.train_items, self.train_times = state["train_users"], state["train_items"], state["train_times"]


def _reindex(lists: UserLists, rows: np.ndarray) -> UserLists:
    """The lists of ``rows`` (-1 = unknown user → empty list) as a new UserLists."""
    rows = np.asarray(rows, dtype=np.int64)
    lens = np.where(rows >= 0, lists.lengths()[np.maximum(rows, 0)], 0)
    flat = lists.padded(rows, -1)
    return UserLists(np.r_[0, np.cumsum(lens)].astype(np.int64), flat[flat >= 0] if flat.size else flat.ravel())


def read_predict_users(read: Callable[..., pd.DataFrame], reader_kwargs: dict[str, Any]) -> pd.DataFrame:
    """A predict input: an interaction log (its items are excluded and extend the history) or a list of users.
    ``read(**reader_kwargs)`` reads it (a file, or rows held in memory) into the standard frame."""
    try:
        return read(**reader_kwargs)
    except DataError as err:
        if "item column" not in str(err):
            raise
    frame = read(**{**reader_kwargs, "item_column": reader_kwargs["user_column"]})
    return frame[["user"]]
