"""Pretrained backbones through transformers (tiny DINOv2 / ResNet configs saved locally with save_pretrained), the
offline error, AnomalyDINO, and the self-supervised MAE backbone: pretrain, save, reload, checkpoint, the CLI path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from sectorkit.core.checkpoint import load_checkpoint, model_from_checkpoint
from sectorkit.core.config import compose_config
from sectorkit.core.errors import ConfigError
from sectorkit.core.network import build_network
from sectorkit.core.pipeline import run_train
from sectorkit.domains.healthcare import DOMAIN
from sectorkit.domains.healthcare.data import HealthcareDataModule
from sectorkit.domains.healthcare.models.anomalydino import AnomalyDINODetector
from sectorkit.domains.healthcare.models.hf_backbone import PretrainedFeatures, load_backbone
from sectorkit.domains.healthcare.models.mae import MAEPatchCore
from sectorkit.domains.healthcare.models.padim_pretrained import PretrainedPaDiM
from sectorkit.domains.healthcare.models.patchcore_pretrained import PretrainedPatchCore
from sectorkit.domains.healthcare.module import AnomalyDetector, predict_outputs
from transformers import Dinov2Config, Dinov2Model, ResNetConfig, ResNetModel

warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
TINY_MAE = {"patch_size": 4, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "batch_size": 16}
QUIET = ["~logger", "callbacks.progress_bar=null", "callbacks.model_summary=null", "runtime.torch_threads=1"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """Tiny randomly initialised DINOv2 and ResNet models written with save_pretrained (safetensors)."""
    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64)).save_pretrained(root / "dinov2")
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])).save_pretrained(root / "resnet")
    return {"dinov2": str(root / "dinov2"), "resnet": str(root / "resnet")}


@pytest.fixture(scope="module")
def tiny() -> HealthcareDataModule:
    dm = HealthcareDataModule(image_size=32, sample={"n_train": 16, "n_val": 8, "n_test": 8}, batch_size=8)
    dm.setup("fit")
    return dm


def _fit(net: dict, dm: HealthcareDataModule) -> AnomalyDetector:
    model = AnomalyDetector(net=net, **dm.model_kwargs())
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               num_sanity_val_steps=0).fit(model, dm)
    return model


def _target(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_backbones_load_from_local_folders_grey_to_three_channels(folders):
    dino = PretrainedFeatures.from_name(folders["dinov2"], image_size=48)
    assert isinstance(dino.model, Dinov2Model) and dino.num_channels == 3 and dino.input_size == 32  # the config's image size
    maps = dino(torch.rand(2, 1, 48, 48))
    assert [tuple(m.shape) for m in maps] == [(2, 32, 8, 8)] * 2 and dino.channels == 64  # blocks 1 and 2, 8x8 patches
    assert not any(p.requires_grad for p in dino.parameters()) and not dino.train().training
    res = PretrainedFeatures.from_name(folders["resnet"], image_size=32, layers=[1, 2])
    assert isinstance(res.model, ResNetModel) and res.channels == 8 + 16
    assert [tuple(m.shape[1:]) for m in res(torch.rand(2, 1, 32, 32))] == [(8, 8, 8), (16, 4, 4)]
    # the images matter: the features of two different images differ
    a, b = res(torch.rand(1, 1, 32, 32))[0], res(torch.zeros(1, 1, 32, 32))[0]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("kind,cls,kwargs", [("dinov2", PretrainedPatchCore, {"coreset_size": 200}), ("resnet", PretrainedPatchCore, {"layers": [1, 2]}),
                                             ("resnet", PretrainedPaDiM, {"layers": [1, 2], "n_features": 16}),
                                             ("dinov2", AnomalyDINODetector, {})])
def test_pretrained_detectors_fit_and_score(tiny, folders, kind, cls, kwargs):
    model = _fit({"_target_": _target(cls), "backbone": folders[kind], **kwargs}, tiny)
    assert model.net.fitted and model.configure_optimizers() is None  # frozen backbone: nothing to optimise
    score, amap, _, _ = predict_outputs(model, tiny.test_dataloader())
    assert amap.shape == (8, 1, 32, 32) and torch.isfinite(amap).all() and score.std() > 0
    if cls is PretrainedPatchCore:
        assert len(model.net.bank) == min(kwargs.get("coreset_size", 2000), 16 * 8 * 8)  # 8x8 patches (DINOv2) or stage-1 positions (ResNet) per image


def test_anomalydino_scores_training_patches_zero_and_background_zero(folders):
    net = AnomalyDINODetector(image_size=32, backbone=folders["dinov2"])
    normal = torch.rand(4, 1, 32, 32) * 0.5 + 0.3
    net.collect(normal)
    net.fit_memory()
    assert net(normal).abs().max() < 1e-4  # each patch finds itself in the bank
    assert net(torch.zeros(1, 1, 32, 32)).abs().max() == 0  # dark background is masked
    assert net(normal.flip(-1) * 1.5).max() > 1e-3


def test_offline_without_weights_the_error_names_the_model_and_how_to_fetch_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    name = "sectorkit-tests/not-downloaded"
    with pytest.raises(ConfigError) as err:
        build_network({"_target_": _target(PretrainedPatchCore), "backbone": name}, spatial_dims=2, in_channels=1, image_size=32)
    message = str(err.value)
    assert "\n" not in message and f"model.net.backbone={name}" in message
    assert f"hf download {name}" in message and f"huggingface-cli download {name}" in message and "model.net.backbone=/path/to/folder" in message


def test_local_folder_errors_and_safetensors_only(tmp_path, folders):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        load_backbone(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="no such folder"):
        load_backbone(str(tmp_path / "missing"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(Path(folders["resnet"], "config.json").read_text())
    torch.save(ResNetModel.from_pretrained(folders["resnet"]).state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="only safetensors"):
        load_backbone(str(pickled))
    with pytest.raises(ConfigError, match="data.spatial_dims=3"):
        PretrainedPatchCore(spatial_dims=3, image_size=16, backbone=folders["resnet"])


def test_mae_pretrains_saves_a_backbone_the_detectors_reload_and_checkpoints_restore(tiny, tmp_path):
    folder = tmp_path / "backbone"
    net = {"_target_": _target(MAEPatchCore), **TINY_MAE, "epochs": 3, "save_to": str(folder), "coreset_size": 200}
    model = _fit(net, tiny)
    losses = model.net.pretrain_losses
    assert len(losses) == 3 and losses[-1] < losses[0] and bool(model.net.pretrained)
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in folder.iterdir()}
    stats = json.loads((folder / "preprocessor_config.json").read_text())
    assert stats["image_mean"][0] == pytest.approx(float(model.net.pixel_stats[0]))
    images = torch.as_tensor(tiny.arrays("test")[0])
    reloaded = PretrainedFeatures.from_name(str(folder), image_size=32)
    for own, again in zip(model.net.backbone(images), reloaded(images), strict=True):  # the saved folder is the same backbone
        torch.testing.assert_close(own, again, rtol=1e-4, atol=1e-4)
    ckpt = tmp_path / "m.ckpt"
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(ckpt)
    restored = model_from_checkpoint(load_checkpoint(ckpt))
    torch.testing.assert_close(predict_outputs(restored, tiny.test_dataloader())[0], predict_outputs(model, tiny.test_dataloader())[0])


def test_mae_pretraining_changes_the_backbone_and_zero_epochs_keep_the_random_init(tiny):
    random_init = _fit({"_target_": _target(MAEPatchCore), **TINY_MAE, "epochs": 0, "coreset_size": 50}, tiny)
    assert random_init.net.pretrain_losses == []
    fresh = MAEPatchCore(image_size=32, **TINY_MAE, epochs=0)
    same = all(torch.equal(a, b) for a, b in zip(random_init.net.backbone.model.state_dict().values(), fresh.backbone.model.state_dict().values(), strict=True))
    assert same  # seeded: the random-init control is reproducible


@pytest.mark.parametrize("model", ["patchcore_dinov2", "patchcore_resnet50", "padim_resnet50", "anomalydino"])
def test_every_pretrained_config_builds_with_a_local_folder(model, folders):
    cfg = compose_config(DOMAIN, [f"model={model}", "paths.output_dir=/tmp/x", f"model.net.backbone={folders['resnet' if 'resnet' in model else 'dinov2']}",
                                  *(["model.net.input_size=32"] if "resnet" in model else [])])
    module = instantiate(cfg.model, spatial_dims=2, in_channels=1, image_size=32, optimizer=cfg.optimizer, _recursive_=False)
    assert module.net.backbone.model.config.model_type in ("dinov2", "resnet")


def test_pretrain_experiment_through_the_pipeline_saves_the_backbone_in_the_run_folder(tmp_path):
    run = tmp_path / "run"
    cfg = compose_config(DOMAIN, ["experiment=quick", "experiment=pretrain", f"paths.output_dir={run}", *QUIET, "data.image_size=32",
                                  "data.sample.n_train=16", "data.sample.n_val=8", "data.sample.n_test=8", "model.net.epochs=2",
                                  "model.net.hidden_size=32", "model.net.num_layers=1", "model.net.num_heads=2", "with_baselines=false",
                                  "data.max_heatmaps=0"])
    assert cfg.model.net.save_to == str(run / "backbone")
    run_train(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["test"]["image_auroc"]) and metrics["epochs"] == 1
    assert (run / "backbone" / "model.safetensors").is_file()
    again = build_network({"_target_": _target(AnomalyDINODetector), "backbone": str(run / "backbone")}, spatial_dims=2, in_channels=1, image_size=32)
    assert again.backbone.model.config.model_type == "vit_mae"


def test_anatomy_generator_writes_a_folder_the_data_module_reads(tmp_path):
    """The benchmark's real-anatomy set, from a small synthetic NIfTI volume standing in for the template."""
    import nibabel as nib

    from benchmarks.healthcare_pretrained import TEMPLATE, write_anatomy_folder

    axis = np.linspace(-1, 1, 40)
    x, y, z = np.meshgrid(axis, axis, np.linspace(-1, 1, 12), indexing="ij")
    volume = np.where(x**2 / 0.6 + y**2 / 0.8 + z**2 < 1, 80 + 40 * (np.abs(x) < 0.2), 0).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / TEMPLATE))
    root = write_anatomy_folder(tmp_path / "anatomy", tmp_path, size=24, n_train=6, n_val=4, n_test=4, seed=0)
    dm = HealthcareDataModule(path=str(root), image_size=24, batch_size=4)
    dm.setup("fit")
    images, masks, labels = dm.arrays("test")
    assert len(dm.records["train"]) == 6 and labels.tolist() == [0, 0, 1, 1]
    assert all(masks[i].sum() > 0 for i in (2, 3)) and masks[:2].sum() == 0  # lesions only in abnormal images, inside the brain
    assert (images[2:][masks[2:] > 0] > 0).all()


@pytest.mark.parametrize("cls", [PretrainedPatchCore, AnomalyDINODetector])
def test_onnx_export_of_a_pretrained_detector_gives_the_same_decisions(tiny, folders, tmp_path, cls):
    import onnxruntime as ort

    model = _fit({"_target_": _target(cls), "backbone": folders["dinov2"]}, tiny)
    model.eval()
    x = torch.as_tensor(tiny.arrays("test")[0])
    torch.onnx.export(model, (x[:2],), tmp_path / "m.onnx", input_names=["images"], output_names=["score", "map", "flag", "pixel_flag"],
                      dynamic_axes={"images": {0: "batch"}}, dynamo=False)
    onnx_out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})  # another batch size than exported
    with torch.no_grad():
        torch_out = model(x)
    np.testing.assert_allclose(onnx_out[0], torch_out[0].numpy(), atol=1e-4)
    assert (onnx_out[2] == torch_out[2].numpy()).all()
