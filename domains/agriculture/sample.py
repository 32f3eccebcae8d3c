"""Built-in sample data: two real weather stations, a synthetic multi-station generator and a yield generator.

The real stations (Seattle 2012-2015, Champion NE 1982-2018) ship gzipped in ``sample_data/``; see
``sample_data/SOURCES.md`` for their origin and licences. Synthetic weather is for fast tests; the
yield sample is built from weather through the crop-response model documented in :func:`synthetic_yield`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sectorkit.core.errors import ConfigError

SAMPLE_DIR = Path(__file__).parent / "sample_data"
STATIONS = {"seattle": "seattle_weather.csv.gz", "champion": "champion_weather.csv.gz"}


def load_station(name: str) -> pd.DataFrame:
    """One bundled station as a long-format frame ``series_id, date, tmax, tmin, precip`` plus the column only
    that station has (Seattle: ``wind``, m/s; Champion: ``et0``, reference evapotranspiration in mm/day)."""
    if name not in STATIONS:
        raise ConfigError(f"data.stations: unknown station {name!r}; expected one of {sorted(STATIONS)}")
    frame = pd.read_csv(SAMPLE_DIR / STATIONS[name], parse_dates=["date"])
    frame.insert(0, "series_id", name)
    return frame


def sample_weather(stations: list[str] | tuple[str, ...] = ("seattle", "champion")) -> pd.DataFrame:
    """The bundled real stations stacked into one long-format frame (a column a station lacks is NaN there)."""
    return pd.concat([load_station(s) for s in stations], ignore_index=True)


def synthetic_weather(
    n_series: int = 3,
    n_days: int = 3 * 365,
    start: str = "2000-01-01",
    seed: int = 0,
    phi: float = 0.8,
    noise: float = 2.0,
) -> pd.DataFrame:
    """Daily stations with a seasonal cycle plus AR(1) anomalies (planted, forecastable signal).

    ``tmax = mean + amplitude * seasonal(doy) + anomaly``, anomaly ~ AR(1) with coefficient ``phi``;
    ``tmin`` follows ``tmax`` minus a diurnal range; ``precip`` is a gamma-distributed wet-day amount.
    """
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=n_days, freq="D")
    doy = dates.day_of_year.to_numpy()
    season = -np.cos(2 * np.pi * (doy - 15) / 365.25)
    mean = rng.uniform(8, 18, n_series)[:, None]
    amp = rng.uniform(6, 14, n_series)[:, None]
    shocks = rng.normal(0, noise, (n_series, n_days))
    # AR(1) recursion vectorised over series with a linear filter
    from scipy.signal import lfilter

    anomaly = lfilter([1.0], [1.0, -phi], shocks, axis=1)
    tmax = mean + amp * season + anomaly
    tmin = tmax - rng.uniform(6, 10, n_series)[:, None] + rng.normal(0, 1, (n_series, n_days))
    wet = rng.random((n_series, n_days)) < 0.3
    precip = np.where(wet, rng.gamma(0.8, 6.0, (n_series, n_days)), 0.0)
    return pd.DataFrame(
        {
            "series_id": np.repeat([f"station_{i}" for i in range(n_series)], n_days),
            "date": np.tile(dates, n_series),
            "tmax": tmax.ravel().round(2),
            "tmin": tmin.ravel().round(2),
            "precip": precip.ravel().round(2),
        }
    )


def synthetic_season_weather(n_regions: int = 8, years: tuple[int, int] = (1982, 2018), seed: int = 0) -> pd.DataFrame:
    """Daily growing-season weather (1 April - 30 September) per region, with year-to-year anomalies.

    Each region-year gets a temperature offset and a rainfall multiplier (interannual variability is what
    drives yield); daily values add AR(1)-like noise around a seasonal cycle.
    """
    rng = np.random.default_rng(seed)
    year_list = np.arange(years[0], years[1] + 1)
    season_days = pd.date_range("2001-04-01", "2001-09-30", freq="D")
    n_days, n_years = len(season_days), len(year_list)
    doy = season_days.day_of_year.to_numpy()
    cycle = -np.cos(2 * np.pi * (doy - 15) / 365.25)  # (D,)
    region_mean = rng.uniform(18, 26, n_regions)[:, None, None]
    year_offset = rng.normal(0, 1.5, (n_regions, n_years, 1))
    daily = rng.normal(0, 3, (n_regions, n_years, n_days))
    tmax = region_mean + 8 * cycle[None, None, :] + year_offset + daily
    tmin = tmax - 11 + rng.normal(0, 1, tmax.shape)
    rain_mult = rng.lognormal(0, 0.35, (n_regions, n_years, 1))
    wet = rng.random(tmax.shape) < 0.3
    precip = np.where(wet, rng.gamma(0.9, 9.0, tmax.shape), 0.0) * rain_mult
    dates = pd.to_datetime(year_list.astype(str) + "-04-01").to_numpy()[:, None] + np.arange(n_days)[None, :].astype(
        "timedelta64[D]"
    )  # (Y, D)
    return pd.DataFrame(
        {
            "region": np.repeat([f"region_{i}" for i in range(n_regions)], n_years * n_days),
            "date": np.tile(dates.ravel(), n_regions),
            "tmax": tmax.ravel().round(2),
            "tmin": tmin.ravel().round(2),
            "precip": precip.ravel().round(2),
        }
    )


def synthetic_yield(
    weather: pd.DataFrame | None = None, seed: int = 0, noise: float = 0.25, trend: float = 0.08
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Region x year yields (t/ha) from in-season weather through a documented crop-response model.

    ``yield = base_region + trend * (year - first_year)
              + 0.004 * (GDD - mean GDD)                       # growing degree days, base 10 C, cap 30 C
              - 0.09 * (heat_days - mean heat_days)            # days with tmax > 32 C (heat stress)
              + 2.2 * r - 2.5 * r**2, r = rain / 450 - 1        # seasonal rainfall, optimum ~ 460 mm
              + Normal(0, noise)``
    Returns ``(yields, weather)`` with yields ``region, year, yield`` and the daily weather used.
    """
    from sectorkit.domains.agriculture.features import season_aggregates

    weather = synthetic_season_weather(seed=seed) if weather is None else weather
    agg = season_aggregates(weather)
    rng = np.random.default_rng(seed + 1)
    regions = agg["region"].unique()
    base = pd.Series(rng.uniform(7.0, 10.0, len(regions)), index=regions)
    first = agg["year"].min()
    r = agg["rain"] / 450.0 - 1.0
    value = (
        base.reindex(agg["region"]).to_numpy()
        + trend * (agg["year"] - first)
        + 0.004 * (agg["gdd"] - agg["gdd"].mean())
        - 0.09 * (agg["heat_days"] - agg["heat_days"].mean())
        + 2.2 * r
        - 2.5 * r**2
        + rng.normal(0, noise, len(agg))
    )
    yields = pd.DataFrame({"region": agg["region"], "year": agg["year"], "yield": value.round(3)})
    return yields.reset_index(drop=True), weather
