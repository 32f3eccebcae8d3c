"""LightGCN (He et al., 2020): embeddings smoothed over the normalised user-item graph, layer mean, BPR loss.

Propagation is a sparse matrix product over the symmetric-normalised adjacency D^-1/2 A D^-1/2 of the
bipartite training graph (users 0..U-1, items U..U+I-1).

In evaluation (eval mode, gradients off) the propagated embeddings are computed once and reused by every
batch: the cache is keyed on the embedding tables' storage and in-place version counters and on the graph
object, and dropped when the module changes mode, moves (``to``/``cuda``/``cpu``) or gets a new graph. Training,
tracing (ONNX / TorchScript export) and ``torch.compile`` always propagate afresh.
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
        self._propagated: tuple | None = None  # (key, graph, user_out, item_out) of the last evaluation propagation

    def set_graph(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Build the propagation matrix from the training interactions."""
        self.adjacency = normalised_adjacency(users, items, self.n_users, self.n_items)
        self._propagated = None

    def train(self, mode: bool = True) -> LightGCN:
        self._propagated = None  # (eval() calls train(False)): each evaluation pass starts from a fresh propagation
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # every to()/cuda()/cpu()/half() goes through here
        self._propagated = None
        return super()._apply(fn, *args, **kwargs)

    def _cache_key(self) -> tuple:
        """Changes whenever an embedding table is replaced or modified in place (optimizer step, load_state_dict)."""
        u, i = self.user_embedding.weight, self.item_embedding.weight
        return (u.data_ptr(), u._version, i.data_ptr(), i._version, u.device, u.dtype)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (layer-mean) user and item embeddings; cached across calls in eval mode with gradients off."""
        cacheable = not (self.training or torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling())
        if not cacheable:
            self._propagated = None
            return self._propagate()
        key = self._cache_key()
        cached = self._propagated
        if cached is not None and cached[0] == key and cached[1] is self.adjacency:
            return cached[2], cached[3]
        user_out, item_out = self._propagate()
        self._propagated = (key, self.adjacency, user_out, item_out)
        return user_out, item_out

    def _propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
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
