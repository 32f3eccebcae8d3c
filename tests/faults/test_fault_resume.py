"""Faults that need a training run (slow): kill -9 at a random step then ``ckpt_path=last``, and a disk that fills up
while a checkpoint is written. ``benchmarks/faults.py`` repeats the kill for every domain and records the figures."""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_catalogue import half_written, one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path) -> None:
    from benchmarks.faults import finished, train

    status, err = train("retail", tmp_path / "reference", ["seed=0"])
    assert status == 0, err
    reference = finished(tmp_path / "reference", "retail")[-1]
    step = int(np.random.default_rng(0).integers(1, reference["global_step"]))
    root = tmp_path / "killed"
    kill = ["+callbacks.kill._target_=benchmarks.faults.KillAtStep", f"+callbacks.kill.step={step}", "allow_any_target=true"]
    status, _ = train("retail", root, ["seed=0", *kill])
    assert status == -signal.SIGKILL
    assert half_written(root / "outputs") == []  # every checkpoint of the killed run loads
    (killed_run,) = (root / "outputs" / "retail" / "runs").iterdir()
    status, err = train("retail", root, ["seed=0", "ckpt_path=last"])
    assert status == 0, err
    resumed = finished(root, "retail")[-1]
    assert resumed["resumed_from"] == str(killed_run / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == reference["global_step"] and resumed["epochs"] == reference["epochs"]
    assert half_written(root / "outputs") == []


@pytest.mark.slow
def test_a_disk_that_fills_up_during_a_checkpoint_is_one_line_and_leaves_no_broken_checkpoint(tmp_path, monkeypatch) -> None:
    real_save = torch.save

    def full_disk(obj, handle, *args, **kwargs):
        if hasattr(handle, "write"):  # the checkpoint writer's open file: half a checkpoint, then ENOSPC
            handle.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    argv = ["train", "domain=retail", "experiment=quick", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
            "callbacks.progress_bar=null", "callbacks.model_summary=null", "with_baselines=false", f"hydra.run.dir={tmp_path / 'run'}"]
    status, stderr = run_cli(argv, tmp_path)
    line = one_line_error(stderr)
    assert status == 2 and line is not None and "cannot write the checkpoint" in line and "No space left on device" in line, stderr[-2000:]
    assert half_written(tmp_path) == []
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_checkpoints_carry_the_random_streams_and_a_resume_restores_them(tmp_path) -> None:
    """What a resumed run draws next (shuffled batches, torch/numpy/Python randoms) equals what the run it resumes
    would have drawn; the saved state loads with weights_only=True."""
    import random
    from types import SimpleNamespace

    from sectorkit.core.checkpoint import RandomState
    from torch.utils.data import DataLoader

    def draws(trainer) -> tuple:
        return (torch.rand(3).tolist(), np.random.rand(2).tolist(), random.random(), [b.tolist() for b in trainer.train_dataloader])

    loader = DataLoader(list(range(10)), batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(0))
    trainer = SimpleNamespace(train_dataloader=loader)
    list(loader)  # an epoch already drawn
    checkpoint: dict = {}
    RandomState().on_save_checkpoint(trainer, None, checkpoint)
    torch.save(checkpoint, tmp_path / "last.ckpt")
    expected = draws(trainer)

    fresh = DataLoader(list(range(10)), batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(0))
    resumed_trainer = SimpleNamespace(train_dataloader=fresh)
    callback = RandomState()
    callback.on_load_checkpoint(resumed_trainer, None, torch.load(tmp_path / "last.ckpt", weights_only=True))
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # a fresh process's streams
    callback.on_train_start(resumed_trainer, None)
    assert draws(resumed_trainer) == expected
