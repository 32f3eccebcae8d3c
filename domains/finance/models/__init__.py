"""Fraud-scoring networks: each takes (numeric features, categorical codes) and returns one logit or
anomaly score per transaction."""

from sectorkit.domains.finance.models.autoencoder import TabularAutoencoder
from sectorkit.domains.finance.models.ft_transformer import FTTransformer
from sectorkit.domains.finance.models.mlp import EmbeddingMLP

ARCHITECTURES = {"mlp": EmbeddingMLP, "ft_transformer": FTTransformer, "autoencoder": TabularAutoencoder}

__all__ = ["ARCHITECTURES", "EmbeddingMLP", "FTTransformer", "TabularAutoencoder"]
