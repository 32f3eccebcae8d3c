"""Crop-yield baselines: historical average, previous year and per-region linear trend, each fitted on the
training years only (per fold of the evaluation protocol in a run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sectorkit.core.baselines import BaselineResult
from sectorkit.domains.agriculture.metrics import nrmse

if TYPE_CHECKING:
    from sectorkit.domains.agriculture.crop_yield.data import YieldDataModule

YIELD_BASELINES = ("historical_average", "previous_year", "linear_trend")


def yield_baseline_predictions(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, np.ndarray]:
    """Predictions for ``test`` rows (region, year) from ``train`` rows only (regions unseen in train get the
    pooled value). ``previous_year`` uses the latest training year of the region before the test year."""
    pooled = train["yield"].mean()
    mean = train.groupby("region")["yield"].mean()
    hist = test["region"].map(mean).fillna(pooled).to_numpy()
    # previous year: last training observation of the region strictly before the test year
    merged = pd.merge_asof(
        test[["region", "year"]].reset_index().sort_values("year"),
        train[["region", "year", "yield"]].sort_values("year").rename(columns={"year": "prev_year"}),
        left_on="year",
        right_on="prev_year",
        by="region",
        allow_exact_matches=False,
    )
    prev = merged.set_index("index").reindex(test.index)["yield"]
    prev = prev.fillna(test["region"].map(mean)).fillna(pooled).to_numpy()
    trend = trend_predictions(train, test)
    return {"historical_average": hist, "previous_year": prev, "linear_trend": trend}


def trend_predictions(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Per-region OLS line yield ~ year fit on ``train`` and evaluated at ``test`` years (pooled slope when a
    region has fewer than 3 training years)."""
    x = train["year"] - train["year"].mean()
    pooled_slope = float((x * (train["yield"] - train["yield"].mean())).sum() / max((x**2).sum(), 1e-9))
    g = train.assign(x=train["year"]).groupby("region")
    stats = pd.DataFrame({"xm": g["x"].mean(), "ym": g["yield"].mean(), "n": g.size()})
    cov = train.assign(
        dx=train["year"] - train["region"].map(stats["xm"]), dy=train["yield"] - train["region"].map(stats["ym"])
    )
    sxy = (cov["dx"] * cov["dy"]).groupby(cov["region"]).sum()
    sxx = (cov["dx"] ** 2).groupby(cov["region"]).sum()
    stats["slope"] = np.where((stats["n"] >= 3) & (sxx > 0), sxy / sxx.where(sxx > 0, 1), pooled_slope)
    row = stats.reindex(test["region"])
    pred = row["ym"].to_numpy() + row["slope"].to_numpy() * (test["year"].to_numpy() - row["xm"].to_numpy())
    fallback = train["yield"].mean() + pooled_slope * (test["year"].to_numpy() - train["year"].mean())
    return np.where(np.isfinite(pred), pred, fallback)


def yield_scores(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """NRMSE, RMSE and MAE of yield predictions (named as the model's test metrics)."""
    return {
        "nrmse": nrmse(pred, actual),
        "rmse": float(np.sqrt(np.mean((pred - actual) ** 2))),
        "mae": float(np.mean(np.abs(pred - actual))),
    }


def yield_baselines(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, BaselineResult]:
    """Each yield baseline's metrics and predictions on ``test``, fitted on ``train``."""
    actual = test["yield"].to_numpy()
    return {
        name: BaselineResult(yield_scores(pred, actual), predictions=pred)
        for name, pred in yield_baseline_predictions(train, test).items()
    }


def baseline_results(datamodule: YieldDataModule) -> dict[str, BaselineResult]:
    """The baselines hook of the yield problem, under the data's protocol: each fold's baselines are fitted on
    the fold's training and validation years and predict its test years; the metrics pool every fold's test rows
    (the predictions are aligned with ``datamodule.frames["test"]``)."""
    table, test = datamodule.frames["all"], datamodule.frames["test"]
    predictions = {name: np.full(len(test), np.nan) for name in YIELD_BASELINES}
    for k, fold in enumerate(datamodule.folds):
        rows = (test["fold"] == k).to_numpy()
        if rows.any():
            history = table[table["year"].isin(fold.history_years)]
            for name, pred in yield_baseline_predictions(history, test[rows]).items():
                predictions[name][rows] = pred
    actual = test["yield"].to_numpy()
    return {name: BaselineResult(yield_scores(pred, actual), predictions=pred) for name, pred in predictions.items()}
