"""The exported weather graph: raw windows in the user's units in, quantile forecasts in the same units out.

The window scaling of :func:`~sectorkit.domains.agriculture.weather.windows.build_panel` is a pure function of the
window, its series and its dates, so it travels inside the graph: per-series location/scale, which covariates each
series had, and the day-of-year climatology are buffers; the day of year of every window and horizon day is computed
from the origin's date in the graph.
"""

from __future__ import annotations

import math

import torch

from sectorkit.domains.agriculture.weather.windows import SeriesStats

UNIX_TO_CIVIL = 719468  # days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar


def day_of_year(days: torch.Tensor) -> torch.Tensor:
    """Day of year (1..366) of ``days`` since 1970-01-01 (int64), in integer tensor operations an ONNX graph runs
    (H. Hinnant's ``civil_from_days``; every quotient is of non-negative numbers, so for dates from year 0 on)."""
    z = days + UNIX_TO_CIVIL
    era = z // 146097
    day_of_era = z - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    from_march = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)  # 0 = 1 March
    january_or_february = (5 * from_march + 2) // 153 >= 10
    year = year_of_era + era * 400 + january_or_february.long()
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    return torch.where(january_or_february, from_march - 305, from_march + 60 + leap.long())


class RawWindowModel(torch.nn.Module):
    """``model`` (a :class:`~sectorkit.domains.agriculture.weather.module.WeatherForecaster`) behind the window scaling.

    ``forward(values, series, origin_date)``: ``values`` (batch, lookback, columns) float32, the target then the
    covariates in the user's units, oldest day first (NaN only where the series had no such covariate in training);
    ``series`` (batch,) int64, the position in the fitted series ids; ``origin_date`` (batch,) int64, the date of the
    window's last day as days since 1970-01-01. Returns the quantiles (batch, horizon, quantiles) in the target's units.
    """

    def __init__(self, model: torch.nn.Module, stats: SeriesStats, lookback: int, horizon: int) -> None:
        super().__init__()
        self.model, self.lookback, self.horizon = model, int(lookback), int(horizon)
        self.register_buffer("loc", torch.as_tensor(stats.loc, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(stats.scale, dtype=torch.float32))
        self.register_buffer("present", torch.as_tensor(stats.columns_present(), dtype=torch.bool))
        self.register_buffer("climatology", torch.as_tensor(stats.clim, dtype=torch.float32))
        self.register_buffer("offsets", torch.arange(-self.lookback + 1, self.horizon + 1))

    def forward(self, values: torch.Tensor, series: torch.Tensor, origin_date: torch.Tensor) -> torch.Tensor:
        loc, scale = self.loc[series], self.scale[series]  # (batch, columns)
        scaled = (values - loc[:, None, :]) / scale[:, None, :]
        z = torch.where(self.present[series][:, None, :], scaled, torch.zeros_like(scaled))
        doy = day_of_year(origin_date[:, None] + self.offsets[None, :])  # (batch, lookback + horizon)
        climatology = torch.gather(self.climatology[series], 1, doy - 1)
        climatology_z = (climatology - loc[:, :1]) / scale[:, :1]
        angle = (doy - 1).float() * (2 * math.pi / 365.25)
        known = torch.stack([climatology_z, torch.sin(angle), torch.cos(angle)], dim=-1)  # (batch, lookback + horizon, 3)
        past = torch.cat([z, known[:, : self.lookback]], dim=-1)
        return self.model(past, known[:, self.lookback :], loc[:, 0], scale[:, 0], series)
