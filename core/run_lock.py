"""One run per run folder: the first process claims the folder with a lock; a second stops at once.

Two runs writing into one ``hydra.run.dir`` would mix their checkpoints and logs. The lock is an advisory
``flock`` on ``<run folder>/.lock`` (released by the operating system when the process ends, even on
``kill -9``), holding the owner's process id so the refusal can name it. Only global rank 0 claims it: the
other ranks of a distributed run join the same folder on purpose.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_only

from sectorkit.core.errors import ConfigError


@contextmanager
def claim_run_folder(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the duration of the block (global rank 0 only)."""
    if rank_zero_only.rank != 0:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise ConfigError(f"{folder}: another run (process {owner}) is writing into this run folder; "
                              "wait for it or choose another hydra.run.dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
