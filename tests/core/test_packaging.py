"""The installed package: one import name (``sectorkit``), nothing generic at the top level of site-packages,
and a quick pipeline that runs from a wheel installed into a fresh virtualenv (not the source checkout)."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the repository, installed (without dependencies) into a new virtualenv whose dependencies
    come from this environment's site-packages (added as a plain path: its ``.pth`` hooks, such as the
    editable install's finder, are not run)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # the tracked files only, so nothing stale in the checkout (build/, caches) can ship
    tracked = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(base / "dist"), str(source)], base)
    wheel = next((base / "dist").glob("sectorkit-*.whl"))
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)], base)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)], base)
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base).stdout.strip())
    (purelib / "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


def test_wheel_installs_one_top_level_package(fresh_install: Path) -> None:
    python = fresh_install / "bin" / "python"
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], fresh_install).stdout.strip())
    top_level = (purelib / next(purelib.glob("sectorkit-*.dist-info")).name / "top_level.txt")
    names = {p.name for p in purelib.iterdir()}
    assert "sectorkit" in names and not names & {"core", "domains", "conf"}
    assert not top_level.exists() or top_level.read_text().split() == ["sectorkit"]
    for config in ("conf/base.yaml", "domains/finance/conf/main.yaml", "domains/agriculture/sample_data", "core/templates/domain"):
        assert (purelib / "sectorkit" / config).exists(), config
    probe = ("import sectorkit, sectorkit.core.registry as r; "
             "print(sectorkit.__file__); print(sorted(r.discover())); print(r.get_domain('finance').config_dir)")
    out = run([str(python), "-c", probe], fresh_install).stdout.splitlines()
    assert out[0].startswith(str(purelib))  # the wheel, not the source checkout
    assert out[1] == "['agriculture', 'finance', 'healthcare', 'retail']"
    assert out[2] == str(purelib / "sectorkit" / "domains" / "finance" / "conf")


def test_quick_pipeline_runs_from_the_wheel(fresh_install: Path, tmp_path: Path) -> None:
    env = {**os.environ, "SECTORKIT_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    args = [str(fresh_install / "bin" / "sectorkit"), "train", "domain=finance", "data=tiny", "model=mlp_small", "trainer.max_epochs=1",
            "runtime.torch_threads=1", "callbacks.progress_bar=null", "callbacks.model_summary=null"]
    run(args, tmp_path, env)
    (metrics_file,) = (tmp_path / "outputs" / "finance" / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert 0.0 <= metrics["test"]["ap"] <= 1.0 and metrics["baselines"]
    assert (metrics_file.parent / "report.md").is_file()
