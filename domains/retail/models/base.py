"""What every recommendation network is: a :class:`~sectorkit.core.network.Network` that scores the whole
catalogue for a batch of users (``score_all``) and declares how it trains."""

from __future__ import annotations

from typing import ClassVar

import torch

from sectorkit.core.errors import ConfigError
from sectorkit.core.network import Network

INPUT_TYPES = ("pairwise", "pointwise", "user_vector", "sequence")
HISTORY_INPUTS = ("none", "recent", "full")
NEGATIVE_SAMPLING_LOSSES = ("bpr", "bce")


class RecommenderNetwork(Network):
    """Base class of the retail networks.

    ``input_type`` chooses the training batches the data module builds: ``pairwise`` and ``pointwise``
    (training (user, item) pairs; ``loss(users, positives, negatives)``), ``user_vector`` (one row per user;
    ``loss(users)`` reads the user's training items) or ``sequence`` (next-item windows of each user's history;
    ``loss(history, targets, negatives)``).
    ``loss_type`` names the training loss (``bpr``, ``bce``, ``multinomial``, ``ce``); ``bpr`` and ``bce``
    train against uniformly sampled negative items, which the module draws.
    ``needs_graph``: :meth:`set_graph` receives the training interactions before fitting and after a
    checkpoint is loaded (graph propagation, the user's training row).
    ``history_input`` says what :meth:`score_all` reads from its ``history`` argument, the user's known history
    (training items at validation, training + validation items at test, the checkpoint's training items plus
    the predict file's at predict): ``none`` (learned user vectors only; the known items act through the
    mask), ``recent`` (the last ``data.max_seq_len`` items in time order) or ``full`` (every known item).
    ``uses_item_text``: the network is built with ``item_text_dim`` and :meth:`set_item_text` receives the
    items' text vectors (``data.items_path``, ``data.text_model``) before fitting; it keeps them as a buffer.
    """

    input_type: ClassVar[str] = "pairwise"
    loss_type: ClassVar[str] = "bpr"
    history_input: ClassVar[str] = "none"
    uses_item_text: ClassVar[bool] = False

    def set_graph(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Take the training interactions (only called when ``needs_graph`` is set)."""
        raise NotImplementedError(f"{type(self).__name__} declares needs_graph but does not implement set_graph")

    def set_item_text(self, vectors: torch.Tensor) -> None:
        """Take the [n_items, item_text_dim] item text vectors (only called when ``uses_item_text`` is set)."""
        raise NotImplementedError(f"{type(self).__name__} declares uses_item_text but does not implement set_item_text")

    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """[B] users and [B, L] right-aligned histories (padding ``n_items``) → [B, n_items] scores."""
        raise NotImplementedError


def recommender_network(cls: type[Network], key: str = "model.net") -> type[RecommenderNetwork]:
    """``cls`` checked to be a retail network with a known input type."""
    if not issubclass(cls, RecommenderNetwork):
        raise ConfigError(f"{key}._target_: {cls.__name__} is not a retail network (expected a subclass of {__name__}.RecommenderNetwork)")
    if cls.input_type not in INPUT_TYPES:
        raise ConfigError(f"{key}._target_: {cls.__name__}.input_type={cls.input_type!r}; expected one of {', '.join(INPUT_TYPES)}")
    if cls.history_input not in HISTORY_INPUTS:
        raise ConfigError(f"{key}._target_: {cls.__name__}.history_input={cls.history_input!r}; expected one of {', '.join(HISTORY_INPUTS)}")
    return cls
