"""The config tree: every core preset composes for every domain, schemas reject bad values, and the
launcher / sweep / DDP presets say what they promise."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from sectorkit.core.config import compose_config, core_options, validate_overrides
from sectorkit.core.errors import ConfigError
from sectorkit.core.registry import discover, get_domain
from sectorkit.core.trainer import build_trainer, resolve_precision

DOMAINS = list(discover())
PRESETS = [(group, option) for group in ("trainer", "callbacks", "logger", "optimizer", "scheduler", "debug") for option in core_options(group)]


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize(("group", "option"), PRESETS)
def test_every_core_preset_composes_for_every_domain(domain, group, option) -> None:
    cfg = compose_config(get_domain(domain), [f"{group}={option}", "paths.output_dir=/tmp/sectorkit-compose"])
    assert cfg.domain == domain and cfg.monitor.metric and cfg.monitor.mode in ("max", "min")
    assert cfg.data._target_ and cfg.model._target_


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_options_compose(domain) -> None:
    d = get_domain(domain)
    for group in ("data", "model", "experiment"):
        for option in d.options(group):
            cfg = compose_config(d, [f"{group}={option}"])
            assert cfg.domain == domain


def test_schema_rejects_wrong_types_and_unknown_keys() -> None:
    finance = get_domain("finance")
    with pytest.raises(ConfigCompositionException):
        compose_config(finance, ["trainer.max_epochs=ten"])
    with pytest.raises(ConfigCompositionException):
        compose_config(finance, ["trainer.max_epoch=3"])
    with pytest.raises(ConfigCompositionException):
        compose_config(finance, ["runtime.torch_threads=many"])
    assert compose_config(finance, ["+trainer.extra.gradient_clip_algorithm=value"]).trainer.extra.gradient_clip_algorithm == "value"


def test_ddp_cpu_preset_builds_a_two_process_gloo_trainer() -> None:
    cfg = compose_config(get_domain("finance"), ["trainer=ddp_cpu", "paths.output_dir=/tmp/sectorkit-compose", "~logger"])
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy) == ("cpu", 2, "ddp")
    trainer = build_trainer(cfg)
    assert trainer.num_devices == 2 and type(trainer.strategy).__name__ == "DDPStrategy"
    assert trainer.strategy.root_device.type == "cpu"  # so torch.distributed uses gloo


def test_precision_auto_is_full_precision_on_cpu() -> None:
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_slurm_launcher_and_multinode_presets_compose() -> None:
    cfg = compose_config(get_domain("retail"), ["launcher=slurm", "trainer=multinode", "trainer.num_nodes=4"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.nodes == 4 and launcher.tasks_per_node == launcher.gpus_per_node
    assert cfg.trainer.num_nodes == 4 and cfg.trainer.strategy == "ddp"


def test_default_callbacks_follow_the_primary_metric() -> None:
    cfg = compose_config(get_domain("agriculture"), ["paths.output_dir=/tmp/sectorkit-compose"])
    checkpoint = instantiate(cfg.callbacks.model_checkpoint)
    stopping = instantiate(cfg.callbacks.early_stopping)
    assert checkpoint.monitor == stopping.monitor == "val/mae" and checkpoint.mode == stopping.mode == "min"
    assert checkpoint.save_last and checkpoint.save_top_k == 1


@pytest.mark.parametrize("domain", ["healthcare", "finance", "retail", "agriculture"])
def test_typed_data_and_model_configs_reject_typos_wrong_types_and_bad_ranges(domain) -> None:
    d = get_domain(domain)
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.batch_sise' \(did you mean 'data\.batch_size'"):
        validate_overrides(d, [f"domain={domain}", "data.batch_sise=3"])
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        validate_overrides(d, [f"domain={domain}", "data.batch_size=many"])
    with pytest.raises(ConfigError, match=r"model\.compiel"):
        validate_overrides(d, [f"domain={domain}", "model.compiel=true"])
    with pytest.raises(ConfigError, match=r"optimizer\.lr=-1\.0: expected a value > 0"):
        validate_overrides(d, [f"domain={domain}", "optimizer.lr=-1"])
    with pytest.raises(ConfigError, match=r"data\.batch_size=0: expected a value >= 1"):
        validate_overrides(d, [f"domain={domain}", "data.batch_size=0"])
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs=-5: expected a value >= -1"):
        validate_overrides(d, [f"domain={domain}", "trainer.max_epochs=-5"])


def test_top_level_run_keys_are_typed() -> None:
    retail = get_domain("retail")
    for override, message in [("seed=", r"seed='': Value '' of type 'str' could not be converted to Integer"),
                              ("format=pt", r"format='pt': expected one of onnx, torchscript"),
                              ("with_baselines=maybe", r"with_baselines='maybe'")]:
        with pytest.raises(ConfigError, match=message):
            validate_overrides(retail, ["domain=retail", override])


def test_a_shared_preset_cannot_make_a_run_call_arbitrary_code(tmp_path) -> None:
    """A preset in a config folder of someone else's naming torch.load (which would unpickle a payload, bypassing
    allow_unsafe_checkpoint) or pathlib.Path.touch is refused before anything runs; allow_any_target=true opts out."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "shared.yaml").write_text(
        "# @package _global_\ncallbacks:\n  payload:\n    _target_: torch.load\n    f: /tmp/payload.pkl\n    weights_only: false\n")
    finance = get_domain("finance")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    with pytest.raises(ConfigError, match=r"callbacks\.payload\._target_='torch\.load': not a target a config may name"):
        validate_overrides(finance, ["domain=finance", searchpath, "experiment=shared"])
    with pytest.raises(ConfigError, match=r"callbacks\.x\._target_='pathlib\.Path\.touch'"):
        validate_overrides(finance, ["domain=finance", "+callbacks.x._target_=pathlib.Path.touch", "+callbacks.x.self=/tmp/x"])
    validate_overrides(finance, ["domain=finance", searchpath, "experiment=shared", "allow_any_target=true"])
    for preset in ("tensorboard", "mlflow", "csv"):  # every shipped preset passes
        validate_overrides(finance, ["domain=finance", f"logger={preset}"])
