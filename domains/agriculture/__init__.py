"""Agriculture: daily weather forecasting (quantile, multi-horizon) and seasonal crop-yield forecasting.

The domain holds two problems, each with its own data module, LightningModule, baselines and report
(``weather/`` and ``crop_yield/``); the data preset names its problem in ``data.problem``, which its data module
keeps as ``problem`` and the hooks below dispatch on. Readers, features, metrics, the samples and the networks are
shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sectorkit.core.errors import ConfigError
from sectorkit.core.registry import Domain, lazy

if TYPE_CHECKING:
    from sectorkit.core.baselines import BaselineResult
    from sectorkit.core.reporting import ReportSection, RunContext


@dataclass(frozen=True)
class Problem:
    """One problem of the domain: its baselines hook and its report hook."""

    baselines: Callable[[Any], dict[str, BaselineResult]]
    report: Callable[[RunContext], list[ReportSection]]


PROBLEMS = {
    "weather": Problem(
        baselines=lazy("sectorkit.domains.agriculture.weather.baselines:baseline_results"),
        report=lazy("sectorkit.domains.agriculture.weather.report:build_report"),
    ),
    "yield": Problem(
        baselines=lazy("sectorkit.domains.agriculture.crop_yield.baselines:baseline_results"),
        report=lazy("sectorkit.domains.agriculture.crop_yield.report:build_report"),
    ),
}


def problem_of(datamodule: Any) -> Problem:
    """The problem the run's data module holds (its ``problem``, set from ``data.problem``): the data module, not the
    composed ``cfg.data``, since ``evaluate`` / ``predict`` may rebuild the data a checkpoint recorded."""
    name = getattr(datamodule, "problem", None)
    if name not in PROBLEMS:
        raise ConfigError(f"data.problem={name!r}: expected one of {', '.join(PROBLEMS)}")
    return PROBLEMS[name]


def run_baselines(datamodule: Any, cfg: Any) -> dict[str, BaselineResult]:
    """Each baseline of the run's problem: test metrics (named as the model's) and test-split forecasts."""
    return problem_of(datamodule).baselines(datamodule)


def build_report(ctx: RunContext) -> list[ReportSection]:
    """The report sections (after a test) or the forecast figures (after ``predict``) of the run's problem."""
    return problem_of(ctx.datamodule).report(ctx)


DOMAIN = Domain(
    name="agriculture",
    description="Daily weather forecasting (quantiles, horizons 1..H) and crop-yield forecasting (NRMSE).",
    package=__name__,
    schemas=lazy("sectorkit.domains.agriculture.schemas:register"),
    baselines=run_baselines,
    report=build_report,
)
