"""The full inference path (network, per-series adapter, calibration, unscaling) exports to ONNX with parity."""

from __future__ import annotations

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
