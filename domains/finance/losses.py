"""Imbalance-aware losses chosen by config: BCE with ``pos_weight`` and sigmoid focal loss."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from sectorkit.core.errors import ConfigError


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = 0.25) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al., 2017), mean over the batch (torchvision is not a dependency)."""
    target = target.float()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.mean()


def classification_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "bce", pos_weight: float | None = None, gamma: float = 2.0, alpha: float | None = 0.25) -> torch.Tensor:
    """``bce`` (optionally with ``pos_weight``) or ``focal``."""
    if kind == "bce":
        weight = None if pos_weight is None else torch.tensor(float(pos_weight), device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=weight)
    if kind == "focal":
        return focal_loss(logits, target, gamma, alpha)
    raise ConfigError(f"model.loss={kind!r}: expected 'bce' or 'focal'")
