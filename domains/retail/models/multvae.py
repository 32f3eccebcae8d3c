"""Mult-VAE (Liang et al., 2018): a variational autoencoder over each user's whole training row.

The encoder reads the L2-normalised (and, in training, dropped-out) bag of the user's training items, the
decoder gives logits over the catalogue, and the loss is the multinomial log-likelihood plus a KL term
whose weight rises linearly from 0 to ``anneal_cap`` over ``total_anneal_steps`` steps. Training takes
batches of users (``input_type='user_vector'``: one pass over the users with training items per epoch).
The training rows are kept as a padded [users, longest history] item matrix, so memory is O(users x
longest history), not O(users x items). Scoring encodes the user's whole known history from the batch
(``history_input='full'``): the training items at validation, training + validation items at test, as the
item-item baselines do, so it stays exportable to ONNX. ``variational=False`` gives Mult-DAE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sectorkit.domains.retail.models.base import RecommenderNetwork


class MultVAE(RecommenderNetwork):
    """Mult-VAE with encoder ``[n_items] -> hidden... -> embedding_size`` and a mirrored decoder."""

    input_type = "user_vector"
    loss_type = "multinomial"
    needs_graph = True
    history_input = "full"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_size: int = 64,
        hidden_sizes: list[int] = (600,),
        dropout: float = 0.5,
        anneal_cap: float = 0.2,
        total_anneal_steps: int = 200_000,
        variational: bool = True,
    ) -> None:
        super().__init__()
        self.n_users, self.n_items, self.dropout = n_users, n_items, dropout
        self.anneal_cap, self.total_anneal_steps, self.variational = anneal_cap, total_anneal_steps, variational
        sizes = [n_items, *hidden_sizes]
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.latent = nn.Linear(sizes[-1], 2 * embedding_size if variational else embedding_size)
        back = [embedding_size, *reversed(hidden_sizes), n_items]
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(back[:-1], back[1:]))
        for layer in [*self.encoder, self.latent, *self.decoder]:
            nn.init.xavier_normal_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("rows", torch.full((n_users, 1), n_items, dtype=torch.long), persistent=False)

    def set_graph(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Keep each user's training items as a row of a padded matrix (padding ``n_items``)."""
        counts = torch.bincount(users, minlength=self.n_users)
        order = torch.argsort(users, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        position = torch.arange(len(users), device=users.device) - starts[users[order]]
        width = max(int(counts.max()) if len(users) else 1, 1)
        rows = torch.full((self.n_users, width), self.n_items, dtype=torch.long, device=users.device)
        rows[users[order], position] = items[order]
        self.rows = rows.to(self.steps.device)

    def user_rows(self, users: torch.Tensor) -> torch.Tensor:
        """[B] users -> [B, n_items] 0/1 training rows, the training input (the pad column is cut)."""
        return self.history_rows(self.rows[users])

    def encode(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = F.normalize(rows, dim=1)
        x = F.dropout(x, self.dropout, self.training)
        for layer in self.encoder:
            x = torch.tanh(layer(x))
        h = self.latent(x)
        if not self.variational:
            return h, None
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.decoder):
            z = layer(z)
            if i < len(self.decoder) - 1:
                z = torch.tanh(z)
        return z

    def history_rows(self, history: torch.Tensor) -> torch.Tensor:
        """[B, L] known items (padding ``n_items``) -> [B, n_items] 0/1 rows."""
        dense = torch.zeros(history.shape[0], self.n_items + 1, device=history.device)
        dense = dense.scatter(1, history, torch.ones_like(history, dtype=dense.dtype))
        return dense[:, : self.n_items]

    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Scores from the user's whole known history (``history_input='full'``: training items at validation,
        training + validation items at test) through the encoder mean (no sampling at inference)."""
        mu, _ = self.encode(self.history_rows(history))
        return self.decode(mu)

    def loss(self, users: torch.Tensor) -> torch.Tensor:
        rows = self.user_rows(users)
        mu, logvar = self.encode(rows)
        z = mu
        kl = torch.zeros((), device=rows.device)
        if self.variational:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
        if self.training:
            self.steps += 1
        anneal = min(self.anneal_cap, float(self.steps) / self.total_anneal_steps) if self.total_anneal_steps > 0 else self.anneal_cap
        likelihood = -(F.log_softmax(self.decode(z), dim=1) * rows).sum(1).mean()
        return likelihood + anneal * kl
