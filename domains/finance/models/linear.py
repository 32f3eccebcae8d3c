"""Logistic regression as a network: the ``logistic_regression`` baseline, fitted in closed form, shippable.

The classical linear scorer written as a :class:`~sectorkit.domains.finance.models.base.FraudNetwork`, so it
checkpoints, evaluates, predicts and exports like every finance model (and is a ``model=auto`` candidate). It is
fitted once, before training, with the baseline's own code (``baselines.fit_logistic_model``: the same
preprocessing, scikit-learn's L-BFGS solver, C chosen from the grid by validation AP, the same
``baselines.params.logistic_regression`` options) on the arrays the data module hands over, and the fitted model
is folded into buffers: one weight per standardised numeric feature, one per missing-value indicator, one per
categorical level of the module's vocabulary (the levels the baseline caps into "other" share its weight) and a
bias. No gradient steps: the run takes one epoch, which chooses the alert threshold on validation.

A missing numeric value reaches the network as 0 (the training mean, as for every finance network); in a column
that had missing values in training, an exact 0 is read as missing (the baseline's indicator). So on the same
split the network scores as the baseline does (``tests/core/test_auto.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sectorkit.domains.finance.models.base import FraudNetwork


class LogisticRegression(FraudNetwork):
    """``logit = w . x + m . [x == 0 on columns with missing training values] + sum_j v_j[code_j] + b``."""

    memory_bank = True  # fitted in closed form before training: no optimizer, no gradient steps

    def __init__(self, n_numeric: int, cardinalities: Sequence[int], params: dict[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__()
        self.params, self.seed = dict(params or {}), int(seed)
        self.cardinalities = [int(c) for c in cardinalities]
        self.register_buffer("weight", torch.zeros(int(n_numeric)))
        self.register_buffer("missing_weight", torch.zeros(int(n_numeric)))
        self.register_buffer("has_missing", torch.zeros(int(n_numeric), dtype=torch.bool))
        self.register_buffer("level_weight", torch.zeros(sum(self.cardinalities)))
        self.register_buffer("offsets", torch.tensor(np.cumsum([0, *self.cardinalities[:-1]]), dtype=torch.long))
        self.register_buffer("bias", torch.zeros(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.regularisation: float | None = None  # the C chosen on validation (for the log)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        logit = numeric @ self.weight + ((numeric == 0) & self.has_missing).to(numeric.dtype) @ self.missing_weight + self.bias
        if self.cardinalities:
            logit = logit + self.level_weight[categorical + self.offsets].sum(-1)
        return logit

    def fit(self, arrays: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Fit from the data module's ``arrays(split, keep_missing=True)`` (train, and valid for C), once: a loaded
        checkpoint keeps its fitted weights."""
        if bool(self.fitted):
            return
        from sectorkit.domains.finance.baselines import LOGISTIC_DEFAULTS, cap_levels, fit_logistic_model, split_options

        x, c, y = arrays("train", keep_missing=True)
        xv, cv, yv = arrays("valid", keep_missing=True)
        max_levels = int(split_options(self.params, LOGISTIC_DEFAULTS)[0]["max_levels"])
        # every code of each column's vocabulary, capped as the baseline caps the training codes
        table = (
            np.stack([np.minimum(np.arange(max(self.cardinalities, default=1)), n - 1) for n in self.cardinalities], axis=1)
            if self.cardinalities
            else np.zeros((1, 0), np.int64)
        )
        c_train, (c_valid, capped_table) = cap_levels(c, [cv, table], max_levels)
        prepare, model = fit_logistic_model((x, c_train, y), (xv, c_valid, yv), self.seed, self.params)
        self.load_fitted(prepare, model, capped_table)
        self.regularisation = float(model.C)

    def load_fitted(self, prepare: Any, model: Any, capped_table: np.ndarray) -> None:
        """Fold the fitted imputer, scaler, one-hot encoder and coefficients into the buffers."""
        coef, intercept = np.asarray(model.coef_, np.float64).reshape(-1), float(np.asarray(model.intercept_).reshape(-1)[0])
        imputer, scaler = prepare.named_transformers_["num"].steps[0][1], prepare.named_transformers_["num"].steps[1][1]
        n = self.weight.numel()
        fill = np.nan_to_num(np.asarray(imputer.statistics_, np.float64))
        flagged = list(imputer.indicator_.features_) if imputer.indicator_ is not None else []
        mean, scale = np.asarray(scaler.mean_, np.float64), np.asarray(scaler.scale_, np.float64)
        w = coef[:n] / scale[:n]
        weight, bias = w.copy(), intercept - float(np.sum(coef[: n + len(flagged)] * mean[: n + len(flagged)] / scale[: n + len(flagged)]))
        missing = np.zeros(n)
        for k, j in enumerate(flagged):  # a missing value: the imputed fill instead of the network's 0, plus the indicator
            missing[j] = w[j] * fill[j] + coef[n + k] / scale[n + k]
        start = n + len(flagged)
        levels = np.zeros(sum(self.cardinalities))
        if self.cardinalities:
            encoder = prepare.named_transformers_["cat"]
            at = 0
            for j, (size, categories) in enumerate(zip(self.cardinalities, encoder.categories_)):
                lookup = dict(zip(categories.tolist(), coef[start : start + len(categories)]))
                levels[at : at + size] = [lookup.get(int(v), 0.0) for v in capped_table[:size, j]]  # unseen in training: no column
                start, at = start + len(categories), at + size
        self.weight.copy_(torch.as_tensor(weight))
        self.missing_weight.copy_(torch.as_tensor(missing))
        self.has_missing.copy_(torch.as_tensor(np.isin(np.arange(n), flagged)))
        self.level_weight.copy_(torch.as_tensor(levels))
        self.bias.fill_(bias)
        self.fitted.fill_(True)
