"""Pretrained forecasting models (model=timesfm, model=patchtst_pretrained): loading from a local folder, zero-shot
through the CLI with no gradient step, which parameters each fine-tuning mode trains, the quantile mapping and
the offline error. Tiny randomly initialised models are saved with save_pretrained in tmp_path; nothing is
downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sectorkit.core.cli import main
from sectorkit.core.errors import ConfigError
from sectorkit.domains.agriculture.metrics import pinball_loss
from sectorkit.domains.agriculture.models.foundation import FoundationForecaster, interpolation_matrix
from transformers import PatchTSTConfig, PatchTSTForPrediction, TimesFm2_5Config, TimesFm2_5ModelForPrediction

LOOKBACK, HORIZON, N_PAST, N_FUTURE = 28, 7, 6, 3


@pytest.fixture(scope="module")
def timesfm_folder(tmp_path_factory) -> Path:
    """A tiny TimesFM 2.5 (random weights) written by save_pretrained (safetensors)."""
    torch.manual_seed(0)
    config = TimesFm2_5Config(patch_length=8, context_length=64, horizon_length=8, num_hidden_layers=1, hidden_size=16,
                              intermediate_size=16, head_dim=8, num_attention_heads=2, num_key_value_heads=2,
                              output_quantile_len=8, max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("tiny_timesfm")
    TimesFm2_5ModelForPrediction(config).save_pretrained(folder)
    assert (folder / "model.safetensors").exists()
    return folder


@pytest.fixture(scope="module")
def patchtst_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = PatchTSTConfig(num_input_channels=1, context_length=64, patch_length=8, patch_stride=8, d_model=16,
                            num_attention_heads=2, num_hidden_layers=1, ffn_dim=16, prediction_length=8)
    folder = tmp_path_factory.mktemp("tiny_patchtst")
    PatchTSTForPrediction(config).save_pretrained(folder)
    return folder


def build(folder: Path, finetune: str, **options) -> FoundationForecaster:
    return FoundationForecaster(LOOKBACK, HORIZON, N_PAST, N_FUTURE, model_id=str(folder), finetune=finetune, **options)


def test_zero_shot_through_the_cli_takes_no_gradient_step(timesfm_folder, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    assert main(["train", "domain=agriculture", "experiment=quick", "model=timesfm", f"model.net.model_id={timesfm_folder}"]) == 0
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["model_name"] == "timesfm" and metrics["epochs"] == 1  # one pass: nothing to train
    assert 0 < metrics["test"]["mae"] < 100 and 0 <= metrics["test"]["coverage"] <= 1
    assert "ridge_ar" in metrics["baselines"] and metrics["breakdowns"]["test_by_series"]
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=False)
    assert not any(checkpoint["optimizer_states"])  # trained without an optimizer (Lightning keeps an empty mock)
    # the backbone's weights are the saved ones, untouched; the intervals were calibrated on validation
    saved = build(timesfm_folder, "zero_shot").backbone.state_dict()
    state = checkpoint["state_dict"]
    assert saved and all(torch.equal(state["net.members.0.backbone." + name], value) for name, value in saved.items())
    assert state["band_weight"].shape[0] == 3 and (state["calibration"].abs().sum() + state["band"].abs().sum()) > 0
    # evaluate rebuilds the model from model.net.model_id and the checkpoint: same test figures
    assert main(["evaluate", "domain=agriculture", f"ckpt_path={metrics['checkpoint']}"]) == 0
    (evaluated,) = [json.loads(f.read_text()) for f in tmp_path.rglob("metrics.json") if f.parent != Path(metrics["run_dir"])]
    assert evaluated["test"]["mae"] == pytest.approx(metrics["test"]["mae"], rel=1e-5)


@pytest.mark.parametrize("finetune", ["frozen", "lora", "full"])
def test_fine_tuning_modes_train_only_their_parameters(timesfm_folder, finetune) -> None:
    if finetune == "lora":
        pytest.importorskip("peft")
    net = build(timesfm_folder, finetune)
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    head = {"head.weight", "head.bias"}
    n_backbone = sum(p.numel() for name, p in net.named_parameters() if name.startswith("backbone.") and "lora_" not in name)
    if finetune == "frozen":
        assert trainable == head
    elif finetune == "lora":
        lora = trainable - head
        assert head < trainable and lora and all("lora_" in name for name in lora)
        assert 0 < sum(p.numel() for name, p in net.named_parameters() if name in lora) < n_backbone / 2
    else:
        assert trainable == {name for name, _ in net.named_parameters()}
    net.train()
    assert net.head.training and net.backbone.training == (finetune != "frozen")  # a frozen backbone keeps eval mode
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    torch.manual_seed(1)
    past, future = torch.randn(8, LOOKBACK, N_PAST), torch.randn(8, HORIZON, N_FUTURE)
    for _ in range(2):  # two steps: LoRA's B starts at zero, so its A moves only from the second step
        optimizer.zero_grad()
        pinball_loss(net(past, future), torch.randn(8, HORIZON), (0.1, 0.5, 0.9)).mean().backward()
        optimizer.step()
    changed = {name for name, p in net.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert head <= changed <= trainable
    if finetune != "frozen":
        assert changed - head  # the backbone (or its adapters) moved too


def test_zero_shot_maps_the_models_own_quantiles(timesfm_folder) -> None:
    net = build(timesfm_folder, "zero_shot", seasonal=False)
    assert not any(p.requires_grad for p in net.parameters()) and net.head is None
    past, future = torch.randn(4, LOOKBACK, N_PAST), torch.randn(4, HORIZON, N_FUTURE)
    with torch.no_grad():
        own = net.backbone_forecast(past[..., 0])  # levels 0.1 .. 0.9
        out = net(past, future)
    assert torch.allclose(out, torch.sort(own[..., [0, 4, 8]], dim=-1).values)
    weights = interpolation_matrix([0.1, 0.2, 0.5, 0.9], [0.1, 0.35, 0.5])
    assert torch.allclose(weights[:, 1], torch.tensor([0.0, 0.5, 0.5, 0.0])) and weights[0, 0] == 1 and weights[2, 2] == 1
    with pytest.raises(ConfigError, match="0.05 lies outside the model's quantiles"):
        interpolation_matrix([0.1, 0.9], [0.05, 0.5])


def test_pretrained_patchtst_point_forecast_at_every_level(patchtst_folder) -> None:
    net = build(patchtst_folder, "zero_shot")
    with torch.no_grad():
        out = net(torch.randn(3, LOOKBACK, N_PAST), torch.randn(3, HORIZON, N_FUTURE))
    assert out.shape == (3, HORIZON, 3) and torch.allclose(out[..., 0], out[..., 2])
    assert {n for n, p in build(patchtst_folder, "lora").named_parameters() if p.requires_grad} > {"head.weight", "head.bias"}


def test_missing_weights_offline_is_one_line_naming_the_model_and_the_download(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    cache = tmp_path / "empty_cache"  # an empty Hugging Face cache, whatever the user's holds
    assert main(["train", "domain=agriculture", "experiment=quick", "model=timesfm", f"model.net.cache_dir={cache}"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("sectorkit: error: ") and "\n" not in message and "Traceback" not in message
    assert "model.net.model_id='google/timesfm-2.5-200m-transformers'" in message and "offline" in message
    assert "hf download google/timesfm-2.5-200m-transformers" in message and "model.net.model_id=/path/to/folder" in message
    with pytest.raises(ConfigError, match="no such folder"):
        FoundationForecaster(LOOKBACK, HORIZON, N_PAST, N_FUTURE, model_id=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="model.net.finetune='partial'"):
        FoundationForecaster(LOOKBACK, HORIZON, N_PAST, N_FUTURE, model_id="x", finetune="partial")


@pytest.mark.slow
def test_onnx_export_holds_at_the_traced_batch_size_only(timesfm_folder, tmp_path) -> None:
    """The library's forward loops over the series of a batch; the tracer unrolls it (documented limitation)."""
    ort = pytest.importorskip("onnxruntime")
    from sectorkit.domains.agriculture.weather.module import WeatherForecaster

    net = {"_target_": "sectorkit.domains.agriculture.models.foundation.FoundationForecaster", "model_id": str(timesfm_folder),
           "finetune": "lora"}
    module = WeatherForecaster(net=net, lookback=LOOKBACK, horizon=HORIZON, n_past=N_PAST, n_future=N_FUTURE, n_series=2,
                               local_lags=0).eval()
    names = ["past", "future", "loc", "scale", "series"]
    inputs = (torch.randn(4, LOOKBACK, N_PAST), torch.randn(4, HORIZON, N_FUTURE), torch.ones(4), torch.ones(4), torch.tensor([0, 1, 0, 1]))
    path = tmp_path / "timesfm.onnx"
    torch.onnx.export(module, inputs, str(path), input_names=names, output_names=["quantiles"],
                      dynamic_axes={n: {0: "batch"} for n in names}, dynamo=False)
    session = ort.InferenceSession(str(path))
    with torch.no_grad():
        expected = module(*inputs).numpy()
    assert abs(session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})[0] - expected).max() < 1e-4
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type
        session.run(None, {n: t[:3].numpy() for n, t in zip(names, inputs, strict=True)})


def test_benchmark_page_claims_no_figure_without_the_weights() -> None:
    from benchmarks.agriculture_foundation import markdown

    text = markdown({"status": "not_measured", "model_id": "google/timesfm-2.5-200m-transformers", "reason": "offline",
                     "command": "python benchmarks/agriculture_foundation.py --model-id google/timesfm-2.5-200m-transformers"})
    assert "No figure is claimed" in text and "hf download google/timesfm-2.5-200m-transformers" in text
    assert "--model-id google/timesfm-2.5-200m-transformers" in text and "|" not in text
