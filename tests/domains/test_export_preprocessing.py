"""Exported graphs take the user's raw inputs: the row-wise preprocessing (image scaling and resizing, window scaling,
id lookup and top-K) is inside the graph, agrees with the data module's own, and the parity check runs on raw inputs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from sectorkit.core.errors import SectorkitError
from sectorkit.core.export import ExportGraph, export_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _contract(session) -> dict:
    return json.loads(session.get_modelmeta().custom_metadata_map["input_contract"])


# --- healthcare ----------------------------------------------------------------------------------
def _loader_image(image: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """What the data module's MONAI chain makes of one in-memory raw image (channels first)."""
    from monai.transforms import Compose

    from sectorkit.domains.healthcare.transforms import deterministic_transforms

    chain = Compose(deterministic_transforms(size, 2, channels, nan_policy="zero"))
    return torch.as_tensor(chain({"image": image, "mask": None, "label": 0, "name": "raw"})["image"])


@pytest.mark.parametrize("channels", [1, 3])
def test_image_preprocessing_in_the_graph_is_the_loaders(channels) -> None:
    from sectorkit.domains.healthcare.transforms import ImagePreprocessing

    rng = np.random.default_rng(0)
    step = ImagePreprocessing(32, 2, channels)
    cases = [rng.uniform(-20, 4000, (1, 50, 70)), rng.uniform(0, 255, (3 if channels == 1 else channels, 17, 23)),
             rng.uniform(0, 1, (1, 32, 32)), np.full((1, 40, 40), 7.0)]
    with_nan = rng.uniform(0, 9, (1, 45, 33))
    with_nan[0, 3, 4] = np.nan
    for image in [*cases, with_nan]:
        image = image.astype(np.float32)
        want = _loader_image(image, 32, channels)
        got = step(torch.as_tensor(image)[None])[0]
        assert got.shape == (channels, 32, 32)
        torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)


def test_healthcare_export_takes_raw_images_of_any_size(tmp_path) -> None:
    from sectorkit.domains.healthcare.data import HealthcareDataModule
    from sectorkit.domains.healthcare.module import AnomalyDetector

    torch.manual_seed(0)
    dm = HealthcareDataModule(image_size=32, sample={"n_train": 4, "n_val": 4, "n_test": 6}, batch_size=4)
    dm.setup("test")
    net = {"_target_": "sectorkit.domains.healthcare.models.autoencoder.AutoEncoderDetector", "channels": [8, 16], "strides": [2, 2]}
    model = AnomalyDetector(net=net, **dm.model_kwargs()).eval()
    batch = dm.example_batch()
    report = export_model(model, batch, tmp_path / "m.onnx", "onnx", {"input_contract": dm.export_contract()}, graph=dm.export_graph(model, batch))
    assert report["passed"] and report["preprocessing_parity"]["passed"] and report["checks"][0]["inputs"]["images"][2:] == [48, 48]
    session = _session(tmp_path / "m.onnx")
    assert [i.name for i in session.get_inputs()] == ["images"] and "in_graph" in _contract(session)["images"]
    raw = np.random.default_rng(1).uniform(0, 255, (2, 3, 90, 61)).astype(np.float32)  # RGB, another size and range
    got = session.run(None, {"images": raw})
    with torch.inference_mode():
        want = model(torch.stack([_loader_image(image, 32, 1) for image in raw]))
    np.testing.assert_allclose(got[0], want[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(got[1], want[1].numpy(), atol=1e-4)
    assert got[1].shape == (2, 1, 32, 32)


# --- agriculture (weather) ----------------------------------------------------------------------------
def test_day_of_year_in_the_graph_matches_the_calendar() -> None:
    from sectorkit.domains.agriculture.weather.export import day_of_year

    dates = pd.date_range("1899-12-25", "2101-01-05")
    days = torch.as_tensor(dates.to_numpy().astype("datetime64[D]").astype(np.int64))
    assert np.array_equal(day_of_year(days).numpy(), dates.day_of_year.to_numpy())


def test_weather_export_takes_raw_windows_and_forecasts_in_the_users_units(tmp_path, monkeypatch) -> None:
    from sectorkit.domains.agriculture.weather.data import WeatherDataModule
    from sectorkit.domains.agriculture.weather.module import WeatherForecaster

    torch.manual_seed(0)
    dm = WeatherDataModule(stations=["synthetic"], synthetic={"n_series": 2, "n_days": 400}, lookback=28, batch_size=16)
    dm.setup("fit")
    model = WeatherForecaster(net={"_target_": "sectorkit.domains.agriculture.models.gru.GRUForecaster"}, **dm.model_kwargs()).eval()
    model.calibration.normal_()  # per-series terms the graph must index with the series input
    batch = next(iter(dm.test_dataloader()))
    report = export_model(model, batch, tmp_path / "w.onnx", "onnx", {"input_contract": dm.export_contract()}, graph=dm.export_graph(model, batch))
    assert report["passed"] and report["preprocessing_parity"]["passed"]
    session = _session(tmp_path / "w.onnx")
    assert [i.name for i in session.get_inputs()] == ["values", "series", "origin_date"]
    contract = _contract(session)
    assert contract["values"]["columns"] == [dm.target, *dm.inputs] and contract["series_ids"] == list(dm.stats.series)

    # predict's forecast from the end of every series, against the graph fed the raw table's last days
    frame = dm.load_frame(dm.lookback)
    dm.setup("predict")
    with torch.inference_mode():
        want = torch.cat([model(*model.batch_inputs(b)) for b in dm.predict_dataloader()]).numpy()
    tails = [group.tail(dm.lookback) for _, group in frame.groupby("series_id", sort=False)]
    feeds = {"values": np.stack([t[contract["columns_order"]].to_numpy(np.float32) for t in tails]),
             "series": np.array([contract["series_ids"].index(str(t["series_id"].iloc[0])) for t in tails], dtype=np.int64),
             "origin_date": np.array([t["date"].iloc[-1].to_datetime64().astype("datetime64[D]").astype(np.int64) for t in tails])}
    got = session.run(None, feeds)[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)

    # the docs' example, run as written on that model and the raw table
    (tmp_path / "w.onnx").rename(tmp_path / "model.onnx")
    frame.to_csv(tmp_path / "weather.csv", index=False)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_docs_example(), "docs/serving.md", "exec"), scope)  # noqa: S102 - the documented snippet itself
    np.testing.assert_allclose(scope["quantiles"][0], want[0], atol=1e-3, rtol=1e-4)


def _docs_example() -> str:
    """The ONNX Runtime snippet of docs/serving.md (the python block after the weather export commands)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    after = text[text.index("forecast from the raw table with ONNX Runtime alone"):]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


# --- retail ---------------------------------------------------------------------------------------------
def _integer_id_log(path) -> None:
    """A small log whose user and item ids are integers (as a user's file holds them)."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30) * 7 + 1000, 12)
    items = 5000 + rng.integers(0, 40, len(users)) * 3
    frame = pd.DataFrame({"user_id": users, "item_id": items, "rating": 5.0, "timestamp": np.arange(len(users)) * 60.0})
    frame.drop_duplicates(["user_id", "item_id"]).to_csv(path, index=False)


@pytest.mark.parametrize("network", ["bpr.BPRMF", "sasrec.SASRec", "multvae.MultVAE"])
def test_retail_export_takes_raw_user_ids_and_returns_raw_item_ids(tmp_path, network) -> None:
    from sectorkit.core.network import network_class
    from sectorkit.domains.retail.data import RetailDataModule
    from sectorkit.domains.retail.module import RecommenderModule

    torch.manual_seed(0)
    _integer_id_log(tmp_path / "log.csv")
    net = {"_target_": f"sectorkit.domains.retail.models.{network}", "embedding_size": 8} if "MultVAE" not in network else \
        {"_target_": f"sectorkit.domains.retail.models.{network}", "hidden_sizes": [], "embedding_size": 8}
    dm = RetailDataModule(path=str(tmp_path / "log.csv"), top_k=5, max_seq_len=6, network=network_class(net))
    dm.setup("fit")
    model = RecommenderModule(net=net, **dm.model_kwargs(), ks=[5], top_k=5)
    model.prepare_fit(dm.training_state())
    model.eval()
    batch = dm.example_batch()
    report = export_model(model, batch, tmp_path / "r.onnx", "onnx", {"input_contract": dm.export_contract()}, graph=dm.export_graph(model, batch))
    assert report["passed"] and report["preprocessing_parity"]["passed"] and report["outputs_named"] == ["items", "scores", "from_popularity"]
    session = _session(tmp_path / "r.onnx")
    assert [i.name for i in session.get_inputs()] == ["user_ids"] and "user_ids" in _contract(session)
    users = [1007, 424242, 1000, 1203]  # 424242 was never seen
    items, scores, fallback = session.run(None, {"user_ids": np.array(users, dtype=np.int64)})
    assert fallback.tolist() == [False, True, False, False] and items.shape == (4, 5)
    assert set(items.ravel().tolist()) <= set(range(5000, 5120, 3))

    # what predict recommends to the same users from a file of their ids
    pd.DataFrame({"user_id": users}).to_csv(tmp_path / "users.csv", index=False)
    predicting = RetailDataModule(path=str(tmp_path / "users.csv"), top_k=5, max_seq_len=6, network=network_class(net))
    predicting.load_state_dict(dm.state_dict())
    table = predicting.predict_frame(model.predict_loader(predicting.predict_dataloader()), "predict")
    for row, user in enumerate(users):
        mine = table[table["user"].astype(str) == str(user)]
        assert len(mine) == 5
        np.testing.assert_allclose(scores[row][: len(mine)], mine["score"].to_numpy(), atol=1e-5)
        assert (mine["source"] == "popularity").all() == bool(fallback[row])
        if np.unique(mine["score"]).size == len(mine):  # no ties: the same items in the same order
            assert items[row][: len(mine)].tolist() == mine["item"].astype(int).tolist()


def test_retail_export_with_string_ids_takes_positions_and_exports_the_vocabulary(tmp_path) -> None:
    from sectorkit.domains.retail.data import RetailDataModule
    from sectorkit.domains.retail.models.bpr import BPRMF
    from sectorkit.domains.retail.module import RecommenderModule

    dm = RetailDataModule(sample={"n_users": 40, "n_items": 30, "mean_length": 8}, network=BPRMF)
    dm.setup("fit")
    model = RecommenderModule(net={"_target_": "sectorkit.domains.retail.models.bpr.BPRMF", "embedding_size": 8}, **dm.model_kwargs(), ks=[5])
    model.prepare_fit(dm.training_state())
    batch = dm.example_batch()
    report = export_model(model.eval(), batch, tmp_path / "s.onnx", "onnx", {"input_contract": dm.export_contract()}, graph=dm.export_graph(model, batch))
    assert report["passed"] and report["preprocessing_parity"]["passed"]
    session = _session(tmp_path / "s.onnx")
    contract = _contract(session)
    assert [i.name for i in session.get_inputs()] == ["users"] and contract["user_ids"] == dm.user_ids and contract["item_ids"] == dm.item_ids
    items, _, fallback = session.run(None, {"users": np.array([0, -1, 10_000], dtype=np.int64)})
    assert fallback.tolist() == [False, True, True] and items.max() < len(dm.item_ids)


# --- core -----------------------------------------------------------------------------------------------
class _Doubler(torch.nn.Module):
    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return raw * 2


def test_a_graph_that_disagrees_with_the_data_module_is_refused_and_torchscript_takes_graphs(tmp_path) -> None:
    raw = torch.arange(6.0).reshape(3, 2)
    graph = ExportGraph(_Doubler(), (raw,), ["raw"], ["doubled"], {"raw": {0: "batch"}}, checks=[(raw[:1],)], reference=[raw * 2])
    report = export_model(_Identity(), {}, tmp_path / "g.pt", "torchscript", graph=graph)
    assert report["passed"] and report["preprocessing_parity"]["passed"] and len(report["checks"]) == 1
    wrong = ExportGraph(_Doubler(), (raw,), ["raw"], ["doubled"], {"raw": {0: "batch"}}, reference=[raw * 3])
    with pytest.raises(SectorkitError, match="preprocessing differs"):
        export_model(_Identity(), {}, tmp_path / "g.onnx", "onnx", graph=wrong)
    assert not (tmp_path / "g.onnx").exists()


class _Identity(torch.nn.Module):
    """Stands in for the model: with a graph, only its name is read."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# --- finance -----------------------------------------------------------------------------------------------
def test_finance_export_standardises_raw_numerics_in_the_graph_and_carries_the_vocabularies(tmp_path) -> None:
    from sectorkit.domains.finance.data import FraudDataModule
    from sectorkit.domains.finance.module import FraudModule

    torch.manual_seed(0)
    dm = FraudDataModule(simulator={"n_customers": 200, "n_terminals": 300, "n_days": 30, "n_compromised_terminals": 1,
                                    "n_compromised_customers": 1}, split={"train_days": 10})
    dm.setup("test")
    model = FraudModule(net={"_target_": "sectorkit.domains.finance.models.mlp.EmbeddingMLP"}, **dm.model_kwargs()).eval()
    batch = dm.example_batch()
    assert dm.export_graph(model, batch) is None  # history features need state: the graph takes the feature values
    report = export_model(model, batch, tmp_path / "f.onnx", "onnx", {"input_contract": dm.export_contract()})
    assert report["passed"]
    session = _session(tmp_path / "f.onnx")
    contract = _contract(session)
    assert "mean" in contract["numeric"]["in_graph"] and contract["numeric"]["features"] == dm.fitted["numeric"]
    assert contract["categorical"]["vocabularies"] == dm.fitted["vocab"] and "caller-side" in contract["categorical"]["preprocessing"]
    raw = batch["numeric"][:4].clone()
    raw[0, 0] = float("nan")  # a missing value reads as the training mean
    filled = raw.clone()
    mean = dm.fitted["mean"][0]  # of the transformed values: back through the signed log1p where it applies
    filled[0, 0] = float(np.sign(mean) * np.expm1(abs(mean))) if dm.fitted["log_features"][0] else mean
    feeds = {i.name: {"numeric": raw, "categorical": batch["categorical"][:4]}[i.name].numpy() for i in session.get_inputs()}
    got = session.run(None, feeds)[0]
    with torch.inference_mode():
        want = model(filled, batch["categorical"][:4]).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
