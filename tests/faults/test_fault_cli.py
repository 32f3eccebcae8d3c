"""Faults through the real command line (``sectorkit.core.cli.main`` in this process; a subprocess only where a
second process matters): each ends in a one-line error with exit status 2 and no traceback, and leaves no
half-written output. The whole catalogue runs through the CLI under ``-m slow`` (and in benchmarks/faults.py);
the default run takes a few faults per domain and every fault that is not about a file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from fault_catalogue import (
    DATA_TARGETS,
    DOMAINS,
    PRESETS,
    SMOKE,
    catalogue,
    half_written,
    hold_lock,
    one_line_error,
    payload_checkpoint,
    run_cli,
)

FAULTS = {f.id: f for f in catalogue()}
DEFAULT_FILE_FAULTS = ["finance:inf amount", "retail:retail folder for a file", "agriculture:inf covariate",
                       "healthcare:manifest ../ traversal", "healthcare:manifest folder for a file"]


def refused(argv: list[str], root: Path, expected: str) -> str:
    """Run the CLI and check: status 2, exactly one ``sectorkit: error:`` line matching ``expected``, no traceback,
    nothing half-written under ``root``."""
    status, stderr = run_cli(argv, root)
    line = one_line_error(stderr)
    assert status == 2 and line is not None, (status, stderr[-3000:])
    assert re.search(expected, line), line
    assert half_written(root) == []
    return line


def check(fault, tmp_path: Path) -> None:
    path = fault.make(tmp_path)
    status, stderr = run_cli(fault.argv(path), tmp_path / "root")
    if fault.expect is None:
        assert status == 0, stderr[-3000:]
        assert list((tmp_path / "root").rglob("metrics.json"))
    else:
        line = one_line_error(stderr)
        assert status == 2 and line is not None and re.search(fault.expect, line), (status, stderr[-3000:])
    assert half_written(tmp_path) == []


@pytest.mark.parametrize("name", DEFAULT_FILE_FAULTS)
def test_file_faults_through_the_cli(name, tmp_path) -> None:
    check(FAULTS[name], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAULTS))
def test_every_file_fault_through_the_cli(name, tmp_path) -> None:
    check(FAULTS[name], tmp_path)


@pytest.mark.parametrize(("domain", "override", "expected"), [
    ("finance", "seed=", r"seed=''"),
    ("retail", "data.batch_size=0", r"data\.batch_size=0: expected a value >= 1"),
    ("agriculture", "optimizer.lr=-1", r"optimizer\.lr=-1(\.0)?: expected a value > 0"),
    ("healthcare", "trainer.devices=100000", r"trainer\.devices=100000"),
])
def test_config_values_out_of_range(domain, override, expected, tmp_path) -> None:
    refused(["train", f"domain={domain}", override], tmp_path, expected)


@pytest.mark.parametrize("preset", ["finance", "retail", "agriculture_yield", "healthcare"])
def test_an_empty_data_path_on_a_file_preset_is_refused_not_the_sample(preset, tmp_path) -> None:
    domain = preset.split("_")[0]
    refused(["train", f"domain={domain}", *PRESETS[preset], "data.path="], tmp_path, r"data\.path is empty")
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained on the built-in sample


@pytest.mark.parametrize("domain", ["finance", "healthcare"])
def test_a_shared_data_preset_naming_a_target_outside_the_allow_list_is_refused(domain, tmp_path) -> None:
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "shared.yaml").write_text("_target_: shutil.copyfile\nsrc: /etc/hostname\ndst: /tmp/copied\n")
    refused(["train", f"domain={domain}", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "data=shared"], tmp_path,
            r"data\._target_='shutil\.copyfile': not a target a config may name")


# --- checkpoints ------------------------------------------------------------------------------------------
def record(domain: str, model_name: str, data: dict) -> dict:
    return {"domain": domain, "model_name": model_name, "data": {"_target_": DATA_TARGETS[domain], **data}, "monitor": {"metric": "x", "mode": "max"}}


def checkpoint(path: Path, run_record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "global_step": 3, "sectorkit_run": run_record}, path)
    return path


@pytest.mark.parametrize(("task", "domain", "other"), [("evaluate", "finance", "retail"), ("predict", "healthcare", "agriculture"),
                                                       ("train", "retail", "finance")])
def test_another_domains_checkpoint_is_refused(task, domain, other, tmp_path) -> None:
    ckpt = checkpoint(tmp_path / "other.ckpt", record(other, "some_model", {}))
    refused([task, f"domain={domain}", f"ckpt_path={ckpt}"], tmp_path / "root", rf"domain {other!r}")


@pytest.mark.parametrize("task", ["evaluate", pytest.param("train", marks=pytest.mark.slow), pytest.param("export", marks=pytest.mark.slow),
                                  pytest.param("predict", marks=pytest.mark.slow)])
def test_a_checkpoint_that_would_run_code_is_refused(task, tmp_path) -> None:
    payload = payload_checkpoint(tmp_path / "payload.ckpt")
    refused([task, "domain=retail", f"ckpt_path={payload}"], tmp_path / "root",
            r"payload\.ckpt: the checkpoint would call posix\.system when unpickled")


def test_ckpt_path_last_refuses_a_run_of_another_model_or_data_and_names_it(tmp_path) -> None:
    runs = tmp_path / "outputs" / "agriculture" / "runs"
    other_model = checkpoint(runs / "2020-01-01_00-00-00" / "checkpoints" / "last.ckpt", record("agriculture", "patchtst", {}))
    line = refused(["train", "domain=agriculture", "model=gru", "ckpt_path=last"], tmp_path,
                   r"ckpt_path=last: the newest run .*2020-01-01_00-00-00 .* was trained with model 'patchtst', not 'gru'")
    assert str(other_model) in line
    os.utime(other_model, (1, 1))  # now older than the next one
    checkpoint(runs / "2020-01-02_00-00-00" / "checkpoints" / "last.ckpt", record("agriculture", "gru", {"path": "/elsewhere/weather.csv"}))
    refused(["train", "domain=agriculture", "model=gru", "ckpt_path=last"], tmp_path,
            r"2020-01-02_00-00-00 .* was trained with data \(fingerprint \w+ vs \w+: data\.")
    refused(["train", "domain=agriculture", "model=gru", f"ckpt_path={other_model}"], tmp_path,
            r"cannot resume this checkpoint: it was trained with model 'patchtst', not 'gru'")


def test_record_differences_name_what_changed() -> None:
    from sectorkit.core.run_record import data_fingerprint, record_differences

    data = {"_target_": "x.Data", "path": "/a.csv", "batch_size": 32, "num_workers": 0}
    current = {"domain": "finance", "model_name": "mlp", "model": {"net": {"hidden": 64}}, "data": data, "data_fingerprint": data_fingerprint(data)}
    assert record_differences({**current}, current) == []
    assert record_differences({**current, "data": {**data, "num_workers": 4}, "data_fingerprint": None}, current) == []  # loader-only key
    moved = {**data, "path": "/b.csv"}
    assert record_differences({**current, "data": moved, "data_fingerprint": data_fingerprint(moved)}, current) == [
        f"data (fingerprint {data_fingerprint(moved)} vs {current['data_fingerprint']}: data.path: '/b.csv' -> '/a.csv')"]
    assert record_differences({**current, "model": {"net": {"hidden": 32}}}, current) == ["model config model.net.hidden: 32 -> 64"]
    assert record_differences({**current, "domain": "retail"}, current) == ["domain 'retail', not 'finance'"]
    assert record_differences(None, current)[0].startswith("the checkpoint has no run record")


def test_a_second_run_into_a_claimed_folder_stops_at_once(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    other = hold_lock(folder, seconds=60)
    try:
        refused(["train", "domain=retail", f"hydra.run.dir={folder}", *SMOKE], tmp_path,
                rf"{folder}: another run \(process {other.pid}\) is writing into this run folder")
    finally:
        other.kill()
        other.wait()
    assert not {"checkpoints", "metrics.json", "predictions.csv"} & {p.name for p in folder.iterdir()}  # nothing mixed in


def test_a_read_only_output_folder_is_one_line(tmp_path) -> None:
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
    elif Path("/sys").is_dir():
        folder = Path("/sys") / "sectorkit-faults"  # sysfs refuses new folders even to root
    else:
        pytest.skip("no read-only folder to write to")
    refused(["train", "domain=finance", f"hydra.run.dir={folder}/run"], tmp_path, rf"{folder}|the run folder cannot be written")


def test_every_domain_is_covered() -> None:
    assert {f.domain for f in FAULTS.values()} == set(DOMAINS)
