"""Progress of a run's phases in the terminal: a spinner with the phase's name and its running time while it
works, one line with its duration when it ends. Core and the domains share it, so no long step is silent:

    from sectorkit.core.progress import phase

    with phase("simulating transactions"):
        frame = simulate(cfg)

A phase inside another one (permutation importance inside the report, say) shows as ``report › permutation
importance`` on the same line. Lines for phases shorter than a second are left out unless the run is verbose
(``runtime.verbose=true`` / ``--verbose``). Only the first process of a distributed run prints. Without a terminal
(logs, CI) there is no spinner, only the closing lines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.errors import LiveError
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

MIN_SECONDS = 1.0  # shorter phases print no closing line unless verbose

_settings = {"verbose": False}
_stack: list[str] = []  # names of the phases running now, outermost first
_live: dict[str, object] = {}  # the outermost phase's display: progress and task


def configure(verbose: bool = False) -> None:
    """Set the run's verbosity (``runtime.verbose``): verbose runs also report phases shorter than a second."""
    _settings["verbose"] = bool(verbose)


def _is_main_process() -> bool:
    return all(os.environ.get(key, "0") in ("", "0") for key in ("RANK", "LOCAL_RANK"))


@contextmanager
def phase(name: str, out: Console | None = None, min_seconds: float | None = None) -> Iterator[None]:
    """Show ``name`` with a spinner and its running time while the block runs, then ``name: N.N s`` (phases of at
    least ``min_seconds``, default one second, or every phase in a verbose run)."""
    if not _is_main_process():
        yield
        return
    threshold = MIN_SECONDS if min_seconds is None else min_seconds
    started = time.perf_counter()
    _stack.append(name)
    label = " › ".join(_stack)
    progress = _live.get("progress")
    owner = False
    if progress is None:
        out = out or Console()
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=out, transient=True)
        try:
            progress.start()
            owner = True
            _live.update(progress=progress, task=progress.add_task(f"{label}...", total=None), console=out)
        except LiveError:  # another live display (a progress bar) is running: closing lines only
            progress = None
    else:
        progress.update(_live["task"], description=f"{label}...")  # type: ignore[union-attr]
    try:
        yield
    finally:
        seconds = time.perf_counter() - started
        _stack.pop()
        printer = (_live.get("console") if progress is not None else out) or Console()
        if owner:
            progress.stop()  # type: ignore[union-attr]
            _live.clear()
        elif progress is not None and _stack:
            progress.update(_live["task"], description=f"{' › '.join(_stack)}...")  # type: ignore[union-attr]
        if seconds >= threshold or _settings["verbose"]:
            printer.print(f"{label}: {seconds:.1f} s", highlight=False)  # type: ignore[union-attr]
