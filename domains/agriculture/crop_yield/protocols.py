"""Yield evaluation protocols with one refit per fold: expanding window (predict year t from years < t only)
and leave-one-year-out (the CY-Bench protocol). Each fold fits the yield network (full-batch AdamW, a few
hundred rows) and the three baselines on the fold's training years only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from sectorkit.domains.agriculture.crop_yield.baselines import trend_predictions, yield_baseline_predictions
from sectorkit.domains.agriculture.models.yield_mlp import YieldMLP


def fit_predict_yield(
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: Sequence[str],
    seed: int = 0,
    epochs: int = 300,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    hidden: int = 64,
    residual_on_trend: bool = True,
) -> np.ndarray:
    """Fit :class:`YieldMLP` on ``train`` and predict ``test`` (features standardised on ``train``)."""
    torch.manual_seed(seed)
    center = train["year"].mean()

    def design(frame: pd.DataFrame) -> np.ndarray:
        return np.column_stack([frame[c].to_numpy(float) for c in features] + [frame["year"].to_numpy(float) - center])

    x_train, x_test = design(train), design(test)
    mean, std = x_train.mean(0), np.maximum(x_train.std(0), 1e-6)
    y_mean, y_std = train["yield"].mean(), max(train["yield"].std(), 1e-6)
    trend_train = (trend_predictions(train, train) - y_mean) / y_std
    trend_test = (trend_predictions(train, test) - y_mean) / y_std
    tensor = lambda a: torch.as_tensor(np.array(a, dtype=np.float32))  # noqa: E731
    xt, tt, yt = tensor((x_train - mean) / std), tensor(trend_train), tensor((train["yield"] - y_mean) / y_std)
    net = YieldMLP(x_train.shape[1], hidden=hidden, residual_on_trend=residual_on_trend)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(xt, tt), yt)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        z = net(tensor((x_test - mean) / std), tensor(trend_test)).numpy()
    return z * y_std + y_mean


def _fold(
    frame: pd.DataFrame, train_mask: pd.Series, test_mask: pd.Series, features: Sequence[str], seed: int, epochs: int
) -> pd.DataFrame:
    train, test = frame[train_mask], frame[test_mask]
    out = test[["region", "year", "yield"]].copy()
    out["predicted"] = fit_predict_yield(train, test, features, seed=seed, epochs=epochs)
    for name, pred in yield_baseline_predictions(train, test).items():
        out[name] = pred
    return out


def expanding_window(
    frame: pd.DataFrame, features: Sequence[str], seed: int = 0, epochs: int = 300, last_years: int = 10
) -> pd.DataFrame:
    """Predict each of the last ``last_years`` years from all earlier years only."""
    years = np.sort(frame["year"].unique())[-last_years:]
    return pd.concat(
        [_fold(frame, frame["year"] < y, frame["year"] == y, features, seed, epochs) for y in years], ignore_index=True
    )


def leave_one_year_out(
    frame: pd.DataFrame, features: Sequence[str], seed: int = 0, epochs: int = 300, last_years: int | None = None
) -> pd.DataFrame:
    """Hold out every year once and fit on all the other years (``last_years`` is ignored)."""
    years = np.sort(frame["year"].unique())
    return pd.concat(
        [_fold(frame, frame["year"] != y, frame["year"] == y, features, seed, epochs) for y in years], ignore_index=True
    )
