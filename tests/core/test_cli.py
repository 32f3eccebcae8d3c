"""Command-line errors are one line that names the fault and the valid choices; `domains` lists every domain."""

from __future__ import annotations

import pytest

from sectorkit.core.cli import main


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "domain=financ"], "unknown domain 'financ'; valid choices for 'domain': agriculture, finance, healthcare, retail"),
        (["train", "model=mlp"], "choose a domain with domain=<name>; registered domains: agriculture, finance, healthcare, retail"),
        (["train", "domain=finance", "model=mlpp"], "unknown model 'mlpp' for domain 'finance' (did you mean 'mlp'?); valid choices for 'model': "
                                                    "auto, autoencoder, ft_transformer, gbdt, linear, mlp, mlp_small"),
        (["train", "domain=retail", "data=movielens"], "valid choices for 'data': file, ml100k, sample"),
        (["train", "domain=finance", "trainer=gpux"], "unknown trainer 'gpux' for domain 'finance' (did you mean 'gpu'?)"),
        (["train", "domain=finance", "trainer.max_epoc=3"], "unknown config key 'trainer.max_epoc' (did you mean 'trainer.max_epochs'"),
        (["train", "domain=agriculture", "data.lookbak=3"], "unknown config key 'data.lookbak' (did you mean 'data.lookback'?)"),
        (["train", "domain=finance", "trainer.max_epochs=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
        (["train", "domain=finance,retail"], "sweep one domain at a time"),
        (["evaluate", "domain=finance", "ckpt_path=/no/such.ckpt"], "ckpt_path: no such file /no/such.ckpt"),
        (["evaluate", "domain=finance", "model=mlp,ft_transformrr"], "unknown model 'ft_transformrr'"),
        (["export", "domain=finance", "format=tflite", "ckpt_path=/no/such.ckpt"], "format='tflite': expected one of onnx, torchscript"),  # checked before the checkpoint is read
    ],
)
def test_bad_command_lines_give_one_line_errors(args, expected, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sectorkit: error: ") and expected in err and "\n" not in err and "Traceback" not in err


def test_debug_flag_shows_the_exception(monkeypatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    from sectorkit.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown domain"):
        main(["train", "domain=nope", "--debug"])


def test_domains_lists_models_data_and_primary_metric(capsys) -> None:
    assert main(["domains"]) == 0
    out = capsys.readouterr().out
    for text in ("finance", "healthcare", "retail", "agriculture", "ft_transformer", "lightgcn", "patchcore", "patchtst", "ndcg@10",
                 "image_auroc", "mae"):
        assert text in out


def test_unknown_subcommand_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "domain=finance"])
    assert exit_info.value.code == 2 and "invalid choice: 'fit'" in capsys.readouterr().err


def test_cfg_flag_prints_the_composed_config_without_running(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    assert main(["train", "domain=retail", "model=lightgcn", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "domain: retail" in out and "_target_: sectorkit.domains.retail.models.lightgcn.LightGCN" in out
    assert not list(tmp_path.rglob("metrics.json"))  # nothing ran
    assert main(["train", "domain=retail", "--bogus"]) == 2
