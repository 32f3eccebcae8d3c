"""The finance LightningDataModule: built-in simulator or a user file -> features -> time windows ->
tensors. Fitted preprocessing (feature names, categorical vocabularies, standardisation statistics)
is kept in :meth:`FraudDataModule.state_dict`, so ``predict`` on a new file reuses it."""

from __future__ import annotations

import inspect
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, WeightedRandomSampler

from sectorkit.core.datamodule import SectorDataModule
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.io import read_table
from sectorkit.core.network import Network
from sectorkit.core.progress import phase
from sectorkit.core.sharding import distributed_rank, read_shard
from sectorkit.domains.finance import scale
from sectorkit.domains.finance.features import build_features
from sectorkit.domains.finance.models.base import fraud_network
from sectorkit.domains.finance.models.numeric_encoding import tree_bin_edges
from sectorkit.domains.finance.readers import ColumnSpec, read_transactions, sample_spec, to_canonical
from sectorkit.domains.finance.sample import SimulatorConfig, load_sample
from sectorkit.domains.finance.splits import (
    Ranges,
    Windows,
    column_assignment,
    fraction_assignment,
    resolve_ranges,
    resolve_start,
    split_by_rows,
    split_frame,
)

SPLIT_DEFAULTS = {
    "method": "windows", "train_start": None, "train_days": 7, "delay_days": 7, "test_days": 7, "valid_days": 7, "order": None, "gap_days": 0,
    "train": None, "valid": None, "test": None, "column": None, "values": {"train": "train", "valid": "valid", "test": "test"},
    "fractions": [0.7, 0.15, 0.15], "drop_known_frauds": True,
}
SPLIT_COLUMN = "_split"  # the canonical frame's copy of data.split.column
NEW_ROW = "_new_row"  # predict with data.history: which canonical rows are the ones to score
log = logging.getLogger(__name__)


class TensorBatches(Dataset):
    """Column tensors indexed a whole batch at a time (a BatchSampler feeds lists of row indices)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.length = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        return {k: v[idx] for k, v in self.tensors.items()}


def log_flag(name: str) -> bool:
    """Whether a numeric feature gets the signed log1p transform (amounts, counts and ratios: heavy tails)."""
    return any(part in name for part in ("amount", "nb_tx"))


class FraudDataModule(SectorDataModule):
    """Transactions -> (numeric, categorical, target, card, day) batches for train/validation/test/predict.

    ``columns`` maps the columns of the file at ``path`` (the built-in simulator's table has a fixed layout).
    ``network``, the class of the network fed, decides whether target-aware bins are fitted (``uses_bin_edges``).
    """

    def __init__(
        self,
        path: str | None = None,
        columns: dict[str, Any] | None = None,
        simulator: dict[str, Any] | None = None,
        features: dict[str, Any] | None = None,
        split: dict[str, Any] | None = None,
        sampler: str = "none",
        numeric_bins: int = 8,
        max_levels: int = 1000,
        min_level_count: int = 5,
        batch_size: int = 512,
        eval_batch_size: int | None = 4096,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int = 0,
        cache_dir: str | None = None,
        network: type[Network] | None = None,
        history: str | pd.DataFrame | None = None,
        engine: str = "auto",
        engine_min_rows: int = scale.AUTO_ROWS,
        shard_by_rank: bool = False,
    ) -> None:
        super().__init__(path, batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers, seed, cache_dir, network)
        # predict: earlier transactions (a file in data.path's layout, or a served model's frame) whose card and
        # terminal windows the scored rows see; they are not scored themselves
        self.history = history
        # features in memory (pandas) or out-of-core (pyarrow, see scale.py); shard_by_rank: each global rank reads
        # only its row groups of the feature table
        self.engine, self.engine_min_rows, self.shard_by_rank = engine, int(engine_min_rows), bool(shard_by_rank)
        # without ``columns`` a file is read with the simulator's layout
        self.spec = ColumnSpec(**dict(columns)) if self.path is not None and columns is not None else sample_spec()
        self.simulator = SimulatorConfig(**dict(simulator or {}))
        defaults = {k: p.default for k, p in inspect.signature(build_features).parameters.items() if k != "frame"}
        self.feature_cfg = {**defaults, **dict(features or {})}
        self.split_cfg = {**SPLIT_DEFAULTS, **dict(split or {})}
        self.max_levels, self.min_level_count = int(max_levels), int(min_level_count)
        self.sampler = sampler
        # bins are fitted for every network when it is not known
        self.numeric_bins = int(numeric_bins) if network is None or fraud_network(network).uses_bin_edges else 0
        self.fitted: dict[str, Any] = {}
        self.tables: dict[str, pd.DataFrame] = {}
        self.datasets: dict[str, TensorBatches] = {}
        self.windows: Windows | Ranges | None = None

    # --- loading ----------------------------------------------------------------------------
    @property
    def source(self) -> str:
        return str(self.path) if self.path else "built-in sample"

    def load_frame(self, with_label: bool = True) -> pd.DataFrame:
        """The canonical transaction frame (simulator or user file), features added; for a labelled read with
        ``data.split.method=column``, also the split column (as ``_split``)."""
        column = self.split_cfg.get("column") if self.split_cfg["method"] == "column" and with_label else None
        if self.split_cfg["method"] == "column" and with_label and not column:
            raise ConfigError("data.split.column: data.split.method=column needs the name of the file's column that assigns rows to splits")
        keep = {column: SPLIT_COLUMN} if column else None
        if self.resolved_engine() == "pyarrow" and (with_label or self.history is None):
            return self.load_frame_out_of_core(with_label, keep)
        if self.path is None:
            frame = to_canonical(load_sample(self.simulator, self.cache_dir), self.spec, self.source, keep=keep)
        else:
            frame = read_transactions(self.require_path(), self.spec, with_label=with_label, keep=keep)
        with phase(f"computing features ({len(frame)} transactions)"):
            features = build_features(frame, **self.feature_cfg)
        return pd.concat([frame, features], axis=1)

    def resolved_engine(self) -> str:
        """``data.engine``: ``pandas``, ``pyarrow``, or for ``auto`` pyarrow on a folder of Parquet files or on a Parquet file
        or simulator run of at least ``data.engine_min_rows`` transactions, else pandas."""
        if self.path is None:
            rows = scale.expected_rows(self.simulator)
        elif self.require_path().is_dir():
            rows = self.engine_min_rows if self.engine == "auto" else 0
        elif str(self.path).lower().endswith((".parquet", ".pq")):
            rows = scale.table_rows(self.require_path())
        else:
            rows = 0  # a CSV file is read in memory
        return scale.resolve_engine(self.engine, rows, self.engine_min_rows)

    def load_frame_out_of_core(self, with_label: bool, keep: dict[str, str] | None) -> pd.DataFrame:
        """The canonical frame with its features computed out-of-core (``scale.build_features_out_of_core``) into the cache
        folder, read back whole or, with ``shard_by_rank``, only this global rank's row groups."""
        if keep:
            raise ConfigError("data.engine=pyarrow: data.split.method=column is not supported out-of-core; use windows, ranges or fractions")
        cache = self.cache_dir or Path(tempfile.gettempdir()) / "sectorkit_finance"
        if self.path is None:
            source: Path = scale.simulate_to_parquet(self.simulator, cache / f"finance_sim_parts_{self.simulator.key()}")
        else:
            source = self.require_path()
            if not (source.is_dir() or str(source).lower().endswith((".parquet", ".pq"))):
                raise ConfigError(f"data.engine=pyarrow: {source} must be a Parquet file or a folder of them (convert the CSV first)")
        key = scale.feature_table_key(source, self.spec, {**self.feature_cfg, "with_label": with_label})
        with phase(f"computing features out-of-core ({scale.table_rows(source)} transactions)"):
            folder = scale.cached_features(source, cache, key, self.spec, self.feature_cfg, with_label=with_label)
        frame = read_shard(folder, *distributed_rank()) if self.shard_by_rank else pd.read_parquet(folder)
        return frame.drop(columns=[scale.ROW_ID])

    def with_history(self, new: pd.DataFrame, source: str) -> pd.DataFrame:
        """The raw rows ``new`` (checked alone first, so a message names their own rows) with features computed over
        ``history`` and them together, history rows dropped afterwards."""
        history = self.history if isinstance(self.history, pd.DataFrame) else read_table(Path(str(self.history)).expanduser(), "transaction history")
        linked = [history[c].isin(new[c]) for c in (self.spec.card, self.spec.terminal) if c and c in history and c in new]
        if linked:  # a row's windows only see its own card's and terminal's rows
            history = history[np.logical_or.reduce(linked)]
        both = pd.concat([history.assign(**{NEW_ROW: "0"}), new.assign(**{NEW_ROW: "1"})], ignore_index=True)
        frame = to_canonical(both, self.spec, f"{source} with data.history", with_label=False, keep={NEW_ROW: NEW_ROW})
        frame = pd.concat([frame, build_features(frame, **self.feature_cfg)], axis=1)
        unlabelled = [] if self.spec.label in new else ["label"]  # history labels feed the terminal windows only
        return frame[frame[NEW_ROW] == "1"].drop(columns=[NEW_ROW, *unlabelled], errors="ignore").reset_index(drop=True)

    def serving_history(self) -> pd.DataFrame:
        """The raw transactions of the training source (its file or the simulator's table) from the last days the card and
        terminal windows look back over: what a server starts its history with."""
        raw = load_sample(self.simulator, self.cache_dir) if self.path is None else read_table(self.require_path(), "transaction table")
        frame = to_canonical(raw.assign(**{NEW_ROW: np.arange(len(raw)).astype(str)}), self.spec, self.source, with_label=False, keep={NEW_ROW: NEW_ROW})
        cfg = self.feature_cfg
        lookback = max([max(cfg["windows"]) + cfg["delay_days"], *([cfg["card_history_lag_days"] + cfg["card_history_days"]] if cfg["card_history"] else []),
                        *([cfg["terminal_recency_days"] + cfg["delay_days"]] if cfg["terminal_recency"] else [])])
        recent = frame["datetime"] >= frame["datetime"].max() - pd.Timedelta(days=float(lookback))
        return raw.iloc[np.sort(frame.loc[recent, NEW_ROW].astype(int).to_numpy())].reset_index(drop=True)

    def numeric_columns(self, frame: pd.DataFrame) -> list[str]:
        """Model inputs: amount, engineered features, then the configured extra numeric columns."""
        engineered = [c for c in frame.columns if c.startswith(("tx_", "card_", "terminal_"))]
        return ["amount", *engineered, *self.spec.numeric]

    def fit_preprocessing(self, train: pd.DataFrame) -> None:
        """Feature names, vocabularies and standardisation statistics from the training window only.

        Non-finite feature values (an overflowing window sum) are left out of the statistics like NaN. Each
        categorical vocabulary keeps the ``max_levels`` most frequent training levels seen at least
        ``min_level_count`` times; the other levels share code 0 with unseen and missing ones.
        """
        names = self.numeric_columns(train)
        flags = [log_flag(n) for n in names]
        values = self._transform(train[names].to_numpy(np.float64), flags)
        values[~np.isfinite(values)] = np.nan
        empty = [n for n, col in zip(names, values.T) if np.isnan(col).all()]
        if empty:
            raise DataError(f"{self.source}: column(s) {empty} are entirely empty (all NaN) in the training window")
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        vocab = {c: self.frequent_levels(train[c], c) for c in self.spec.categorical}
        labels = train["label"].to_numpy()
        self.fitted = {
            "numeric": names, "log_features": flags, "mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist(),
            "vocab": vocab, "class_ratio": float((labels == 0).sum() / max((labels == 1).sum(), 1)), "bin_edges": None,
        }
        if self.numeric_bins > 0:  # bins on the values the network sees
            standardised = self.standardise(train[names].to_numpy(np.float64))
            self.fitted["bin_edges"] = tree_bin_edges(standardised, labels, self.numeric_bins, seed=self.seed)

    def frequent_levels(self, values: pd.Series, column: str) -> list[str]:
        """The sorted vocabulary of one categorical column: its most frequent levels (see :meth:`fit_preprocessing`)."""
        counts = values.astype(str).value_counts()
        counts = counts[counts >= self.min_level_count]
        kept = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable").index[: self.max_levels]
        left = values.nunique() - len(kept)
        if left:
            log.info("%s: column %r keeps %d of its %d training levels (data.max_levels=%d, data.min_level_count=%d); the other %d share the "
                     "code of unseen levels", self.source, column, len(kept), values.nunique(), self.max_levels, self.min_level_count, left)
        return sorted(map(str, kept))

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """Raw numeric features -> what the model computes from them: signed log1p on flagged columns,
        (x - mean) / std with the fitted statistics, NaN -> 0 (the training mean)."""
        f = self.fitted
        x = self._transform(raw, f["log_features"])
        return np.nan_to_num((x - np.asarray(f["mean"])) / np.asarray(f["std"]), nan=0.0, posinf=0.0, neginf=0.0)

    @staticmethod
    def _transform(values: np.ndarray, flags: list[bool]) -> np.ndarray:
        out = values.copy()
        out[:, flags] = np.sign(out[:, flags]) * np.log1p(np.abs(out[:, flags]))
        return out

    def encode(self, table: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Tensors of one table with the fitted names and vocabularies (unseen categories -> 0)."""
        missing = [c for c in self.fitted["numeric"] if c not in table.columns]
        if missing:
            raise DataError(f"{self.source}: column(s) {missing} used in training are missing")
        numeric = torch.tensor(table[self.fitted["numeric"]].to_numpy(np.float32))
        codes = [pd.Index(v).get_indexer(table[c].astype(str)).astype(np.int64) + 1 for c, v in self.fitted["vocab"].items()]
        categorical = torch.tensor(np.stack(codes, axis=1) if codes else np.zeros((len(table), 0), np.int64))
        label = table["label"].to_numpy(np.float32) if "label" in table else np.full(len(table), np.nan, np.float32)
        card = pd.factorize(table["card"])[0] if "card" in table else np.arange(len(table))
        return {
            "numeric": numeric, "categorical": categorical, "target": torch.tensor(label),
            "card": torch.tensor(card, dtype=torch.long), "day": torch.tensor(table["day"].to_numpy(np.int64)),
        }

    def resolve_windows(self, frame: pd.DataFrame) -> Windows | Ranges:
        """The time windows of ``data.split.method`` windows or ranges, in days."""
        cfg = self.split_cfg
        if cfg["method"] == "ranges":
            return resolve_ranges({k: cfg[k] for k in ("train", "valid", "test")}, float(cfg["delay_days"]), frame["datetime"])
        order = cfg["order"] or "valid_first"
        w = Windows(0.0, float(cfg["train_days"]), float(cfg["delay_days"]), float(cfg["test_days"]), float(cfg["valid_days"]), order, float(cfg["gap_days"]))
        start = resolve_start(cfg["train_start"], frame["datetime"], frame["seconds"].to_numpy(), w)
        return Windows(start, w.train_days, w.delay_days, w.test_days, w.valid_days, order, w.gap_days)

    def split_rows(self, frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], Windows | Ranges]:
        """Row indices of the validation, training and test splits by ``data.split.method``, and the days they span."""
        cfg = self.split_cfg
        drop = bool(cfg["drop_known_frauds"])
        if cfg["method"] in ("windows", "ranges"):
            windows = self.resolve_windows(frame)
            return split_frame(frame, windows, drop, self.source), windows
        if cfg["method"] == "column":
            assignment = column_assignment(frame[SPLIT_COLUMN].to_numpy(), dict(cfg["values"]), cfg["column"], self.source)
            what = f"column {cfg['column']!r}"
        else:
            assignment = fraction_assignment(len(frame), list(cfg["fractions"]), cfg["order"] or "train_first")
            what = f"data.split.fractions={list(cfg['fractions'])}"
        return split_by_rows(frame, assignment, float(cfg["delay_days"]), drop, self.source, what)

    def metric_notes(self) -> dict[str, str]:
        """Why some metrics of a split cannot be computed: a split holding one class only (AP, ROC AUC and the
        recall at a false-positive rate need frauds and legitimate rows)."""
        notes = {}
        for name, table in self.tables.items():
            if name == "predict" or "label" not in table or table.empty:
                continue
            frauds = int((table["label"] == 1).sum())
            if frauds in (0, len(table)):
                what = "no fraud" if frauds == 0 else "only frauds"
                effect = ("the test metrics ap, auc and recall at the false-positive rate cannot be computed (NaN)" if name == "test" else
                          "validation AP is 0 every epoch, so checkpoint choice and early stopping follow no signal and the alert threshold falls "
                          "back to the fpr rule")
                notes[name] = f"the {name} split ({len(table)} rows) holds {what}: {effect}; widen or move it (data.split.*)"
        return notes

    def data_summary(self) -> dict[str, Any]:
        """Per split: transactions, first and last timestamp, days spanned, frauds and fraud rate (labelled splits);
        cards and terminals seen over all splits."""
        splits = {}
        for name, table in self.tables.items():
            if name == "predict" and "test" in self.tables and table is self.tables["test"]:
                continue
            facts: dict[str, Any] = {"transactions": len(table)}
            if len(table):
                first, last = pd.Timestamp(table["datetime"].min()), pd.Timestamp(table["datetime"].max())
                facts.update({"from": str(first.floor("s")), "to": str(last.floor("s")),
                              "days": round((last - first).total_seconds() / 86_400, 1)})
            if "label" in table and len(table):
                frauds = int((table["label"] == 1).sum())
                facts.update({"frauds": frauds, "fraud rate": f"{frauds / len(table):.3%}"})
            splits[name] = facts
        facts = {f"distinct {role}s": int(pd.concat([t[role] for t in self.tables.values()]).nunique())
                 for role in ("card", "terminal") if self.tables and all(role in t for t in self.tables.values())}
        return {"source": self.source, "facts": facts, "splits": splits}

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.path is None:  # built-in sample: predict its test window
            self.setup("fit")
            self.datasets["predict"], self.tables["predict"] = self.datasets["test"], self.tables["test"]
            return
        if stage == "predict":
            if self.history is None and self.resolved_engine() == "pyarrow":  # a large file: features out-of-core
                frame = self.load_frame(with_label=False)
                self.tables["predict"] = frame
                self.datasets["predict"] = TensorBatches(self.encode(frame))
            else:
                self.setup_predict(read_table(self.require_path(), "transaction table"), self.source)
            return
        if self.datasets.get("train") is not None:
            return
        frame = self.load_frame()
        idx, self.windows = self.split_rows(frame)
        frame = frame.drop(columns=[SPLIT_COLUMN], errors="ignore")
        self.tables = {name: frame.iloc[rows].reset_index(drop=True) for name, rows in idx.items()}
        if self.tables["valid"].empty:
            raise DataError(f"{self.source}: the validation split is empty; set data.split.valid_days > 0 (or give validation rows with data.split.*)")
        for note in self.metric_notes().values():
            log.warning("%s: %s", self.source, note)
        if not self.fitted:
            self.fit_preprocessing(self.tables["train"])
        self.datasets = {name: TensorBatches(self.encode(table)) for name, table in self.tables.items()}

    def setup_predict(self, rows: pd.DataFrame, source: str = "request") -> None:
        """The raw rows to score (``data.path``'s layout, read from it or held in memory by a server), checked alone so a
        message names their own rows, with their features over ``history`` and them (when given) or over them alone."""
        frame = to_canonical(rows, self.spec, source, with_label=False)
        if self.history is not None:
            frame = self.with_history(rows, source)
        else:
            with phase(f"computing features ({len(frame)} transactions)"):
                frame = pd.concat([frame, build_features(frame, **self.feature_cfg)], axis=1)
        self.tables["predict"] = frame
        self.datasets["predict"] = TensorBatches(self.encode(frame))

    # --- loaders ----------------------------------------------------------------------------
    def _loader(self, dataset: TensorBatches, sampler: Any, batch_size: int) -> DataLoader:
        """A DataLoader over whole-batch index lists (no per-row collation)."""
        return DataLoader(
            dataset, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last=False),
            num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        data = self.datasets["train"]
        generator = torch.Generator().manual_seed(self.seed)
        if self.sampler == "balanced":
            target = data.tensors["target"]
            weights = torch.where(target == 1, 0.5 / max(int(target.sum()), 1), 0.5 / max(int((target == 0).sum()), 1)).double()
            sampler: Any = WeightedRandomSampler(weights, len(data), replacement=True, generator=generator)
        else:
            sampler = RandomSampler(data, generator=generator)
        return self._loader(data, sampler, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["valid"], SequentialSampler(self.datasets["valid"]), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"], SequentialSampler(self.datasets["test"]), self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        name = "predict" if "predict" in self.datasets else "test"
        return self._loader(self.datasets[name], SequentialSampler(self.datasets[name]), self.eval_batch_size)

    # --- core hooks -------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """``arrays`` (:meth:`arrays`, called only by a network fitted in closed form before training)."""
        return {"arrays": self.arrays}

    def model_kwargs(self) -> dict[str, Any]:
        f = self.fitted
        return {
            "n_numeric": len(f["numeric"]), "cardinalities": [len(v) + 1 for v in f["vocab"].values()],
            "feature_mean": f["mean"], "feature_std": f["std"], "log_features": f["log_features"], "bin_edges": f["bin_edges"],
            "class_ratio": f["class_ratio"], "with_cards": self.spec.card is not None,
        }

    def predict_frame(self, outputs: Sequence[Any], stage: str) -> pd.DataFrame:
        scores = torch.cat([torch.as_tensor(o) for o in outputs]).float().cpu().numpy()
        preferred = ["predict", "test"] if stage == "predict" else ["test", "predict"]
        matching = [n for n in preferred if n in self.tables and len(self.tables[n]) == len(scores)]
        if not matching:
            raise DataError(f"{self.source}: {len(scores)} predictions do not match any prepared table ({ {n: len(t) for n, t in self.tables.items()} })")
        table = self.tables[matching[0]]
        out = pd.DataFrame({"datetime": table["datetime"].to_numpy(), "amount": table["amount"].to_numpy()})
        for role in ("id", "card", "terminal"):
            if role in table:
                out.insert(0 if role == "id" else len(out.columns), role, table[role].to_numpy())
        out["score"] = scores[:, 0]
        out["alert"] = scores[:, 1].astype(bool)
        if "label" in table:
            out["label"] = table["label"].to_numpy()
        return out

    def export_contract(self) -> dict[str, Any]:
        """The exported graph's inputs: the raw numeric features in the fitted order (the signed log1p, the
        standardisation and the alert threshold are inside the graph) and the categorical codes; the card and terminal
        window features need each card's and terminal's earlier transactions, which the caller must keep."""
        f = self.fitted
        return {
            "numeric": {"dtype": "float32", "shape": ["batch", len(f["numeric"])], "features": list(f["numeric"]),
                        "preprocessing": "none: raw values (NaN allowed, read as the training mean); signed log1p of "
                                         f"{[n for n, flag in zip(f['numeric'], f['log_features']) if flag]} and (x - mean) / std are in the graph",
                        "in_graph": "signed log1p of the flagged features, (x - mean) / std with the training statistics, NaN and "
                                    "non-finite values -> 0 (the training mean): row-wise, so the graph takes the raw values",
                        "row_features": "tx_weekend and tx_night come from the transaction's time "
                                        "(sectorkit.domains.finance.features.calendar_flags); build_features computes them with the "
                                        "window features (history.how)"},
            "categorical": {"dtype": "int64", "shape": ["batch", len(f["vocab"])], "columns": list(f["vocab"]),
                            "preprocessing": "caller-side lookup (strings do not enter the graph): code = 1 + the position of str(value) "
                                             "in vocabularies[column]; 0 for an unseen, rare or missing value",
                            "vocabularies": f["vocab"]},
            "outputs": {"score_and_alert": "(batch, 2): column 0 the fraud score in [0, 1], column 1 1.0 where score >= the alert threshold "
                                           "(in the graph; its value is in decisions)"},
            "columns": {"time": self.spec.time, "amount": self.spec.amount, "card": self.spec.card, "terminal": self.spec.terminal},
            "history": {
                "needed": [n for n in f["numeric"] if n.startswith(("card_", "terminal_"))],
                "how": "compute the features with sectorkit.domains.finance.features.build_features over the canonical frame of each card's "
                       "and terminal's earlier transactions plus the new rows (settings below), then keep the new rows; terminal risk "
                       f"counts only frauds labelled at least delay_days={self.feature_cfg['delay_days']} earlier. `sectorkit serve` keeps "
                       "this history itself; `sectorkit predict data.history=<file>` takes it as a file.",
                "feature_settings": {k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in self.feature_cfg.items()},
            },
        }

    def state_dict(self) -> dict[str, Any]:
        return {"fitted": self.fitted}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.fitted = dict(state_dict.get("fitted", {}))

    # --- baselines ----------------------------------------------------------------------------
    def arrays(self, name: str, keep_missing: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(numeric after the model's transform, categorical codes, labels) of one split, for baselines. Missing
        values become 0 (the training mean) as in the model, or stay NaN with ``keep_missing`` (non-finite: NaN)."""
        t = self.datasets[name].tensors
        raw = t["numeric"].double().numpy()
        if keep_missing:
            f = self.fitted
            x = (self._transform(raw, f["log_features"]) - np.asarray(f["mean"])) / np.asarray(f["std"])
            x[~np.isfinite(x)] = np.nan
            return x, t["categorical"].numpy(), t["target"].numpy()
        return self.standardise(raw), t["categorical"].numpy(), t["target"].numpy()
