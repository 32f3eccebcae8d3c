"""Interval calibration on the validation span: per series, the interval rule with the lowest cross-fitted
pinball loss.

A calibrated forecast is ``(1 - w) (z + calibration) + w (median + band)`` for the network's scaled quantiles
``z``. :data:`CANDIDATES` are the rules a series may get: the raw network quantiles, the network quantiles
shifted by their validation residual quantiles (split-conformal style), the median plus the quantiles of the
median's validation errors (the baselines' recipe: the band), and the quantile average of the raw quantiles and
that band; the two band rules also recentred, i.e. centred on the median plus the median of its validation
errors (a per-series, per-horizon bias correction, the only rules that move the median). Each series gets the
rule with the lowest pinball when fitted on one chronological half of its validation windows and scored on the
other, both ways, refitted on the whole span: an in-sample comparison would favour the rules fitted on the very
errors they are scored on. The weather module selects among :data:`KEEP_MEDIAN` (the point forecast stays the
network's) unless ``model.recentre=true``: cross-fitting within one span cannot tell whether a validation bias
persists after it, and on the development suite's weather sets a selection that could recentre, fitted on the
earlier half of each validation span, did no better on the later half than one that could not, and worse at one
station (``benchmarks/agriculture_calibration_forward.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sectorkit.domains.agriculture.metrics import pinball_loss

# rule: (network quantiles shifted by their residual quantiles?, weight w of the band, band recentred?)
CANDIDATES = {
    "none": (False, 0.0, False),
    "learned": (True, 0.0, False),
    "band": (False, 1.0, False),
    "blend": (False, 0.5, False),
    "band_recentred": (False, 1.0, True),
    "blend_recentred": (False, 0.5, True),
}
FALLBACK = "learned"  # for a series with too few validation windows to cross-fit
# the rules that leave the median where the network put it: what the module selects among unless ``recentre``
KEEP_MEDIAN = tuple(rule for rule, (_, _, recentred) in CANDIDATES.items() if not recentred)


def with_intervals(
    z: torch.Tensor, calibration: torch.Tensor, band: torch.Tensor, band_weight: torch.Tensor, quantiles: Sequence[float]
) -> torch.Tensor:
    """The calibrated forecast ``(1 - w) (z + calibration) + w (median + band)`` for network quantiles
    ``z (B, H, Q)`` and each window's offsets ``calibration``/``band (B, H, Q)`` and weight ``w (B,)``."""
    median = z[..., list(quantiles).index(0.5)].unsqueeze(-1)
    weight = band_weight[:, None, None]
    return (1 - weight) * (z + calibration) + weight * (median + band)


def conformal_offsets(
    series: torch.Tensor, residuals: torch.Tensor, quantiles: Sequence[float], n_series: int, keep_median: bool = False
) -> torch.Tensor:
    """Per series and horizon, the q-quantile of ``target - prediction_q`` for each quantile q (0 for the median
    unless ``keep_median``, and for series without validation windows). ``residuals (N, H, Q)``, returns
    ``(S, H, Q)``."""
    out = torch.zeros(n_series, residuals.shape[1], residuals.shape[2], device=residuals.device)
    q = torch.as_tensor(quantiles, device=residuals.device)
    median = list(quantiles).index(0.5)
    for s in torch.unique(series).tolist():
        r = residuals[series == s]  # (n, H, Q)
        offsets = torch.stack([torch.quantile(r[..., j], q[j], dim=0) for j in range(len(quantiles))], dim=-1)
        if not keep_median:
            offsets[..., median] = 0.0
        out[s] = offsets
    return out


def median_band(series: torch.Tensor, residuals: torch.Tensor, quantiles: Sequence[float], n_series: int) -> torch.Tensor:
    """Per series and horizon, the quantiles of the median's residuals ``(S, H, Q)`` (their median included)."""
    median = list(quantiles).index(0.5)
    median_residuals = residuals[..., median : median + 1].expand_as(residuals).contiguous()
    return conformal_offsets(series, median_residuals, quantiles, n_series, keep_median=True)


def rule_band(band: torch.Tensor, recentred: bool, median: int) -> torch.Tensor:
    """A series' band ``(H, Q)`` as a rule uses it: centred on the median's median validation error when
    ``recentred``, else on the median itself (its median offset zeroed)."""
    if recentred:
        return band
    band = band.clone()
    band[..., median] = 0.0
    return band


def rule_pinball(residuals: torch.Tensor, learned: torch.Tensor, band: torch.Tensor, rule: str,
                 quantiles: Sequence[float]) -> float:
    """Mean pinball loss (scaled units) of one rule on windows with ``residuals (N, H, Q)``, given one series'
    offsets ``learned``/``band (H, Q)`` (``band`` with its median offset)."""
    shifted, weight, recentred = CANDIDATES[rule]
    median = list(quantiles).index(0.5)
    diff = (1 - weight) * (residuals - (learned if shifted else 0.0)) + weight * (
        residuals[..., median : median + 1] - rule_band(band, recentred, median)
    )
    return pinball_loss(-diff, diff.new_zeros(diff.shape[:-1]), quantiles).mean().item()  # diff = target - forecast


def cross_fitted_rule(residuals: torch.Tensor, quantiles: Sequence[float], rules: Sequence[str] = tuple(CANDIDATES)) -> str:
    """The rule of ``rules`` with the lowest pinball when fitted on one chronological half of a series' validation
    windows (``residuals`` in time order) and scored on the other, both ways; :data:`FALLBACK` below four windows."""
    half = len(residuals) // 2
    if half < 2:
        return FALLBACK
    folds = ((residuals[:half], residuals[half:]), (residuals[half:], residuals[:half]))
    scores = dict.fromkeys(rules, 0.0)
    for fit, held_out in folds:
        one = torch.zeros(len(fit), dtype=torch.long, device=fit.device)
        learned = conformal_offsets(one, fit, quantiles, 1)[0]
        band = median_band(one, fit, quantiles, 1)[0]
        for rule in rules:
            scores[rule] += rule_pinball(held_out, learned, band, rule, quantiles)
    return min(scores, key=scores.get)


def rule_offsets(
    rules: Sequence[str], series: torch.Tensor, residuals: torch.Tensor, quantiles: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(calibration (S, H, Q), band (S, H, Q), band_weight (S,))`` of ``rules[s]`` for each series ``s``, fitted
    on the validation ``residuals (N, H, Q)`` of the windows of ``series (N,)``."""
    median = list(quantiles).index(0.5)
    learned = conformal_offsets(series, residuals, quantiles, len(rules))
    band = median_band(series, residuals, quantiles, len(rules))
    calibration = torch.zeros_like(learned)
    band_weight = torch.zeros(len(rules), device=residuals.device)
    for s, rule in enumerate(rules):
        shifted, band_weight[s], recentred = CANDIDATES[rule]
        if shifted:
            calibration[s] = learned[s]
        band[s] = rule_band(band[s], recentred, median)
    return calibration, band, band_weight


def fit_intervals(
    series: torch.Tensor, residuals: torch.Tensor, origins: torch.Tensor, quantiles: Sequence[float], n_series: int,
    rules: Sequence[str] = tuple(CANDIDATES),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each series' cross-fitted rule among ``rules``, refitted on all its validation windows: ``(calibration,
    band, band_weight)``.

    ``residuals (N, H, Q)`` = scaled target minus each scaled quantile; ``origins (N,)`` orders each series'
    windows in time. The weather module passes :data:`KEEP_MEDIAN` unless ``model.recentre=true``.
    """
    chosen = [FALLBACK] * n_series
    for s in torch.unique(series).tolist():
        rows = torch.nonzero(series == s).flatten()
        rows = rows[torch.argsort(origins[rows], stable=True)]
        chosen[s] = cross_fitted_rule(residuals[rows], quantiles, rules)
    return rule_offsets(chosen, series, residuals, quantiles)
