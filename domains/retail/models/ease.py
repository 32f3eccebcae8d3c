"""EASE (Steck, 2019) as a shippable network: the closed-form item-item model of the ``ease`` baseline.

The weights are fitted once, without gradient steps, from the training interactions the module hands over
before fitting (``needs_graph``: :meth:`set_graph`), with the baseline's own closed form, so the network and
the ``ease`` baseline score the same split identically. They are a buffer: the checkpoint, ``evaluate``,
``predict`` and the exported graph carry them. Scoring reads the user's whole known history
(``history_input='full'``: training items at validation, training + validation items at test), as the
baseline does. The item-item matrix is ``n_items x n_items`` (27k items: 2.9 GB in float32; the float64 solve
holds about three 5.7 GB matrices), fitted on the run's device by :func:`ease_weights`, which the baseline calls too.
"""

from __future__ import annotations

import torch
from sectorkit.domains.retail.models.base import RecommenderNetwork


def ease_weights(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int, reg_weight: float,
                 dtype: torch.dtype = torch.float64, item_chunk: int = 4096) -> torch.Tensor:
    """EASE's closed form on the device of ``users``: B = -P / diag(P) with a zero diagonal, P = (X^T X + lambda I)^-1
    for the binary user x item matrix X of the (user, item) pairs (duplicates count once). Returns float32 weights.

    The item-item Gram is built ``item_chunk`` columns at a time as a sparse (items x users) times dense (users x
    chunk) product, exact in float32 (integer counts below 2^24), so X itself is never dense. The inverse is a
    Cholesky inverse (the regularised Gram is symmetric positive definite) in ``dtype``: float64 by default, which
    keeps the figures of the reference solve; float32 halves memory and is several times faster on GPUs whose
    float64 throughput is low, at about 1e-4 relative error in the weights."""
    device = users.device
    keys = torch.unique(users.long() * n_items + items.long().to(device))
    users, items = keys // n_items, keys % n_items
    order = torch.argsort(items * n_users + users)  # rows of X^T (items), then users
    rows, cols = items[order], users[order]
    crow = torch.searchsorted(rows, torch.arange(n_items + 1, device=device))
    transposed = torch.sparse_csr_tensor(crow, cols, torch.ones(len(cols), device=device), (n_items, n_users), check_invariants=False)
    gram = torch.empty(n_items, n_items, device=device, dtype=dtype)
    for start in range(0, n_items, item_chunk):
        stop = min(start + item_chunk, n_items)
        inside = (items >= start) & (items < stop)
        block = torch.zeros(n_users, stop - start, device=device)
        block[users[inside], items[inside] - start] = 1.0
        gram[:, start:stop] = torch.sparse.mm(transposed, block).to(dtype)
    gram.diagonal().add_(reg_weight)
    precision = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    weights = -precision / torch.diagonal(precision)[None, :]
    weights.fill_diagonal_(0.0)
    return weights.float()


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
        self.weights.copy_(ease_weights(users, items, self.n_users, self.n_items, self.reg_weight))  # on the interactions' device
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
