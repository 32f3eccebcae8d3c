"""Every built-in domain's quick model exported to ONNX from its run folder: real input and output names, and the
contract a deployment needs (feature order, dtypes, the preprocessing outside the graph) in the file's metadata."""

from __future__ import annotations

import json

import pytest

import sectorkit

onnx = pytest.importorskip("onnx")

# per domain: the graph's outputs, and what its contract must spell out (input -> keys)
EXPECTED = {
    "finance": (["score_and_alert"], {"numeric": "features", "categorical": "preprocessing", "history": "how"}),
    "retail": (["items", "scores", "from_popularity"], {"users": "preprocessing"}),
    "healthcare": (["score", "anomaly_map", "is_anomalous", "pixel_is_anomalous"], {"images": "in_graph"}),
    "agriculture": (["quantiles"], {"values": "columns", "series": "preprocessing", "origin_date": "preprocessing"}),
}


@pytest.mark.parametrize("domain", list(EXPECTED))
def test_onnx_export_names_its_outputs_and_carries_the_contract(domain, quick_run, tmp_path) -> None:
    run = quick_run(domain)
    report = sectorkit.load(run.metrics["checkpoint"]).export(tmp_path / f"{domain}.onnx")
    outputs, contract_keys = EXPECTED[domain]
    assert report["passed"] and report["outputs_named"] == outputs
    graph = onnx.load(str(tmp_path / f"{domain}.onnx"))
    assert [o.name for o in graph.graph.output] == outputs
    assert not any(i.name.startswith("input_") for i in graph.graph.input)
    metadata = {entry.key: entry.value for entry in graph.metadata_props}
    assert metadata["domain"] == domain and metadata["model_name"] == run.metrics["model_name"]
    contract = json.loads(metadata["input_contract"])
    for name, key in contract_keys.items():
        assert contract[name][key], (name, key)
    assert set(contract["outputs"]) == set(outputs)
    for name in json.loads(metadata["inputs"]):  # every graph input is described, with its dtype
        assert contract[name]["dtype"] in ("float32", "int64")
