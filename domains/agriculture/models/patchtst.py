"""PatchTST (Nie et al., 2023) from Hugging Face ``transformers``: the encoder is built from a
``PatchTSTConfig`` (never downloaded) or loaded from a local pretrained folder; a linear quantile head reads
the patch embeddings of every channel plus the known-ahead calendar features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PatchTSTConfig, PatchTSTModel

from sectorkit.domains.agriculture.models.common import MonotoneQuantiles, WindowForecaster


class PatchTST(WindowForecaster):
    """``forward(past (B, L, C), future (B, H, F)) -> (B, H, Q)``.

    ``pretrained_path``: a local folder saved with ``save_pretrained`` (its context length and channel count
    must match); otherwise a fresh encoder from the config values given here.
    """

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_past: int,
        n_future: int,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        patch_length: int = 8,
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 2,
        ffn_dim: int = 64,
        dropout: float = 0.1,
        pretrained_path: str | None = None,
    ) -> None:
        super().__init__()
        self.horizon, self.n_q = horizon, len(quantiles)
        if pretrained_path:
            self.encoder = PatchTSTModel.from_pretrained(pretrained_path, local_files_only=True)
        else:
            config = PatchTSTConfig(
                num_input_channels=n_past,
                context_length=lookback,
                patch_length=patch_length,
                patch_stride=patch_length,
                d_model=d_model,
                num_attention_heads=n_heads,
                num_hidden_layers=n_layers,
                ffn_dim=ffn_dim,
                dropout=dropout,
                prediction_length=horizon,
                scaling=None,
                do_mask_input=False,
            )
            self.encoder = PatchTSTModel(config)
        cfg = self.encoder.config
        n_patches = (max(cfg.context_length, cfg.patch_length) - cfg.patch_length) // cfg.patch_stride + 1
        out = horizon * self.n_q
        self.proj = nn.Linear(n_past * n_patches * cfg.d_model + horizon * n_future, out)
        self.skip = nn.Linear(lookback + horizon * n_future, out)
        self.head = MonotoneQuantiles(quantiles)

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(past_values=past).last_hidden_state  # (B, C, P, d)
        fut = future.flatten(1)
        raw = self.proj(torch.cat([hidden.flatten(1), fut], dim=1)) + self.skip(torch.cat([past[..., 0], fut], dim=1))
        return self.head(raw.view(-1, self.horizon, self.n_q))
