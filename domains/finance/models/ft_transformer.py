"""FT-Transformer (Gorishniy et al., 2021): every feature becomes a token (numeric: x * w_i + b_i;
categorical: an embedding + bias), a [CLS] token is prepended, a pre-norm Transformer encoder mixes
them and the [CLS] output gives the logit. Uses torch's own ``nn.TransformerEncoder``."""

from __future__ import annotations

import torch
from torch import nn

from sectorkit.domains.finance.models.base import FraudNetwork


class FeatureTokenizer(nn.Module):
    """Numeric and categorical features -> (batch, n_features, d_token) tokens."""

    def __init__(self, n_numeric: int, cardinalities: list[int], d_token: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_numeric, d_token))
        self.bias = nn.Parameter(torch.empty(n_numeric + len(cardinalities), d_token))
        self.tables = nn.ModuleList(nn.Embedding(c, d_token) for c in cardinalities)
        bound = d_token**-0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        tokens = [numeric.unsqueeze(-1) * self.weight]
        if len(self.tables):
            tokens.append(torch.stack([t(categorical[:, i]) for i, t in enumerate(self.tables)], dim=1))
        return torch.cat(tokens, dim=1) + self.bias


class FTTransformer(FraudNetwork):
    """Feature tokenizer + [CLS] + Transformer encoder -> one logit."""

    def __init__(self, n_numeric: int, cardinalities: list[int], d_token: int = 32, n_layers: int = 2, n_heads: int = 4, ffn_factor: float = 4 / 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.tokenizer = FeatureTokenizer(n_numeric, list(cardinalities), d_token)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_token))
        layer = nn.TransformerEncoderLayer(d_token, n_heads, int(d_token * ffn_factor), dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d_token), nn.ReLU(), nn.Linear(d_token, 1))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer(numeric, categorical)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens)[:, 0]).squeeze(-1)
