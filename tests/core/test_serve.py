"""The HTTP inference server on loopback, called with an HTTP client: health and contract, parity with ``predict``
for every built-in domain, request validation, size limits, and crafted checkpoints refused.

The trained models are the quick runs the domain CLI tests train (``quick_run``, once per session)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sectorkit.core.cli import main
from sectorkit.core.errors import ConfigError, DataError

import sectorkit

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

QUIET = ["runtime.torch_threads=1"]


def served(checkpoint: str | Path, **settings):
    """A server for ``checkpoint`` on a free loopback port, in a background thread."""
    return sectorkit.load(checkpoint).serve(port=0, block=False, **settings)


def csv_predictions(url: str, payload: dict) -> pd.DataFrame:
    """``POST /predict?format=csv``: the table ``predict`` writes, as the server returns it."""
    response = httpx.post(f"{url}/predict", params={"format": "csv"}, json=payload, timeout=120)
    assert response.status_code == 200, response.text
    return pd.read_csv(io.StringIO(response.text))


@pytest.fixture(scope="module")
def finance_server(quick_run, tmp_path_factory) -> Iterator[tuple]:
    """The finance quick model served with a history file (the simulator's transactions before the scored rows)."""
    run = quick_run("finance")
    raw = pd.read_parquet(next((run.root / "data_cache").rglob("*.parquet")))
    folder = tmp_path_factory.mktemp("finance_serve")
    history, rows = raw.iloc[:-200], raw.iloc[-200:].drop(columns=["TX_FRAUD", "TX_FRAUD_SCENARIO"])
    history.to_parquet(folder / "history.parquet")
    rows = rows.assign(TX_DATETIME=rows["TX_DATETIME"].astype(str))
    server = served(run.metrics["checkpoint"], history=str(folder / "history.parquet"), max_rows=500, max_bytes=200_000)
    yield server, run, rows, folder
    server.stop()


def test_health_and_contract_say_what_is_served(finance_server) -> None:
    server, run, _, _ = finance_server
    health = httpx.get(f"{server.url}/health").json()
    assert health["ready"] and (health["domain"], health["model"]) == ("finance", run.metrics["model_name"])
    assert health["version"] == sectorkit.__version__
    contract = httpx.get(f"{server.url}/contract").json()
    assert contract["data"]["columns"]["amount"] == "TX_AMOUNT" and contract["limits"]["max_rows"] == 500
    assert contract["decisions"] == run.metrics.get("decisions", contract["decisions"])
    assert contract["history"]["rows"] > 0


def test_finance_scores_match_predict_with_the_same_history(finance_server) -> None:
    server, run, rows, folder = finance_server
    before = httpx.get(f"{server.url}/contract").json()["history"]["rows"]
    got = csv_predictions(server.url, {"rows": rows.to_dict(orient="records")})
    want = sectorkit.load(run.metrics["checkpoint"]).predict(rows, f"data.history={folder / 'history.parquet'}", *QUIET)
    pd.testing.assert_frame_equal(got, want)
    assert {"score", "alert"} <= set(got.columns) and len(got) == len(rows)
    assert httpx.get(f"{server.url}/contract").json()["history"]["rows"] == before + len(rows)  # the scored rows join the history
    as_json = httpx.post(f"{server.url}/predict", json={"rows": rows.head(3).assign(TRANSACTION_ID=-rows.head(3)["TRANSACTION_ID"]).to_dict(orient="records")})
    assert as_json.status_code == 200 and len(as_json.json()["predictions"]) == 3


def test_a_bad_field_is_a_4xx_naming_it_and_the_server_keeps_serving(finance_server) -> None:
    server, _, rows, _ = finance_server
    payload = rows.head(5).assign(TRANSACTION_ID=lambda f: f["TRANSACTION_ID"] + 10**7)
    missing = httpx.post(f"{server.url}/predict", json={"rows": payload.drop(columns=["TX_AMOUNT"]).to_dict(orient="records")})
    assert missing.status_code == 422 and "TX_AMOUNT" in missing.json()["detail"]
    wrong = httpx.post(f"{server.url}/predict", json={"rows": payload.assign(TX_AMOUNT="a lot").to_dict(orient="records")})
    assert wrong.status_code == 422 and "'TX_AMOUNT' must be numeric" in wrong.json()["detail"]
    mixed = payload.to_dict(orient="records")
    mixed[1]["TX_AMOUNT"] = "twelve"  # numbers and text in one column
    mixed_response = httpx.post(f"{server.url}/predict", json={"rows": mixed})
    assert mixed_response.status_code == 422 and "TX_AMOUNT" in mixed_response.json()["detail"]
    assert httpx.post(f"{server.url}/predict", json={"row": []}).status_code == 422
    assert "rows" in httpx.post(f"{server.url}/predict", json={"rows": 3}).json()["detail"]
    assert httpx.post(f"{server.url}/predict", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    good = httpx.post(f"{server.url}/predict", json={"rows": payload.to_dict(orient="records")})
    assert good.status_code == 200 and len(good.json()["predictions"]) == 5


def test_an_oversized_request_is_413_with_the_limit(finance_server) -> None:
    server, _, rows, _ = finance_server
    many = pd.concat([rows] * 3, ignore_index=True)  # 600 rows > serve.max_rows=500
    too_many = httpx.post(f"{server.url}/predict", content=many.to_csv(index=False), headers={"content-type": "text/csv"})
    assert too_many.status_code == 413 and "serve.max_rows=500" in too_many.json()["detail"]
    too_big = httpx.post(f"{server.url}/predict", content=b"x" * 300_000, headers={"content-type": "text/csv"})
    assert too_big.status_code == 413 and "serve.max_bytes=200000" in too_big.json()["detail"]
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_retail_top_k_matches_predict_with_the_popularity_fallback(quick_run) -> None:
    run = quick_run("retail")
    known = pd.read_csv(Path(run.metrics["run_dir"]) / "predictions.csv")["user"].astype(str).unique()[:3].tolist()
    rows = pd.DataFrame({"user_id": [*known, "a-user-never-seen"]})
    with served(run.metrics["checkpoint"]) as server:
        got = csv_predictions(server.url, {"rows": rows.to_dict(orient="records")})
    want = sectorkit.load(run.metrics["checkpoint"]).predict(rows, *QUIET)
    pd.testing.assert_frame_equal(got, want)
    assert set(got.loc[got["user"] == "a-user-never-seen", "source"]) == {"popularity"}
    assert got.groupby("user")["rank"].max().max() == 10  # data.top_k of the checkpoint
    with pytest.raises(ConfigError, match="serve.history"):  # only a model whose rows depend on earlier rows keeps a history
        served(run.metrics["checkpoint"], history="earlier.csv")


def test_agriculture_quantile_forecasts_match_predict(quick_run) -> None:
    from sectorkit.domains.agriculture.sample import synthetic_weather

    run = quick_run("agriculture")
    data = torch.load(run.metrics["checkpoint"], weights_only=True)["sectorkit_run"]["data"]
    series = synthetic_weather(**data["synthetic"])
    rows = series.groupby("series_id").tail(data["lookback"] + 5).reset_index(drop=True)
    rows = rows.assign(date=pd.to_datetime(rows["date"]).dt.strftime("%Y-%m-%d"))
    with served(run.metrics["checkpoint"]) as server:
        got = csv_predictions(server.url, {"rows": rows.to_dict(orient="records")})
    want = sectorkit.load(run.metrics["checkpoint"]).predict(rows, *QUIET)
    pd.testing.assert_frame_equal(got, want)
    assert len(got) > 0


@pytest.mark.slow  # PatchCore's kNN over the served images: about 25 s; serving parity of the other domains runs by default
def test_healthcare_scores_match_predict_and_heatmaps_come_on_request(quick_run) -> None:
    from PIL import Image
    from sectorkit.domains.healthcare.sample import make_phantoms

    run = quick_run("healthcare")
    data = torch.load(run.metrics["checkpoint"], weights_only=True)["sectorkit_run"]["data"]
    images = make_phantoms(2, 2, size=data["image_size"], spatial_dims=2, seed=7).images.astype(np.float32)
    images = images.reshape(len(images), data["image_size"], data["image_size"])
    with served(run.metrics["checkpoint"]) as server:
        got = csv_predictions(server.url, {"images": images.tolist()})
        with_maps = httpx.post(f"{server.url}/predict", json={"images": images[:1].tolist(), "figures": True}, timeout=120).json()
        picture = io.BytesIO()
        Image.fromarray((np.clip(images[0], 0, 1) * 255).astype(np.uint8)).save(picture, format="png")
        png = httpx.post(f"{server.url}/predict", json={"images": [base64.b64encode(picture.getvalue()).decode()]}, timeout=120)
        ragged = httpx.post(f"{server.url}/predict", json={"images": [images[0].tolist(), images[0][:5].tolist()]})
    want = sectorkit.load(run.metrics["checkpoint"]).predict(images, "data.max_heatmaps=0", *QUIET)  # the table alone
    pd.testing.assert_frame_equal(got, want)
    assert {"score", "is_anomalous"} <= set(got.columns) and len(got) == 4
    heatmaps = [name for name in with_maps["figures"] if name.startswith("heatmaps/")]
    assert heatmaps and base64.b64decode(with_maps["figures"][heatmaps[0]]).startswith(b"\x89PNG")
    assert png.status_code == 200 and len(png.json()["predictions"]) == 1
    assert ragged.status_code == 422 and "images[1]" in ragged.json()["detail"]


@pytest.mark.parametrize("crafted", ["model_class", "data"])
def test_a_crafted_checkpoint_is_refused_by_serve_and_the_api(quick_run, tmp_path, capsys, crafted) -> None:
    """A file torch.load(weights_only=True) accepts, naming subprocess.Popen as the model or as its data module."""
    marker = tmp_path / "ran"
    checkpoint = torch.load(quick_run("finance").metrics["checkpoint"], weights_only=True)
    payload = {"_target_": "subprocess.Popen", "args": f"touch {marker}", "shell": True}
    if crafted == "model_class":
        checkpoint["sectorkit_model_class"] = "subprocess.Popen"
        checkpoint["hyper_parameters"] = {k: v for k, v in payload.items() if k != "_target_"}
    else:
        checkpoint["sectorkit_run"]["data"] = payload
    crafted_file = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted_file)
    assert main(["serve", f"ckpt_path={crafted_file}", "port=0"]) == 2
    assert "subprocess.Popen" in capsys.readouterr().err
    with pytest.raises(DataError, match="subprocess.Popen"):
        sectorkit.load(crafted_file).serve(port=0, block=False)
    assert not marker.exists()
