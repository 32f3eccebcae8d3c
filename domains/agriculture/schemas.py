"""Typed configs of the agriculture data and model groups, stored in Hydra's ConfigStore.

Each YAML of ``conf/data`` and ``conf/model`` lists its schema first in ``defaults``: weather data
(``_schema_agriculture_weather``, also behind ``data=synthetic``), yield data (``_schema_agriculture_yield``),
weather forecasters (``_schema_agriculture_forecaster``) and the yield model (``_schema_agriculture_yield_model``).
A misspelt key or a wrongly typed value fails when the config is composed, naming the key; a value outside the
range a field declares (:func:`~sectorkit.core.schema.bounded`) fails before a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore

from sectorkit.core.schema import DataConfig, ModelConfig, bounded, one_of


@dataclass
class SyntheticWeatherConfig:
    """The synthetic stations generator (``sample.synthetic_weather``): seasonal cycle + AR(1) anomalies."""

    n_series: int = bounded(3, 1)
    n_days: int = bounded(1095, 1)
    start: str = "2000-01-01"
    seed: int = 0
    phi: float = 0.8
    noise: float = bounded(2.0, 0.0)


@dataclass
class WeatherDataConfig(DataConfig):
    """``WeatherDataModule``'s arguments: a long daily table (or the bundled / synthetic stations) cut into
    lookback/horizon windows."""

    _target_: str = "sectorkit.domains.agriculture.weather.data.WeatherDataModule"
    problem: str = "weather"
    stations: List[str] = field(default_factory=lambda: ["seattle", "champion"])
    synthetic: SyntheticWeatherConfig = field(default_factory=SyntheticWeatherConfig)
    target: str = "tmax"
    covariates: List[str] = field(default_factory=lambda: ["tmin", "precip"])
    optional_covariates: List[str] = field(default_factory=list)
    id_column: str = "series_id"
    date_column: str = "date"
    date_format: Optional[str] = None  # e.g. "%d/%m/%Y"; null: inferred, and day/month dates that read both ways fail
    lookback: int = bounded(56, 14)
    horizon: int = bounded(7, 1)
    quantiles: List[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])
    split: List[float] = field(default_factory=lambda: [0.6, 0.15])
    fill_gaps: Optional[str] = one_of(None, "interpolate")
    max_gap: int = bounded(3, 0)
    units_column: str = "units"
    expected_units: Optional[str] = "degC"
    valid_range: Optional[List[float]] = field(default_factory=lambda: [-70.0, 60.0])
    balance_series: bool = False
    batch_size: int = bounded(128, 1)
    shard_by_rank: bool = False  # each global rank reads only its block of whole series from the Parquet data.path
    stats_path: Optional[str] = None  # the per-series statistics every rank shares; null: beside the data (or cache_dir)


@dataclass
class SyntheticYieldConfig:
    """The synthetic crop-response sample (``sample.synthetic_yield``)."""

    seed: int = 0
    noise: float = bounded(0.25, 0.0)
    trend: float = 0.08


@dataclass
class YieldDataConfig(DataConfig):
    """``YieldDataModule``'s arguments: region x year yields, optional daily weather and covariates, and the evaluation
    protocol (``protocol``: the folds; ``test_years`` is how many last years are tested by ``last_years`` and
    ``expanding_window``, unused by ``leave_one_year_out``, which tests every year)."""

    _target_: str = "sectorkit.domains.agriculture.crop_yield.data.YieldDataModule"
    problem: str = "yield"
    weather_path: Optional[str] = None
    use_weather: bool = True
    synthetic: SyntheticYieldConfig = field(default_factory=SyntheticYieldConfig)
    region_column: str = "region"
    year_column: str = "year"
    target: str = "yield"
    covariates: List[str] = field(default_factory=list)
    protocol: str = one_of("last_years", "last_years", "leave_one_year_out", "expanding_window")
    val_years: int = bounded(3, 1)
    test_years: int = bounded(5, 1)
    date_format: Optional[str] = None  # of data.weather_path's dates, e.g. "%d/%m/%Y" (see WeatherDataConfig)
    batch_size: int = bounded(32, 1)


@dataclass
class ForecasterConfig(ModelConfig):
    """``WeatherForecaster``'s arguments: the network node and the module's options."""

    _target_: str = "sectorkit.domains.agriculture.weather.module.WeatherForecaster"
    calibrate: bool = True
    recentre: bool = False  # let the interval calibration shift a series' median by its validation bias
    local_lags: int = bounded(14, 0)
    local_covariates: List[str] = field(default_factory=list)
    reference: str = one_of("none", "none", "ridge_ar")
    ridge_combination: float = bounded(0.0, 0.0, 1.0)
    series_embedding: int = bounded(0, 0)
    ensemble: int = bounded(1, 1)


@dataclass
class YieldModelConfig(ModelConfig):
    """``YieldRegressor``'s arguments: the network node."""

    _target_: str = "sectorkit.domains.agriculture.crop_yield.module.YieldRegressor"


def register() -> None:
    """Store the schemas under the names the YAML files' defaults lists use."""
    store = ConfigStore.instance()
    store.store(group="data", name="_schema_agriculture_weather", node=WeatherDataConfig)
    store.store(group="data", name="_schema_agriculture_yield", node=YieldDataConfig)
    store.store(group="model", name="_schema_agriculture_forecaster", node=ForecasterConfig)
    store.store(group="model", name="_schema_agriculture_yield_model", node=YieldModelConfig)
