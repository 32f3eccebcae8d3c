"""Yield evaluation protocols: which years each fold's model is fitted on, validated on and tested on.

``last_years``: one fold, the last ``test_years`` years predicted from the years before them. ``expanding_window``:
one fold per year of the last ``test_years``, each predicted from the earlier years only. ``leave_one_year_out``
(the CY-Bench protocol): one fold per year, each predicted from all the other years. With ``val_years > 0`` a fold
sets that many of its training years aside for early stopping: the years just before the test year (last years,
expanding window) or the ones just after it, wrapping round to the first years (leave one year out).

The data module trains one model per fold side by side (:class:`~sectorkit.domains.agriculture.crop_yield.module.
YieldRegressor`); the benchmark refits the yield network per fold (:func:`expanding_window`,
:func:`leave_one_year_out`, no validation years: full-batch AdamW for a fixed number of epochs). Both fit the three
baselines on each fold's years only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from sectorkit.core.errors import DataError
from sectorkit.domains.agriculture.crop_yield.baselines import trend_predictions, yield_baseline_predictions, yield_scores
from sectorkit.domains.agriculture.models.yield_mlp import YieldMLP

PROTOCOLS = ("last_years", "leave_one_year_out", "expanding_window")
MIN_TRAIN_YEARS = 3


@dataclass(frozen=True)
class Fold:
    """One fold: the years its model is fitted on, the years that choose its epoch, the years it predicts."""

    train_years: tuple[int, ...]
    val_years: tuple[int, ...]
    test_years: tuple[int, ...]

    @property
    def history_years(self) -> tuple[int, ...]:
        """Every year the fold may learn from (training and validation): its trend and baselines are fitted on them."""
        return tuple(sorted(self.train_years + self.val_years))

    def to_state(self) -> dict[str, list[int]]:
        """Plain lists, storable in a checkpoint read with ``weights_only=True``."""
        return {"train_years": list(self.train_years), "val_years": list(self.val_years), "test_years": list(self.test_years)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Fold:
        return cls(*(tuple(int(y) for y in state[k]) for k in ("train_years", "val_years", "test_years")))

    def describe(self) -> str:
        """The test years as text (``2014-2018`` for a run of years, else a list)."""
        years = self.test_years
        if len(years) > 1 and list(years) == list(range(years[0], years[-1] + 1)):
            return f"{years[0]}-{years[-1]}"
        return ", ".join(map(str, years))


def make_folds(
    years: Iterable[int], protocol: str, val_years: int, test_years: int, source: str = "yield table"
) -> list[Fold]:
    """The folds of ``protocol`` over the distinct ``years`` (``test_years`` is not used by leave-one-year-out).

    Raises a DataError naming ``source`` when a fold would keep fewer than three training years.
    """
    years = sorted({int(y) for y in years})
    n = len(years)
    tested = 1 if protocol == "leave_one_year_out" else test_years
    if n < val_years + tested + MIN_TRAIN_YEARS:
        raise DataError(
            f"{source}: {n} years; data.protocol={protocol} needs at least "
            f"{'' if protocol == 'leave_one_year_out' else 'test_years + '}val_years + {MIN_TRAIN_YEARS} = "
            f"{val_years + tested + MIN_TRAIN_YEARS}"
        )
    if protocol == "last_years":
        cut = n - test_years
        return [Fold(tuple(years[: cut - val_years]), tuple(years[cut - val_years : cut]), tuple(years[cut:]))]
    if protocol == "expanding_window":
        folds = []
        for i in range(n - test_years, n):
            folds.append(Fold(tuple(years[: i - val_years]), tuple(years[i - val_years : i]), (years[i],)))
        return folds
    if protocol == "leave_one_year_out":
        folds = []
        for i, year in enumerate(years):
            val = tuple(sorted(years[(i + j) % n] for j in range(1, val_years + 1)))
            folds.append(Fold(tuple(y for y in years if y != year and y not in val), val, (year,)))
        return folds
    raise DataError(f"data.protocol={protocol!r}: expected one of {', '.join(PROTOCOLS)}")


def fold_scores(test: pd.DataFrame, folds: Sequence[Fold], predictions: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """NRMSE, RMSE and MAE of each fold's test rows (``test["fold"]``) for every prediction in ``predictions``
    (the model's and each baseline's, aligned with ``test``)."""
    actual = test["yield"].to_numpy(float)
    out = []
    for k, fold in enumerate(folds):
        rows = (test["fold"] == k).to_numpy()
        if not rows.any():
            continue
        scores = {name: yield_scores(np.asarray(pred, float)[rows], actual[rows]) for name, pred in predictions.items()}
        out.append({"fold": k, "test_years": list(fold.test_years), "n": int(rows.sum()), **scores})
    return out


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


def _fold(frame: pd.DataFrame, fold: Fold, features: Sequence[str], seed: int, epochs: int) -> pd.DataFrame:
    train, test = frame[frame["year"].isin(fold.train_years)], frame[frame["year"].isin(fold.test_years)]
    out = test[["region", "year", "yield"]].copy()
    out["predicted"] = fit_predict_yield(train, test, features, seed=seed, epochs=epochs)
    for name, pred in yield_baseline_predictions(train, test).items():
        out[name] = pred
    return out


def expanding_window(
    frame: pd.DataFrame, features: Sequence[str], seed: int = 0, epochs: int = 300, last_years: int = 10
) -> pd.DataFrame:
    """Predict each of the last ``last_years`` years from all earlier years only."""
    folds = make_folds(frame["year"], "expanding_window", val_years=0, test_years=last_years)
    return pd.concat([_fold(frame, fold, features, seed, epochs) for fold in folds], ignore_index=True)


def leave_one_year_out(
    frame: pd.DataFrame, features: Sequence[str], seed: int = 0, epochs: int = 300, last_years: int | None = None
) -> pd.DataFrame:
    """Hold out every year once and fit on all the other years (``last_years`` is ignored)."""
    folds = make_folds(frame["year"], "leave_one_year_out", val_years=0, test_years=1)
    return pd.concat([_fold(frame, fold, features, seed, epochs) for fold in folds], ignore_index=True)
