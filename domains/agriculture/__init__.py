"""Agriculture: daily weather forecasting (quantile, multi-horizon) and seasonal crop-yield forecasting."""

from __future__ import annotations

from typing import Any

from sectorkit.core.registry import Domain, lazy


def run_baselines(datamodule: Any, cfg: Any) -> dict[str, dict[str, float]]:
    """Test metrics of every baseline on the run's test split (same metric names as the model's)."""
    import pandas as pd

    from sectorkit.domains.agriculture.baselines import evaluate_weather_baselines, evaluate_yield_baselines
    from sectorkit.domains.agriculture.data import YieldDataModule

    if isinstance(datamodule, YieldDataModule):
        history = pd.concat([datamodule.frames["train"], datamodule.frames["val"]])
        return evaluate_yield_baselines(history, datamodule.frames["test"])
    return evaluate_weather_baselines(datamodule.panel, datamodule.origins, datamodule.horizon, datamodule.quantiles)



DOMAIN = Domain(
    name="agriculture",
    description="Daily weather forecasting (quantiles, horizons 1..H) and crop-yield forecasting (NRMSE).",
    package=__name__,
    baselines=run_baselines,
    report=lazy("sectorkit.domains.agriculture.report:build_report"),
)
