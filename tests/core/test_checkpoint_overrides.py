"""``data.<key>=...`` given with a checkpoint is checked against the data preset the checkpoint was trained with."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from sectorkit.core.config import compose_config, validate_overrides
from sectorkit.core.errors import ConfigError
from sectorkit.core.registry import get_domain
from sectorkit.core.run_record import RECORD_KEY, checkpoint_data_preset, data_config


def test_a_crop_yield_checkpoint_takes_its_own_data_keys(tmp_path) -> None:
    domain = get_domain("agriculture")
    recorded = OmegaConf.to_container(compose_config(domain, ["data=yield", "data.test_years=3"]).data, resolve=True)
    checkpoint = tmp_path / "yield.ckpt"
    torch.save({RECORD_KEY: {"domain": "agriculture", "model_name": "yield_mlp", "data": recorded}}, checkpoint)
    overrides = [f"ckpt_path={checkpoint}", "data.protocol=expanding_window"]
    with pytest.raises(ConfigError, match="data.protocol"):  # the default (weather) preset has no such key
        validate_overrides(domain, overrides)

    added = checkpoint_data_preset(domain, "evaluate", overrides)
    assert added[0] == "data=yield"
    validate_overrides(domain, [*overrides, *added])
    cfg = compose_config(domain, ["task=evaluate", *overrides, *added])
    rebuilt = data_config(cfg, {"data": recorded}, [*overrides, *added])
    assert rebuilt.protocol == "expanding_window" and rebuilt.test_years == 3  # the override on top of the record, not the preset
    with pytest.raises(ConfigError, match="not_a_protocol|protocol"):
        validate_overrides(domain, [f"ckpt_path={checkpoint}", "data.protocol=not_a_protocol", *added])

    assert checkpoint_data_preset(domain, "train", overrides) == []  # training composes what the user says
    assert checkpoint_data_preset(domain, "evaluate", [*overrides, "data=weather"]) == []  # an explicit preset is the user's
    assert checkpoint_data_preset(domain, "evaluate", [f"ckpt_path={checkpoint}"]) == []  # no data.* override: nothing to check
