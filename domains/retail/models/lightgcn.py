"""LightGCN (He et al., 2020): embeddings smoothed over the normalised user-item graph, layer mean, BPR loss.

Propagation is a sparse matrix product over the symmetric-normalised adjacency D^-1/2 A D^-1/2 of the
bipartite training graph (users 0..U-1, items U..U+I-1).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from sectorkit.domains.retail.models.base import RecommenderNetwork
from sectorkit.domains.retail.models.bpr import bpr_loss


def normalised_adjacency(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """Sparse [U+I, U+I] symmetric-normalised bipartite adjacency in CSR layout (about 3x faster than COO on CPU)."""
    n = n_users + n_items
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    degree = torch.bincount(rows, minlength=n).float()
    inv_sqrt = degree.clamp(min=1).pow(-0.5)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
        return coo.to_sparse_csr()


class LightGCN(RecommenderNetwork):
    """LightGCN with ``n_layers`` propagation steps and L2 regularisation ``reg_weight`` on the ego embeddings."""

    input_type = "pairwise"
    loss_type = "bpr"
    needs_graph = True

    def __init__(self, n_users: int, n_items: int, embedding_size: int = 64, n_layers: int = 2, reg_weight: float = 1e-5) -> None:
        super().__init__()
        self.n_users, self.n_items, self.n_layers, self.reg_weight = n_users, n_items, n_layers, reg_weight
        self.user_embedding = nn.Embedding(n_users, embedding_size)
        self.item_embedding = nn.Embedding(n_items, embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.adjacency: torch.Tensor | None = None

    def set_graph(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Build the propagation matrix from the training interactions."""
        self.adjacency = normalised_adjacency(users, items, self.n_users, self.n_items)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.adjacency is None:
            raise RuntimeError("LightGCN.set_graph must be called with the training interactions first (RecommenderModule.prepare_fit)")
        x = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        adjacency = self.adjacency.to(x.device)
        self.adjacency = adjacency
        layers = [x]
        for _ in range(self.n_layers):
            layers.append(torch.sparse.mm(adjacency, layers[-1]))
        out = torch.stack(layers).mean(0)
        return out[: self.n_users], out[self.n_users :]

    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        user_out, item_out = self.propagate()
        return user_out[users] @ item_out.T

    def loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        user_out, item_out = self.propagate()
        u = user_out[users]
        pos = (u * item_out[positives]).sum(-1)
        neg = (u[:, None, :] * item_out[negatives]).sum(-1)
        ego = [self.user_embedding(users), self.item_embedding(positives), self.item_embedding(negatives)]
        reg = sum(e.pow(2).sum() for e in ego) / (2 * len(users))
        return bpr_loss(pos[:, None], neg) + self.reg_weight * reg
