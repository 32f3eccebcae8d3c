"""The full inference path (network, per-series adapter, calibration, unscaling) exports to ONNX with parity."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch

from agriculture_nets import net
from sectorkit.domains.agriculture.weather.data import WeatherDataModule
from sectorkit.domains.agriculture.weather.module import WeatherForecaster

ort = pytest.importorskip("onnxruntime")
NAMES = ["past", "future", "loc", "scale", "series"]


@pytest.mark.parametrize(
    ("network", "options"),
    [("gru", {}), ("dlinear", {}), ("nhits", {}), ("gru", {"reference": "ridge_ar", "ensemble": 2}),
     ("gru", {"series_embedding": 3}), ("gru", {"ridge_combination": 0.25})],
)
def test_onnx_export_matches_torch(tmp_path, network, options):
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 400}, lookback=28, batch_size=16)
    dm.setup("fit")
    module = WeatherForecaster(net=net(network), **dm.model_kwargs(), **options).eval()
    if module.reference is not None:  # a non-trivial reference so the export must carry it
        module.reference.weight.normal_(std=0.1)
    module.calibration.normal_()  # non-trivial calibration so the export must carry it
    module.band.normal_()
    module.band_weight[1] = 0.5  # one series on the blend of network quantiles and band
    batch = next(iter(dm.test_dataloader()))
    inputs = module.batch_inputs(batch)
    path = tmp_path / f"{network}.onnx"
    torch.onnx.export(module, inputs, str(path), input_names=NAMES, output_names=["quantiles"],
                      dynamic_axes={n: {0: "batch"} for n in NAMES}, dynamo=False)
    session = ort.InferenceSession(str(path))
    half = {n: t[:5].numpy() for n, t in zip(NAMES, inputs, strict=True)}  # a different batch size than traced
    got = session.run(None, half)[0]
    with torch.no_grad():
        expected = module(*(t[:5] for t in inputs)).numpy()
    assert np.allclose(got, expected, atol=1e-4)


def test_yield_fold_ensemble_exports_with_each_rows_fold():
    """One network per fold in one graph: the exported model picks each row's fold (the mean for fold -1)."""
    from sectorkit.domains.agriculture.crop_yield.module import YieldRegressor

    torch.manual_seed(0)
    module = YieldRegressor(net={"_target_": "sectorkit.domains.agriculture.models.yield_mlp.YieldMLP", "hidden": 8},
                            n_features=4, y_mean=[9.0, 10.0, 11.0], y_std=[1.0, 2.0, 1.5], folds=3).eval()
    features, trend, fold = torch.randn(8, 3, 4), 9 + torch.randn(8, 3), torch.tensor([0, 1, 2, -1, 2, 1, 0, -1])
    names = ["features", "trend", "fold"]
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/yield.onnx"
        torch.onnx.export(module, (features, trend, fold), path, input_names=names, output_names=["yield"],
                          dynamic_axes={n: {0: "batch"} for n in names}, dynamo=False)
        got = ort.InferenceSession(path).run(None, {"features": features[:5].numpy(), "trend": trend[:5].numpy(),
                                                    "fold": fold[:5].numpy()})[0]
    with torch.no_grad():
        expected = module(features[:5], trend[:5], fold[:5]).numpy()
    assert np.allclose(got, expected, atol=1e-5) and not np.allclose(expected[0], expected[3])
