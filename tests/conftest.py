"""Suite-wide settings: offline, GPU-only tests skipped without CUDA; the built-in domains' quick runs (``quick_run``)
and ``sectorkit`` commands run in this process (``cli_in_process``), shared by the tests."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "requires_gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread per test: tiny models run fastest that way and do not oversubscribe shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class CliResult:
    """What an in-process ``sectorkit ...`` call returned and printed (the fields of subprocess.CompletedProcess the tests read)."""

    returncode: int
    stdout: str
    stderr: str


def main_in_process(root: Path, *args: str, env: dict[str, str] | None = None) -> CliResult:
    """``sectorkit ARGS`` through ``sectorkit.core.cli.main`` in this process, from ``root`` with ``SECTORKIT_ROOT=root``
    (and ``env``) for this call only: its exit status and what it printed to sys.stdout and sys.stderr (Hydra's exit
    after a traceback is status 1). The same parsing, checks and exit statuses as ``python -m sectorkit``, without a
    new interpreter's start-up (``quick_run`` and ``toy_run`` start one)."""
    from sectorkit.core.cli import main

    settings = {**(env or {}), "SECTORKIT_ROOT": str(root)}
    saved, cwd = {key: os.environ.get(key) for key in settings}, os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(settings)
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(list(args))
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return CliResult(status, out.getvalue(), err.getvalue())


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 now: the ``MASTER_PORT`` of a test's process group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cli_in_process():
    """``cli_in_process(root, *args, env=None)``: :func:`main_in_process`, for tests and fixtures of any scope."""
    return main_in_process


QUICK = ["experiment=quick", "trainer.max_epochs=1", "runtime.torch_threads=1", "callbacks.progress_bar=null", "callbacks.model_summary=null"]


@dataclass(frozen=True)
class QuickRun:
    """A built-in domain's quick training run: its ``SECTORKIT_ROOT`` and parsed ``metrics.json``."""

    root: Path
    metrics: dict


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory):
    """``quick_run(domain)``: ``sectorkit train domain=<domain> experiment=quick`` (1 epoch) through the CLI, once per
    domain and session, shared by the tests that need a trained built-in model."""
    runs: dict[str, QuickRun] = {}

    def train(domain: str) -> QuickRun:
        if domain not in runs:
            root = tmp_path_factory.mktemp(f"quick_{domain}")
            env = {**os.environ, "SECTORKIT_ROOT": str(root), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
            trained = subprocess.run([sys.executable, "-m", "sectorkit", "train", f"domain={domain}", *QUICK], env=env, cwd=root,
                                     capture_output=True, text=True, timeout=300, check=False)
            assert trained.returncode == 0, trained.stderr[-3000:]
            (metrics_file,) = (root / "outputs" / domain / "runs").glob("*/metrics.json")
            runs[domain] = QuickRun(root, json.loads(metrics_file.read_text()))
        return runs[domain]

    return train
