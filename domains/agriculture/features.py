"""Calendar features, day-of-year climatology and in-season aggregates for yield models."""

from __future__ import annotations

import numpy as np
import pandas as pd

GDD_BASE, GDD_CAP, HEAT_THRESHOLD = 10.0, 30.0, 32.0
SEASON_MONTHS = (4, 9)  # the growing season the yield features cover: April to September


def doy_features(dates: np.ndarray | pd.DatetimeIndex) -> np.ndarray:
    """Day-of-year as ``(sin, cos)`` on the annual circle, shape ``(n, 2)``; known arbitrarily far ahead."""
    doy = pd.DatetimeIndex(dates).day_of_year.to_numpy()
    angle = 2 * np.pi * (doy - 1) / 365.25
    return np.stack([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)


def fit_climatology(values: np.ndarray, doy: np.ndarray, n_harmonics: int = 3) -> np.ndarray:
    """Smooth day-of-year mean (least-squares Fourier fit with ``n_harmonics``); returns 366 daily values.

    A harmonic fit is used instead of raw per-day means so that four training years still give a smooth,
    unbiased seasonal curve.
    """

    def design(d: np.ndarray) -> np.ndarray:
        angle = 2 * np.pi * (d - 1) / 365.25
        cols = [np.ones_like(angle)]
        for k in range(1, n_harmonics + 1):
            cols += [np.sin(k * angle), np.cos(k * angle)]
        return np.stack(cols, axis=1)

    ok = np.isfinite(values)
    coef, *_ = np.linalg.lstsq(design(doy[ok].astype(float)), values[ok], rcond=None)
    return design(np.arange(1, 367, dtype=float)) @ coef


def season_aggregates(
    weather: pd.DataFrame,
    region_col: str = "region",
    start_month: int = SEASON_MONTHS[0],
    end_month: int = SEASON_MONTHS[1],
) -> pd.DataFrame:
    """Per region-year growing-season aggregates from daily ``tmax, tmin, precip``.

    ``gdd``: sum of max(0, min(tmean, 30) - 10); ``heat_days``: days with tmax > 32 C; ``rain``: total mm;
    plus monthly mean tmax and monthly rain (``tmax_m4`` ... ``rain_m9``) as a coarse in-season sequence.
    """
    frame = weather.copy()
    frame["date"] = pd.to_datetime(frame["date"])
    month = frame["date"].dt.month
    frame = frame[(month >= start_month) & (month <= end_month)]
    frame = frame.assign(
        year=frame["date"].dt.year,
        month=frame["date"].dt.month,
        gdd=np.clip(np.minimum((frame["tmax"] + frame["tmin"]) / 2, GDD_CAP) - GDD_BASE, 0, None),
        heat_days=(frame["tmax"] > HEAT_THRESHOLD).astype(float),
    )
    keys = [region_col, "year"]
    season = frame.groupby(keys, sort=True).agg(
        gdd=("gdd", "sum"), heat_days=("heat_days", "sum"), rain=("precip", "sum"), tmax_mean=("tmax", "mean")
    )
    monthly = frame.groupby([*keys, "month"]).agg(tmax=("tmax", "mean"), rain=("precip", "sum")).unstack("month")
    monthly.columns = [f"{name}_m{m}" for name, m in monthly.columns]
    out = season.join(monthly).reset_index()
    return out.rename(columns={region_col: "region"})
