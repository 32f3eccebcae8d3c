"""The candidates' runs of ``model=auto``: one ordinary training run per candidate model, then the auto run.

Like a search's trials (:mod:`sectorkit.core.sweep`), each candidate is a training run composed by Hydra in
this process, one after another, each on one device: the user's overrides with ``model=<candidate>``, in
``<run>/candidates/<candidate>/``. A failing candidate is recorded in its folder and the others go on. Then
the auto run itself runs in ``<run>/`` and chooses, ships and evaluates one (:func:`sectorkit.core.auto.ship`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from sectorkit.core.auto import CANDIDATES_DIR, FAILURE_FILE, auto_settings, candidate_overrides
from sectorkit.core.io import atomic_write_json

if TYPE_CHECKING:
    from sectorkit.core.registry import Domain


def run_auto(domain: Domain, overrides: Sequence[str], flags: Sequence[str] = ()) -> int:
    """Train every candidate in ``<run>/candidates/<name>/``, then run the auto run itself in ``<run>/``."""
    from sectorkit.core.config import compose_config, group_options, user_searchpath, validate_overrides
    from sectorkit.core.launch import run_hydra
    from sectorkit.core.sweep import one_device

    # model.* overrides (e.g. finance's model.top_k) reach every candidate, checked against each candidate's config
    # (a candidate without the key fails and is recorded); the auto run itself has no model section of its own
    per_model = [o for o in overrides if o.lstrip("+~").startswith("model.")]
    overrides = [o for o in overrides if o not in per_model]
    validate_overrides(domain, overrides)
    if flags:  # --cfg: the auto run's own config
        run_hydra(domain, [*flags, "task=train", *overrides])
        return 0
    cfg = compose_config(domain, overrides, return_hydra_config=True)
    settings = auto_settings(cfg, group_options(domain, "model", user_searchpath(overrides)))
    single = one_device(cfg)
    run_dir = Path(str(cfg.hydra.run.dir)).expanduser().resolve()
    console = Console()
    console.rule(f"model=auto: {len(settings.candidates)} candidates")
    console.print(escape(f"candidates: {', '.join(settings.candidates)} | chosen on: validation {cfg.monitor.metric} "
                         f"({'higher' if cfg.monitor.mode == 'max' else 'lower'} is better) | run folder: {run_dir}"), soft_wrap=True)
    for name in settings.candidates:
        folder = run_dir / CANDIDATES_DIR / name
        child = candidate_overrides([*overrides, *per_model], name)
        console.rule(f"candidate {name}")
        (folder / FAILURE_FILE).unlink(missing_ok=True)  # a failure of an earlier run into this folder is not this run's
        started = time.perf_counter()
        try:
            validate_overrides(domain, child)
            run_hydra(domain, ["task=train", *child, *single, f'hydra.run.dir="{folder}"'], keep=(Exception,))
        except Exception as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":  # --debug: the traceback
                raise
            note = f"{type(err).__name__}: {err}"
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / FAILURE_FILE, {"error": note, "seconds": round(time.perf_counter() - started, 2)})
            console.print(f"[red]candidate {escape(name)} failed[/red]: {escape(note)}", soft_wrap=True)
    console.rule("model=auto: the choice")
    pinned = [o for o in overrides if not o.startswith("hydra.run.dir=")]
    run_hydra(domain, ["task=train", *pinned, *single, f'hydra.run.dir="{run_dir}"'])
    return 0
