"""Metrics, thresholds, baselines, models (2D and 3D), memory banks without an optimizer, buffers in checkpoints,
export parity and planted-signal wins."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint
from sectorkit.core.config import validate_overrides
from sectorkit.core.errors import ConfigError
from sectorkit.core.thresholds import choose_threshold
from sectorkit.domains.healthcare import DOMAIN
from sectorkit.domains.healthcare.baselines import KNNBaseline, PCABaseline, evaluate_detector
from sectorkit.domains.healthcare.data import HealthcareDataModule
from sectorkit.domains.healthcare.metrics import anomaly_metrics, aupro, normalise
from sectorkit.domains.healthcare.models.autoencoder import AutoEncoderDetector
from sectorkit.domains.healthcare.models.classifier import ClassifierDetector
from sectorkit.domains.healthcare.models.padim import PaDiMDetector
from sectorkit.domains.healthcare.models.patchcore import PatchCoreDetector
from sectorkit.domains.healthcare.models.vae import VAEDetector
from sectorkit.domains.healthcare.module import AnomalyDetector, predict_outputs

warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
FAST_AE = {"channels": [8, 16], "strides": [2, 2]}
NETWORKS = {"autoencoder": AutoEncoderDetector, "vae": VAEDetector, "patchcore": PatchCoreDetector, "padim": PaDiMDetector,
            "classifier": ClassifierDetector}


def _net(network: str, **kwargs) -> dict:
    """The ``model.net`` config of a network."""
    cls = NETWORKS[network]
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **kwargs}


@pytest.fixture(scope="module")
def tiny() -> HealthcareDataModule:
    dm = HealthcareDataModule(image_size=32, sample={"n_train": 32, "n_val": 16, "n_test": 24}, batch_size=16)
    dm.setup("fit")
    return dm


def _trainer(epochs: int = 1) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


# --- metrics ---------------------------------------------------------------------------------
def test_metrics_on_perfect_and_random_maps():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 1, 16, 16), dtype=np.float32)
    masks[3:, :, 4:8, 4:8] = 1
    target = torch.tensor([0, 0, 0, 1, 1, 1])
    perfect = torch.as_tensor(masks + 0.01 * rng.random(masks.shape, dtype=np.float32))
    score = perfect.flatten(1).max(1).values
    m = anomaly_metrics()
    m.update((score, perfect, (score > 0.5).float(), (perfect > 0.5).float()), target, torch.as_tensor(masks))
    out = {k: float(v) for k, v in m.compute().items()}
    assert all(out[k] == pytest.approx(1.0) for k in ("image_auroc", "pixel_auroc", "dice", "image_f1", "image_ap", "image_f1_max"))
    assert out["aupro"] == pytest.approx(1.0, abs=0.02)
    big = np.zeros((50, 1, 32, 32), dtype=bool)
    big[25:, :, 4:12, 4:12] = True
    assert aupro(rng.random(big.size), big) == pytest.approx(0.15, abs=0.02)  # random maps: PRO ~ FPR, area/0.3 ~ 0.15
    # no masks at all: pixel metrics are NaN, image metrics still defined
    m = anomaly_metrics()
    m.update((score, perfect, score, perfect), target, torch.zeros_like(perfect))
    out = m.compute()
    assert torch.isnan(out["pixel_auroc"]) and out["image_auroc"] == 1


def _lesion_batches(n_batches: int, seed: int = 0) -> list[tuple]:
    """Batches of (outputs, target, mask): phantom lesion masks, maps = noise + signal inside the lesions."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_batches):
        masks = np.zeros((8, 1, 32, 32), dtype=np.float32)
        target = (np.arange(8) % 2).astype(np.int64)
        for i in np.flatnonzero(target):
            y, x, r = rng.integers(4, 24), rng.integers(4, 24), rng.integers(2, 6)
            masks[i, :, y:y + r, x:x + r] = 1
        amap = torch.as_tensor(0.6 * masks * rng.random((8, 1, 1, 1)) + rng.random(masks.shape)).float()
        score = amap.flatten(1).amax(1)
        batches.append(((score, amap, (score > 1.2).float(), (amap > 0.9).float()), torch.as_tensor(target), torch.as_tensor(masks)))
    return batches


def _state_size(metrics) -> int:
    """How many numbers a MetricCollection holds in its states."""
    total = 0
    for metric in metrics.values():
        for name in metric._defaults:
            state = getattr(metric, name)
            total += sum(v.numel() for v in state) if isinstance(state, list) else state.numel()
    return total


def test_pixel_metrics_hold_bounded_state_whatever_the_number_of_images():
    """Dice is exact; pixel AUROC and AUPRO are exact (AUPRO to region-quantile precision) below the pixel budget and
    keep an evenly strided sample beyond it: the state stops growing with the images while the values stay close."""
    from torchmetrics.functional.classification import binary_auroc

    batches = _lesion_batches(40)
    amap = torch.cat([b[0][1] for b in batches])
    masks = torch.cat([b[2] for b in batches])
    pflag = torch.cat([b[0][3] for b in batches])
    exact_auroc = float(binary_auroc(amap.flatten(), masks.flatten().long()))
    exact_aupro = aupro(amap.numpy().reshape(-1), masks.numpy() > 0)
    exact_dice = float(2 * (pflag * masks).sum() / (pflag.sum() + masks.sum()))
    values = {}
    for budget in (10**7, 4000):  # above and far below the 40 x 8 x 32 x 32 = 327,680 pixels
        m = anomaly_metrics(max_pixels=budget)
        for outputs, target, mask in batches:
            m.update(outputs, target, mask)
        values[budget] = ({k: float(v) for k, v in m.compute().items()}, _state_size(m))
    exact, small = values[10**7][0], values[4000][0]
    assert exact["pixel_auroc"] == pytest.approx(exact_auroc, abs=1e-6) and exact["dice"] == pytest.approx(exact_dice, abs=1e-9)
    assert exact["aupro"] == pytest.approx(exact_aupro, abs=0.01)
    assert small["pixel_auroc"] == pytest.approx(exact_auroc, abs=0.01) and small["aupro"] == pytest.approx(exact_aupro, abs=0.02)
    assert small["dice"] == exact["dice"]
    # bounded: per-image values, 2 pixel samples of <= 2 x budget, 128 values per lesion region (not 327,680 pixels each)
    n_images, n_regions = 320, int(torch.cat([b[1] for b in batches]).sum())
    assert values[4000][1] <= 4 * n_images + 3 * 2 * 4000 + 128 * n_regions + 3 < amap.numel()
    # the kept sample is exactly every stride-th normal pixel of the stream
    normal_stream = amap[masks == 0]
    metric = anomaly_metrics(max_pixels=4000)["pixel_auroc"]
    for outputs, target, mask in batches:
        metric.update(outputs, target, mask)
    stride = metric._stride["normal"]
    assert stride > 1 and torch.equal(torch.cat(metric.normal), normal_stream[::stride])


def test_thresholds_and_monotone_normalisation():
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9], dtype=np.float32)  # scores are float32, as the model gives them
    labels = np.array([0, 0, 0, 1, 1])
    assert 0.3 < choose_threshold(scores, labels, "f1").value <= scores[3]
    assert choose_threshold(np.arange(100.0), None, "fpr", fpr=0.05).value == pytest.approx(94.05)
    fallback = choose_threshold(scores, np.zeros(5), "f1")  # no abnormal: FPR rule, and it says so
    assert fallback.value == pytest.approx(np.quantile(scores, 0.95)) and "no positives" in fallback.rule
    x = torch.linspace(-5, 5, 101)
    y = normalise(x, torch.tensor(-1.0), torch.tensor(1.0), torch.tensor(0.3))
    assert (y.diff() > 0).all() and 0 < y.min() and y.max() < 1
    assert normalise(torch.tensor(0.3), torch.tensor(-1.0), torch.tensor(1.0), torch.tensor(0.3)) == 0.5


def test_normal_only_validation_falls_back_to_the_normal_score_quantile_and_says_so():
    model = AnomalyDetector(net=_net("autoencoder", **FAST_AE), image_size=16)
    n = 101
    model.calibrate({"score": torch.linspace(0, 1, n), "map": torch.rand(n, 1, 16, 16), "target": torch.zeros(n, dtype=torch.long),
                     "mask": torch.zeros(n, 1, 16, 16)})
    assert float(model.image_threshold) == pytest.approx(0.95)
    assert all("no positives" in model.threshold_rules[level] for level in ("image", "pixel"))


# --- baselines ---------------------------------------------------------------------------------
def test_baselines_find_planted_lesions(tiny):
    train, val, test = (tiny.arrays(s) for s in ("train", "val", "test"))
    for detector in (KNNBaseline(), PCABaseline()):
        result = evaluate_detector(detector, train, val, test, keep_maps=True)
        assert result.predictions["maps"].shape == test[1].shape and result.predictions["scores"].shape == test[2].shape
        assert result.metrics["pixel_auroc"] > 0.75, type(detector).__name__


def test_baselines_score_in_chunks_exactly_as_on_whole_arrays(tiny, monkeypatch):
    """Validation and test images scored a chunk at a time (and the kNN distance matrices split) give the same
    scores and metrics as whole arrays; a run keeps the test scores only, not the maps."""
    from sectorkit.domains.healthcare import baselines

    train, val, test = (tiny.arrays(s) for s in ("train", "val", "test"))
    whole = evaluate_detector(KNNBaseline(), train, val, test)
    monkeypatch.setattr(baselines, "MAX_DISTANCES", 1)  # one image per distance matrix
    chunked = evaluate_detector(KNNBaseline(), train[0], tiny.chunks("val", batch_size=5), tiny.chunks("test", batch_size=5))
    np.testing.assert_allclose(chunked.predictions["scores"], whole.predictions["scores"], rtol=1e-5)
    assert set(chunked.metrics) == set(whole.metrics)
    assert all(chunked.metrics[k] == pytest.approx(whole.metrics[k], abs=1e-5) for k in whole.metrics)
    assert set(whole.predictions) == {"scores"} and whole.predictions["scores"].shape == (24,)


def test_predictions_keep_one_score_per_image_not_the_maps(tiny):
    model = AnomalyDetector(net=_net("autoencoder", **FAST_AE), **tiny.model_kwargs())
    _trainer(1).fit(model, tiny)
    outputs = model.predict_loader(tiny.test_dataloader())
    assert all(set(o) == {"score", "is_anomalous"} and all(isinstance(v, list) for v in o.values()) for o in outputs)
    assert sum(len(o["score"]) for o in outputs) == 24 and all(isinstance(v, bool) for o in outputs for v in o["is_anomalous"])
    table = tiny.predict_frame(outputs, "test")
    score, _, flag, _ = predict_outputs(model, tiny.test_dataloader())
    np.testing.assert_allclose(table["score"], score.numpy(), rtol=1e-6)
    assert (table["is_anomalous"] == flag.numpy().astype(bool)).all() and len(table) == 24


def test_knn_baseline_3d_volume():
    dm = HealthcareDataModule(image_size=12, spatial_dims=3, sample={"n_train": 8, "n_val": 4, "n_test": 4})
    dm.setup("fit")
    result = evaluate_detector(KNNBaseline(pool=6), *(dm.arrays(s) for s in ("train", "val", "test")), keep_maps=True)
    assert result.predictions["maps"].shape == (4, 1, 12, 12, 12)


# --- models ----------------------------------------------------------------------------------
@pytest.mark.parametrize("network,kwargs", [("autoencoder", FAST_AE), ("vae", {**FAST_AE, "latent_size": 8}), ("padim", {"n_features": 16}), ("patchcore", {"coreset_size": 64})])
def test_every_model_trains_calibrates_and_round_trips(tiny, network, kwargs, tmp_path):
    torch.manual_seed(0)
    model = AnomalyDetector(net=_net(network, **kwargs), **tiny.model_kwargs())
    trainer = _trainer(1)
    trainer.fit(model, tiny)
    assert float(model.image_threshold) != 0.5 or float(model.image_max) != 1.0  # calibrated on validation
    assert model.threshold_rules == {"image": "best F1 on validation", "pixel": "best F1 on validation"}
    test = trainer.test(model, tiny, verbose=False)[0]
    assert {"test/image_auroc", "test/pixel_auroc", "test/aupro", "test/dice", "test/image_f1_max"} <= set(test)
    score, amap, flag, pflag = predict_outputs(model, tiny.test_dataloader())
    assert score.shape == (24,) and amap.shape == (24, 1, 32, 32) and ((0 <= amap) & (amap <= 1)).all()
    assert torch.equal(flag, (score >= 0.5).float())  # the flag is the normalised score against 0.5
    # buffers (thresholds, memory banks) persist through a weights-only checkpoint round trip
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True)
    restored = model_from_checkpoint(ckpt)
    again = predict_outputs(restored, tiny.test_dataloader())
    torch.testing.assert_close(again[0], score)
    assert torch.equal(again[2], flag) and restored.threshold_rules == model.threshold_rules


@pytest.mark.parametrize("network,kwargs", [("autoencoder", FAST_AE), ("patchcore", {"coreset_size": 64})])
def test_onnx_export_gives_the_same_decisions(tiny, tmp_path, network, kwargs):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = AnomalyDetector(net=_net(network, **kwargs), **tiny.model_kwargs())
    _trainer(1).fit(model, tiny)
    model.eval()
    x = torch.as_tensor(tiny.arrays("test")[0])
    torch.onnx.export(model, (x[:2],), tmp_path / "m.onnx", input_names=["images"], output_names=["score", "map", "flag", "pixel_flag"],
                      dynamic_axes={"images": {0: "batch"}}, dynamo=False)
    onnx_out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})
    with torch.no_grad():
        torch_out = model(x)
    np.testing.assert_allclose(onnx_out[0], torch_out[0].numpy(), atol=1e-4)
    assert (onnx_out[2] == torch_out[2].numpy()).mean() == 1.0


def test_every_model_on_a_tiny_volume():
    dm = HealthcareDataModule(image_size=16, spatial_dims=3, sample={"n_train": 8, "n_val": 4, "n_test": 4}, batch_size=4)
    dm.setup("fit")
    volume_models = (("autoencoder", FAST_AE), ("vae", {**FAST_AE, "latent_size": 8}), ("patchcore", {"coreset_size": 200}), ("padim", {"n_features": 16}))
    for network, kwargs in volume_models:
        model = AnomalyDetector(net=_net(network, **kwargs), **dm.model_kwargs())
        _trainer(1).fit(model, dm)
        score, amap, _, _ = predict_outputs(model, dm.test_dataloader())
        assert amap.shape == (4, 1, 16, 16, 16) and torch.isfinite(score).all()


def test_unknown_network_and_threshold_are_config_errors():
    with pytest.raises(ConfigError, match=r"model.net._target_='sectorkit.domains.healthcare.models.unet.UNet': cannot import it"):
        AnomalyDetector(net={"_target_": "sectorkit.domains.healthcare.models.unet.UNet"})
    with pytest.raises(ConfigError, match=r"model.net._target_='torch.nn.Identity': not a network"):
        AnomalyDetector(net={"_target_": "torch.nn.Identity"})
    with pytest.raises(ConfigError, match=r"model.net: cannot build PatchCoreDetector \(.*coreset_sise"):
        AnomalyDetector(net=_net("patchcore", coreset_sise=64))
    with pytest.raises(ConfigError, match="model.threshold='otsu': expected one of f1, fpr"):
        validate_overrides(DOMAIN, ["domain=healthcare", "model.threshold=otsu"])
    with pytest.raises(ConfigError, match="model.net.weights_path=/nonexistent/resnet18.pth"):
        AnomalyDetector(net=_net("patchcore", weights_path="/nonexistent/resnet18.pth"))
    with pytest.raises(ConfigError, match="model.net.backbone='vgg'"):
        AnomalyDetector(net=_net("classifier", backbone="vgg"))


def test_networks_declare_what_they_need():
    assert PatchCoreDetector.memory_bank and PaDiMDetector.memory_bank
    assert not any(cls.memory_bank for cls in (AutoEncoderDetector, VAEDetector, ClassifierDetector))
    assert ClassifierDetector.supervised and not any(cls.supervised for cls in (AutoEncoderDetector, VAEDetector, PatchCoreDetector, PaDiMDetector))
    # the data module reads them: only a supervised network is given the abnormal training images
    sample = {"n_train": 8, "n_val": 4, "n_test": 4}
    for network, abnormal in ((PatchCoreDetector, 0), (ClassifierDetector, 4), (None, 0)):
        dm = HealthcareDataModule(image_size=16, sample=sample, network=network)
        dm.setup("fit")
        assert dm.arrays("train")[2].sum() == abnormal


@pytest.mark.parametrize("network,kwargs", [("patchcore", {"coreset_size": 64}), ("padim", {"n_features": 16})])
def test_memory_bank_fits_without_optimizer_and_its_checkpoint_restores_the_bank(tiny, network, kwargs, tmp_path):
    """No trainable parameter and no optimizer; one epoch fills the bank, ModelCheckpoint saves it, test reloads it."""
    model = AnomalyDetector(net=_net(network, **kwargs), **tiny.model_kwargs())
    assert not any(p.requires_grad for p in model.parameters()) and model.configure_optimizers() is None
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val/image_auroc", mode="max", save_last=True)
    trainer = pl.Trainer(max_epochs=3, logger=False, callbacks=[checkpoint], enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, tiny)
    assert trainer.current_epoch == 1 and model.net.fitted and checkpoint.best_model_path
    test = trainer.test(model, tiny, ckpt_path="best", verbose=False)[0]
    assert np.isfinite(test["test/image_auroc"])
    restored = model_from_checkpoint(load_checkpoint(checkpoint.best_model_path))
    banks = model.net.bank_buffers
    assert all(torch.equal(getattr(restored.net, b), getattr(model.net, b)) for b in banks) and restored.net.fitted
    torch.testing.assert_close(predict_outputs(restored, tiny.test_dataloader())[0], predict_outputs(model, tiny.test_dataloader())[0])


def test_default_patchcore_beats_baselines_on_planted_lesions():
    """The default model (PatchCore, chosen in benchmarks/healthcare.py) on a fresh phantom sample."""
    from sectorkit.domains.healthcare.baselines import run_baselines

    torch.manual_seed(0)
    dm = HealthcareDataModule(image_size=32, sample={"n_train": 48, "n_val": 24, "n_test": 48}, batch_size=16, seed=0)
    dm.setup("fit")
    baselines = {k: v.metrics for k, v in run_baselines(dm).items()}
    model = AnomalyDetector(net=_net("patchcore", coreset_size=500), **dm.model_kwargs())
    trainer = _trainer(1)
    trainer.fit(model, dm)
    test = {k.removeprefix("test/"): v for k, v in trainer.test(model, dm, verbose=False)[0].items()}
    assert test["pixel_auroc"] > max(baselines["knn"]["pixel_auroc"], baselines["pca"]["pixel_auroc"])
    assert test["image_auroc"] > baselines["pca"]["image_auroc"]


def test_local_resnet_weights_are_loaded_and_adapted(tmp_path):
    """A torchvision-style ResNet-18 state dict (3-channel conv1, 'module.' prefix) loads into the 1-channel MONAI trunk."""
    from monai.networks.nets import ResNet
    from sectorkit.domains.healthcare.models.backbone import ResNetFeatures

    donor = ResNet(block="basic", layers=[2, 2, 2, 2], block_inplanes=[64, 128, 256, 512], spatial_dims=2, n_input_channels=3, num_classes=1000)
    state = {f"module.{k}": v for k, v in donor.state_dict().items()}
    torch.save(state, tmp_path / "resnet18.pth")
    features = ResNetFeatures(2, 1, weights_path=str(tmp_path / "resnet18.pth"))
    assert features.loaded > 50
    torch.testing.assert_close(features.net.conv1.weight, donor.conv1.weight.sum(1, keepdim=True))  # grey = RGB replicated
    torch.testing.assert_close(features.net.layer2[0].conv1.weight, donor.layer2[0].conv1.weight)
    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="no tensor matches a ResNet-18"):
        ResNetFeatures(2, 1, weights_path=str(tmp_path / "other.pth"))


def test_supervised_classifier_learns_from_abnormal_training_labels():
    torch.manual_seed(0)
    dm = HealthcareDataModule(image_size=32, sample={"n_train": 32, "n_val": 16, "n_test": 48}, batch_size=16, seed=0, network=ClassifierDetector)
    dm.setup("fit")
    assert dm.arrays("train")[2].sum() == 16
    model = AnomalyDetector(net=_net("classifier", backbone="resnet18"), **dm.model_kwargs())
    trainer = _trainer(2)
    trainer.fit(model, dm)
    test = trainer.test(model, dm, verbose=False)[0]
    assert np.isfinite(test["test/image_auroc"])
    score, amap, _, _ = predict_outputs(model, dm.test_dataloader())
    assert amap.shape == (48, 1, 32, 32) and torch.allclose(amap.amax((1, 2, 3)), amap.amin((1, 2, 3)))


def test_memory_models_stop_after_one_pass(tiny):
    model = AnomalyDetector(net=_net("padim", n_features=16), **tiny.model_kwargs())
    trainer = _trainer(5)
    trainer.fit(model, tiny)
    assert trainer.current_epoch == 1 and model.net.fitted
