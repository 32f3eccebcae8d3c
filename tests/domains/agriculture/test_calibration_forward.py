"""The weather interval calibration keeps the median unless ``model.recentre=true``: a validation-span bias that
the recentred rules would carry into the forecasts does not move the shipped point forecast by default."""

from __future__ import annotations

import torch
from agriculture_nets import net
from sectorkit.core.config import compose_config
from sectorkit.domains.agriculture import DOMAIN
from sectorkit.domains.agriculture.weather.intervals import CANDIDATES, KEEP_MEDIAN, fit_intervals
from sectorkit.domains.agriculture.weather.module import WeatherForecaster

Q = (0.1, 0.5, 0.9)


def biased_outputs(n: int = 400, bias: float = 1.5) -> dict[str, torch.Tensor]:
    """Validation residuals of two series: series 0's median ``bias`` too low on every window (widths right),
    series 1 unbiased."""
    torch.manual_seed(0)
    spread = torch.tensor([-1.28, 0.0, 1.28])
    residuals = torch.cat([torch.randn(n, 3, 1) + bias - spread, torch.randn(n, 3, 1) - spread])
    series = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    return {"series": series, "residuals": residuals, "origin": torch.arange(2 * n) % n}


def test_keep_median_rules_are_the_ones_that_do_not_recentre():
    assert set(KEEP_MEDIAN) == {rule for rule, (_, _, recentred) in CANDIDATES.items() if not recentred}
    assert "band_recentred" not in KEEP_MEDIAN and "band_recentred" in CANDIDATES and "band" in KEEP_MEDIAN


def test_default_calibration_leaves_a_biased_median_where_the_network_put_it():
    """Fitted among every rule, the biased series gets a recentred band that shifts its median by ~1.5; among
    the rules that keep the median (the module's default) no offset touches the median of either series."""
    out = biased_outputs()
    _, band, weight = fit_intervals(out["series"], out["residuals"], out["origin"], Q, 2, tuple(CANDIDATES))
    assert weight[0] > 0 and torch.allclose(band[0, :, 1], torch.full((3,), 1.5), atol=0.2)
    calibration, band, weight = fit_intervals(out["series"], out["residuals"], out["origin"], Q, 2, KEEP_MEDIAN)
    assert (band[..., 1] == 0).all() and (calibration[..., 1] == 0).all()

    module = WeatherForecaster(net=net("gru", hidden=8), n_series=2, lookback=16, horizon=3, n_past=3, n_future=3,
                               quantiles=Q, local_lags=0).eval()
    assert module.hparams.recentre is False and module.calibration_rules == KEEP_MEDIAN
    module.calibrate(out)
    past, future = torch.randn(6, 16, 3), torch.randn(6, 3, 3)
    loc, scale, series = torch.zeros(6), torch.full((6,), 2.0), torch.tensor([0, 0, 0, 1, 1, 1])
    with torch.no_grad():
        raw = module.network_output(past, future, series) * 2.0
        calibrated = module(past, future, loc, scale, series)
    assert torch.allclose(calibrated[..., 1], raw[..., 1], atol=1e-5)  # the point forecast is the network's
    assert not torch.allclose(calibrated[..., 0], raw[..., 0])  # the intervals are still calibrated

    recentring = WeatherForecaster(net=net("gru", hidden=8), n_series=2, lookback=16, horizon=3, n_past=3, n_future=3,
                                   quantiles=Q, local_lags=0, recentre=True).eval()
    recentring.load_state_dict(module.state_dict())
    recentring.calibrate(out)
    with torch.no_grad():
        moved = recentring(past, future, loc, scale, series)
    shift = (moved[..., 1] - raw[..., 1])[:3]  # series 0, in data units: 2 x the scaled bias of ~1.5
    assert torch.allclose(shift, torch.full_like(shift, 3.0), atol=0.4)


def test_recentre_is_a_model_option_off_by_default():
    assert compose_config(DOMAIN, ["domain=agriculture"]).model.recentre is False
    assert compose_config(DOMAIN, ["domain=agriculture", "model=ridge_ar", "model.recentre=true"]).model.recentre is True
