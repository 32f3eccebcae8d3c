"""EASE (Steck, 2019) as a shippable network: the closed-form item-item model of the ``ease`` baseline.

The weights are fitted once, without gradient steps, from the training interactions the module hands over
before fitting (``needs_graph``: :meth:`set_graph`), with the baseline's own closed form, so the network and
the ``ease`` baseline score the same split identically. They are a buffer: the checkpoint, ``evaluate``,
``predict`` and the exported graph carry them. Scoring reads the user's whole known history
(``history_input='full'``: training items at validation, training + validation items at test), as the
baseline does. The item-item matrix is ``n_items x n_items``: meant for catalogues up to ~20k items.
"""

from __future__ import annotations

import torch
from sectorkit.domains.retail.models.base import RecommenderNetwork


class EASE(RecommenderNetwork):
    """Item-item ridge regression with a zero diagonal; ``reg_weight`` is the L2 penalty (lambda)."""

    input_type = "user_vector"  # the (single, empty) training epoch is one cheap pass over the users
    loss_type = "closed_form"
    memory_bank = True  # fitted without an optimizer: no trainable parameters
    needs_graph = True
    history_input = "full"

    def __init__(self, n_users: int, n_items: int, reg_weight: float = 250.0) -> None:
        super().__init__()
        self.n_users, self.n_items, self.reg_weight = n_users, n_items, float(reg_weight)
        self.register_buffer("weights", torch.zeros(n_items, n_items))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def set_graph(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Fit the weights from the training interactions (once: a loaded checkpoint keeps its fitted weights)."""
        if bool(self.fitted):
            return
        from sectorkit.domains.retail.baselines import EASE as ClosedForm
        from sectorkit.domains.retail.baselines import interaction_matrix

        matrix = interaction_matrix(users.cpu().numpy(), items.cpu().numpy(), self.n_users, self.n_items)
        self.weights.copy_(ClosedForm(self.reg_weight).fit(matrix).weights)
        self.fitted.fill_(True)

    def history_rows(self, history: torch.Tensor) -> torch.Tensor:
        """[B, L] known items (padding ``n_items``) -> [B, n_items] 0/1 rows."""
        dense = torch.zeros(history.shape[0], self.n_items + 1, device=history.device)
        dense = dense.scatter(1, history, torch.ones_like(history, dtype=dense.dtype))
        return dense[:, : self.n_items]

    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Scores of every item: the user's known items through the item-item weights."""
        return self.history_rows(history) @ self.weights

    def loss(self, users: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("EASE is fitted in closed form before training (set_graph); it has no training loss")
