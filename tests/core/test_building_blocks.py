"""Core building blocks in isolation: atomic writes, precision choice, plain hyper-parameters, lazy hooks,
export parity, checkpoint refusal, thread defaults."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from sectorkit.core.checkpoint import load_checkpoint
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.export import parity
from sectorkit.core.io import atomic_write_json, atomic_write_table, atomic_write_text
from sectorkit.core.module import plain_container
from sectorkit.core.registry import lazy
from sectorkit.core.runtime import default_torch_threads
from sectorkit.core.schema import bounded, check_ranges, one_of
from sectorkit.core.trainer import resolve_precision


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"ap": 0.5})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"ap": object()})  # not JSON-serialisable: fails mid-write
    assert json.loads(target.read_text()) == {"ap": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_tables_round_trip_as_csv_and_parquet(tmp_path) -> None:
    frame = pd.DataFrame({"id": [1, 2], "score": [0.25, 0.75]})
    for name in ("p.csv", "p.parquet"):
        path = atomic_write_table(frame, tmp_path / "sub" / name)
        back = pd.read_parquet(path) if name.endswith("parquet") else pd.read_csv(path)
        pd.testing.assert_frame_equal(back, frame)
    assert atomic_write_text(tmp_path / "a.md", "x").read_text() == "x"


def test_json_writes_nan_as_null_and_tensors_as_numbers(tmp_path) -> None:
    path = atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": torch.tensor(0.5), "c": np.float32(2.0)})
    assert json.loads(path.read_text()) == {"a": None, "b": 0.5, "c": 2.0}


def test_precision_auto_follows_the_device(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "auto") == "bf16-mixed" and resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", "gpu") == "16-mixed"
    assert resolve_precision("32-true", "gpu") == "32-true"


def test_plain_container_turns_configs_into_dicts_and_lists() -> None:
    cfg = OmegaConf.create({"net": {"hidden": [64, 32], "act": "relu"}, "lr": "${x}", "x": 0.1})
    plain = plain_container({"net": cfg.net, "q": (0.1, 0.9), "lr": cfg.lr})
    assert plain == {"net": {"hidden": [64, 32], "act": "relu"}, "q": [0.1, 0.9], "lr": 0.1}
    assert type(plain["net"]) is dict and type(plain["net"]["hidden"]) is list


def test_lazy_hook_imports_on_first_call() -> None:
    hook = lazy("json:dumps")
    assert hook.__name__ == "dumps" and hook({"a": 1}) == '{"a": 1}'
    with pytest.raises(ModuleNotFoundError):
        lazy("no_such_module_x:f")()


def test_parity_flags_a_mismatch_and_tolerates_rare_flipped_decisions() -> None:
    expected = [torch.tensor([0.1, 0.2, float("-inf")]), torch.zeros(2000, dtype=torch.bool)]
    flipped = np.zeros(2000, dtype=bool)
    flipped[0] = True  # 1 of 2000 decisions at a threshold: allowed
    ok = parity(expected, [np.array([0.1, 0.2 + 1e-6, -np.inf]), flipped])
    assert ok["passed"] and ok["outputs"][1]["share_different"] == pytest.approx(0.0005)
    bad = parity(expected, [np.array([0.1, 0.25, -np.inf]), flipped])
    assert not bad["passed"] and bad["max_abs_diff"] == pytest.approx(0.05)
    assert not parity(expected, [np.array([0.1, 0.2, 0.0]), flipped])["passed"]  # -inf must stay -inf


def test_checkpoint_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="ckpt_path is not set"):
        load_checkpoint(None)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"junk\.ckpt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}, "extra": pd.Timestamp("2020-01-01")}, tmp_path / "pickled.ckpt")
    with pytest.raises(DataError, match=r"pickled\.ckpt: .*allow_unsafe_checkpoint=true"):
        load_checkpoint(tmp_path / "pickled.ckpt")
    assert "extra" in load_checkpoint(tmp_path / "pickled.ckpt", allow_unsafe=True)


def test_thread_default_leaves_room_and_respects_omp(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert (default_torch_threads(1), default_torch_threads(2), default_torch_threads(32)) == (8, 4, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_torch_threads(1) == 3


def test_checkpoints_are_written_atomically_and_a_full_disk_is_one_line(tmp_path, monkeypatch) -> None:
    import errno
    import os

    from sectorkit.core.checkpoint import AtomicCheckpointIO, newest_readable
    from sectorkit.core.errors import SectorkitError

    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, target)
    assert torch.load(target, weights_only=True)["step"] == 1

    def full_disk(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SectorkitError, match=rf"{target.parent}: cannot write the checkpoint last.ckpt \(No space left on device\)"):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["step"] == 1  # the previous checkpoint is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temporary file left

    older = tmp_path / "older" / "last.ckpt"
    io.save_checkpoint({"step": 0}, older)
    os.utime(older, (1, 1))
    target.write_bytes(b"truncated")  # as a copy cut short would leave it
    assert newest_readable([target, older]) == older


def test_a_claimed_run_folder_refuses_a_second_run(tmp_path) -> None:
    import subprocess
    import sys

    from sectorkit.core.run_lock import claim_run_folder

    holder = "import sys, time; from pathlib import Path; from sectorkit.core.run_lock import claim_run_folder\n" \
             "with claim_run_folder(Path(sys.argv[1])):\n    print('claimed', flush=True); time.sleep(30)"
    other = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "claimed"
        with pytest.raises(ConfigError, match=rf"{tmp_path}: another run \(process {other.pid}\) is writing into this run folder"):
            with claim_run_folder(tmp_path):
                pass
    finally:
        other.kill()
        other.wait()
    with claim_run_folder(tmp_path):  # released when the owner dies, even by kill -9
        assert (tmp_path / ".lock").read_text() == str(__import__("os").getpid())


def test_device_settings_beyond_the_machine_are_refused_before_anything_runs(monkeypatch) -> None:
    from sectorkit.core.runtime import check_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"trainer\.accelerator=gpu: this machine has no CUDA device"):
        check_devices(OmegaConf.create({"accelerator": "gpu", "devices": 1}))
    with pytest.raises(ConfigError, match=r"trainer\.devices=99: this machine has 2 CPU core\(s\).*use at most 2"):
        check_devices(OmegaConf.create({"accelerator": "cpu", "devices": 99}))
    check_devices(OmegaConf.create({"accelerator": "cpu", "devices": 2}))
    check_devices(OmegaConf.create({"accelerator": "auto", "devices": "auto"}))


@dataclass
class SplitSchema:
    order: str = one_of("random", "random", "temporal")


@dataclass
class DataSchema:
    batch_size: int = bounded(32, 1)
    share: float = bounded(0.5, 0.0, 1.0, low_open=True)
    fill: Optional[str] = one_of(None, "interpolate")
    split: SplitSchema = field(default_factory=SplitSchema)


def test_schema_ranges_and_choices_are_checked_with_the_key() -> None:
    def cfg(**values):
        return OmegaConf.merge(OmegaConf.create({"data": OmegaConf.structured(DataSchema)}), {"data": values})

    check_ranges(cfg(batch_size=1, share=1.0, fill=None))
    check_ranges(cfg(fill="interpolate", split={"order": "temporal"}))
    for values, message in [({"batch_size": 0}, r"data\.batch_size=0: expected a value >= 1"),
                            ({"share": 0.0}, r"data\.share=0\.0: expected a value > 0 and <= 1"),
                            ({"fill": "linear"}, r"data\.fill='linear': expected one of interpolate"),
                            ({"split": {"order": "time"}}, r"data\.split\.order='time': expected one of random, temporal")]:
        with pytest.raises(ConfigError, match=message):
            check_ranges(cfg(**values))
