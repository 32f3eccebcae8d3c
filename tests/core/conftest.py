"""Shared fixtures of the core tests.

``toy_domain`` scaffolds the test-only domain ``toy`` with ``python -m sectorkit new-domain`` and pip-installs it
into a temporary folder once per session; ``toy_env`` is the environment for running ``python -m sectorkit ...``
in a subprocess that sees it; ``toy_registered`` makes it visible to ``sectorkit.core.registry`` in this process;
``toy_run`` is one ``python -m sectorkit train domain=toy experiment=quick`` run folder shared by the session;
``toy_cli`` runs ``sectorkit ...`` on the toy domain through ``sectorkit.core.cli.main`` in this process (the same
argument parsing, checks and exit statuses without a new interpreter's start-up, which ``toy_run`` and
tests/domains/test_domains_cli.py test).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sectorkit.core.registry import Domain, discover, get_domain

TOY = "toy"


@dataclass(frozen=True)
class TrainedRun:
    """A finished ``sectorkit train`` run: its folder, parsed ``metrics.json`` and the CLI's output."""

    run_dir: Path
    metrics: dict
    stdout: str
    stderr: str


@dataclass(frozen=True)
class InstalledDomain:
    """A scaffolded domain installed with ``pip install --target``."""

    name: str
    package_dir: Path  # the rendered sectorkit-<name> folder
    site_dir: Path  # where it is installed; on PYTHONPATH in ``env``
    root: Path  # SECTORKIT_ROOT: runs write to root/outputs
    env: dict[str, str]

    def run(self, args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        """``python ARGS`` in a subprocess that sees this domain (``env``)."""
        return run_python(args, self.env, cwd, timeout)


def run_python(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python ARGS`` with this interpreter, output captured as text."""
    return subprocess.run([sys.executable, *args], check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_thread_env(root: Path, pythonpath: list[Path]) -> dict[str, str]:
    """The current environment, offline, single-threaded, with ``pythonpath`` first and runs under ``root``."""
    env = dict(os.environ)
    paths = [str(p) for p in pythonpath] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(PYTHONPATH=os.pathsep.join(paths), SECTORKIT_ROOT=str(root), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="session")
def toy_domain(tmp_path_factory: pytest.TempPathFactory) -> InstalledDomain:
    """``sectorkit new-domain toy`` then ``pip install --no-deps --target`` of the rendered package."""
    base = tmp_path_factory.mktemp("toy_domain")
    env = one_thread_env(base / "root", [])
    created = run_python(["-m", "sectorkit", "new-domain", TOY, "--dest", str(base)], env, base)
    assert created.returncode == 0, created.stderr
    package_dir = base / f"sectorkit-{TOY}"
    site_dir = base / "site"
    install = run_python(["-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                          "--target", str(site_dir), str(package_dir)], env, base)
    assert install.returncode == 0, install.stdout + install.stderr
    return InstalledDomain(TOY, package_dir, site_dir, base / "root", one_thread_env(base / "root", [site_dir]))


@pytest.fixture(scope="session")
def toy_env(toy_domain: InstalledDomain) -> dict[str, str]:
    """Environment for ``python -m sectorkit ...`` subprocesses that see the installed toy domain."""
    return dict(toy_domain.env)


@contextlib.contextmanager
def registered(toy_domain: InstalledDomain) -> Iterator[Domain]:
    """The installed toy domain, registered in this process inside the ``with`` block."""
    sys.path.insert(0, str(toy_domain.site_dir))
    discover.cache_clear()
    try:
        yield get_domain(TOY)
    finally:
        sys.path.remove(str(toy_domain.site_dir))
        discover.cache_clear()


@pytest.fixture
def toy_registered(toy_domain: InstalledDomain) -> Iterator[Domain]:
    """The installed toy domain, registered in this process for the duration of one test."""
    with registered(toy_domain) as domain:
        yield domain


@pytest.fixture(scope="session")
def toy_run(toy_domain: InstalledDomain, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """``python -m sectorkit train domain=toy experiment=quick`` on one thread, in a root folder of its own."""
    root = tmp_path_factory.mktemp("toy_run")
    env = {**toy_domain.env, "SECTORKIT_ROOT": str(root)}
    args = ["-m", "sectorkit", "train", "domain=toy", "experiment=quick", "runtime.torch_threads=1", "callbacks.progress_bar=null"]
    result = run_python(args, env, root)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((root / "outputs" / "toy" / "runs").glob("*/metrics.json"))
    assert len(runs) == 1, (runs, result.stdout[-2000:])
    return TrainedRun(runs[0].parent, json.loads(runs[0].read_text()), result.stdout, result.stderr)


@pytest.fixture
def toy_cli(toy_domain: InstalledDomain, toy_registered: Domain, cli_in_process):
    """``toy_cli(root, *args)``: ``sectorkit ARGS`` in this process with the toy domain registered (commands that start
    processes of their own, such as ``demo``, hand them the toy domain's PYTHONPATH)."""
    return in_process(toy_domain, cli_in_process)


def in_process(toy_domain: InstalledDomain, cli_in_process):
    """``call(root, *args)``: ``sectorkit ARGS`` in this process, for a caller that has registered the toy domain."""
    env = {key: toy_domain.env[key] for key in ("PYTHONPATH", "HF_HUB_OFFLINE", "PYTHONUNBUFFERED")}
    return lambda root, *args: cli_in_process(root, *args, env=env)


@pytest.fixture(scope="session")
def toy_cli_block(toy_domain: InstalledDomain, cli_in_process):
    """``with toy_cli_block() as call:`` the toy domain registered, ``call(root, *args)`` as ``toy_cli``; for fixtures
    wider than one test."""

    @contextlib.contextmanager
    def block():
        with registered(toy_domain):
            yield in_process(toy_domain, cli_in_process)

    return block
