"""A served model scores each request in memory: the model and its data module are built once at start, a request's
rows go through the data module's ``setup_predict`` (the code ``setup('predict')`` runs on ``data.path`` after
reading it), and the result equals the file route's (``serve.in_memory=false``: each request written to a file that
``predict``'s file path reads back) request after request, finance's growing history included.

No HTTP here (``tests/core/test_serve.py`` starts real servers): :class:`ModelService` is what a server calls."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sectorkit.core.cli import main
from sectorkit.core.serve import ModelService, RequestError, ServeSettings

pytest.importorskip("fastapi")


STARTED: list[ModelService] = []


@pytest.fixture(autouse=True)
def remove_work_folders():
    """Each service's temporary folder (a running server removes it when it stops)."""
    yield
    while STARTED:
        shutil.rmtree(STARTED.pop().workdir, ignore_errors=True)


def service(checkpoint: str, overrides: list[str] | None = None, **settings) -> ModelService:
    STARTED.append(ModelService(checkpoint, overrides or [], ServeSettings(**settings)))
    return STARTED[-1]


def services(checkpoint: str, **settings) -> tuple[ModelService, ModelService]:
    """The same checkpoint served in memory (the default) and through the file route."""
    return service(checkpoint, **settings), service(checkpoint, in_memory=False, **settings)


@pytest.fixture(scope="module")
def finance(quick_run, tmp_path_factory):
    """The finance quick model with a history file (the simulator's transactions before the scored ones) and the
    200 transactions after it, without labels."""
    run = quick_run("finance")
    raw = pd.read_parquet(next((run.root / "data_cache").rglob("*.parquet")))
    history = tmp_path_factory.mktemp("in_memory") / "history.parquet"
    raw.iloc[:-200].to_parquet(history)
    rows = raw.iloc[-200:].drop(columns=["TX_FRAUD", "TX_FRAUD_SCENARIO"])
    return run.metrics["checkpoint"], str(history), rows.assign(TX_DATETIME=rows["TX_DATETIME"].astype(str)).reset_index(drop=True)


def no_file_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any request that writes its rows to a file, reads a table file or builds a data module fail."""
    from sectorkit.core import io, pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a request paid a file round trip or built a data module")

    for module, name in ((io, "write_input"), (pd, "read_parquet"), (pd, "read_csv"), (pipeline, "instantiate_or_explain")):
        monkeypatch.setattr(module, name, refuse)


def test_finance_in_memory_equals_the_file_route_request_after_request(finance, monkeypatch) -> None:
    checkpoint, history, rows = finance
    memory, file = services(checkpoint, history=history)
    assert memory.in_memory and not file.in_memory and torch.get_num_threads() == 1
    datamodule = memory.datamodule
    got, want = [], []
    for part in np.array_split(np.arange(len(rows)), 4):  # later parts' cards and terminals see the earlier parts as history
        request = pd.DataFrame.from_records(rows.iloc[part].to_dict(orient="records"))  # as a JSON body arrives
        want.append(file.predict(request)[0])
        with monkeypatch.context() as patched:
            no_file_round_trip(patched)
            got.append(memory.predict(request)[0])
    for mine, theirs in zip(got, want):
        pd.testing.assert_frame_equal(mine, theirs)
    assert memory.datamodule is datamodule and len(memory.history) == len(file.history) == len(pd.read_parquet(history)) + len(rows)
    counts = []  # the same card twice, a minute apart: the second request's windows count the first (the history grew)
    for index, minute in ((-10, "00"), (-11, "01")):
        memory.predict(rows.tail(1).assign(TRANSACTION_ID=index, TX_DATETIME=f"2100-01-01 12:{minute}:00"))
        column = min((c for c in datamodule.tables["predict"] if c.startswith("card_nb_tx_")), key=lambda c: float(c[11:-1]))
        counts.append(float(datamodule.tables["predict"][column].iloc[0]))
    assert counts[1] == counts[0] + 1
    with pytest.raises(RequestError, match="scores rows"):  # images to a table model: a 422 naming what it takes
        memory.predict(np.zeros((1, 8, 8), np.float32))
    mixed = pd.DataFrame.from_records(rows.head(2).assign(TRANSACTION_ID=[-1, -2]).to_dict(orient="records"))
    mixed["TX_AMOUNT"] = pd.Series([12.5, "twelve"], dtype=object)
    with pytest.raises(RequestError, match="'TX_AMOUNT' must be numeric; row 1"):
        memory.predict(mixed)


@pytest.mark.parametrize("domain", ["retail", "agriculture"])
def test_retail_and_weather_in_memory_equal_the_file_route(quick_run, domain, monkeypatch) -> None:
    run = quick_run(domain)
    memory, file = services(run.metrics["checkpoint"])
    if domain == "retail":
        users = pd.read_csv(f"{run.metrics['run_dir']}/predictions.csv")["user"].astype(str).unique()[:4].tolist()
        request = pd.DataFrame({"user_id": [*users, "a-user-never-seen"]})
    else:
        from sectorkit.domains.agriculture.sample import synthetic_weather

        data = torch.load(run.metrics["checkpoint"], weights_only=True)["sectorkit_run"]["data"]
        request = synthetic_weather(**data["synthetic"]).groupby("series_id").tail(data["lookback"] + 3).reset_index(drop=True)
        request = request.assign(date=pd.to_datetime(request["date"]).dt.strftime("%Y-%m-%d"))
    want = file.predict(request)[0]
    with monkeypatch.context() as patched:
        no_file_round_trip(patched)
        first, again = memory.predict(request)[0], memory.predict(request)[0]  # the data module is reused: nothing leaks
    pd.testing.assert_frame_equal(first, want)
    pd.testing.assert_frame_equal(again, want)
    assert len(want) > 0


def test_torch_threads_are_one_unless_configured(quick_run, capsys) -> None:
    checkpoint = quick_run("retail").metrics["checkpoint"]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        service(checkpoint)
        assert torch.get_num_threads() == 1
        service(checkpoint, ["runtime.torch_threads=2"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert main(["serve", f"ckpt_path={checkpoint}", "serve.in_memory=sometimes"]) == 2
    assert "serve.in_memory='sometimes': expected true or false" in capsys.readouterr().err


def test_crop_yield_rows_in_memory_equal_the_same_table_read_from_a_file(tmp_path) -> None:
    from sectorkit.core.errors import DataError
    from sectorkit.domains.agriculture.crop_yield.data import YieldDataModule
    from sectorkit.domains.agriculture.sample import synthetic_yield

    yields, _ = synthetic_yield()
    yields.to_csv(tmp_path / "yields.csv", index=False)
    trained = YieldDataModule(path=str(tmp_path / "yields.csv"))
    trained.setup("fit")
    from_file, in_memory = YieldDataModule(path=str(tmp_path / "yields.csv")), YieldDataModule(path=str(tmp_path / "yields.csv"))
    for module in (from_file, in_memory):
        module.load_state_dict(trained.state_dict())
    from_file.setup("predict")
    in_memory.setup_predict(pd.read_csv(tmp_path / "yields.csv"))
    pd.testing.assert_frame_equal(in_memory.frames["predict"], from_file.frames["predict"])
    for key, value in from_file.fold_inputs["predict"].items():
        np.testing.assert_array_equal(in_memory.fold_inputs["predict"][key], value)
    assert len(in_memory.frames["predict"]) == yields["region"].nunique()
    with pytest.raises(DataError, match="^request: "):  # a message names the request, not a file
        in_memory.setup_predict(yields.drop(columns=["year"]))


def test_healthcare_images_in_memory_equal_the_same_images_read_from_an_npz(tmp_path) -> None:
    from sectorkit.core.errors import DataError
    from sectorkit.core.io import write_input
    from sectorkit.domains.healthcare.data import HealthcareDataModule

    images = np.random.default_rng(0).random((3, 20, 20)).astype(np.float32) * 7 - 2  # another size and range than the model's
    from_file = HealthcareDataModule(path=str(write_input(images, tmp_path)), image_size=16)
    from_file.setup("predict")
    in_memory = HealthcareDataModule(image_size=16)
    in_memory.setup_predict(images)
    assert [r["name"] for r in in_memory.records["predict"]] == [r["name"] for r in from_file.records["predict"]] == ["test_0", "test_1", "test_2"]
    for index in range(len(images)):
        torch.testing.assert_close(in_memory.datasets["predict"][index]["inputs"], from_file.datasets["predict"][index]["inputs"], rtol=0, atol=0)
    with pytest.raises(DataError, match="request: image arrays must be"):
        in_memory.setup_predict(images[0])
