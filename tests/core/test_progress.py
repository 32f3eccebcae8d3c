"""The shared phase display: closing lines with durations, nesting, verbosity and ranks."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console
from sectorkit.core import progress
from sectorkit.core.progress import phase


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=120), buffer


@pytest.fixture(autouse=True)
def quiet():
    progress.configure(verbose=False)
    yield
    progress.configure(verbose=False)


@pytest.mark.parametrize("terminal", [False, True])
def test_nested_phases_report_their_duration(terminal: bool) -> None:
    out, buffer = console(terminal)
    with phase("report", out, min_seconds=0.05):
        with phase("permutation importance", min_seconds=0.05):
            time.sleep(0.1)
        with phase("tiny"):
            pass
    text = buffer.getvalue()
    inner, outer = re.search(r"report › permutation importance: (\d+\.\d) s", text), re.search(r"(?<!› )report: (\d+\.\d) s", text)
    assert inner and outer and float(inner[1]) >= 0.1 and float(outer[1]) >= float(inner[1])
    assert inner.start() < outer.start() and not re.search(r"tiny: \d", text)
    assert not progress._stack and not progress._live


def test_verbose_runs_show_short_phases_and_errors_still_close(monkeypatch) -> None:
    out, buffer = console(False)
    progress.configure(verbose=True)
    with pytest.raises(ValueError), phase("data", out):
        raise ValueError("boom")
    assert re.search(r"data: \d+\.\d s", buffer.getvalue()) and not progress._stack and not progress._live
    monkeypatch.setenv("LOCAL_RANK", "1")
    with phase("worker", out):
        pass
    assert "worker" not in buffer.getvalue()
