"""Running a task under ``hydra.main`` with a domain's config tree: what the CLI, the Python API and searches share."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from sectorkit.core.errors import SectorkitError

if TYPE_CHECKING:
    from sectorkit.core.registry import Domain


def run_hydra(domain: Domain, hydra_args: list[str], keep: tuple[type[Exception], ...] = (SectorkitError,)) -> Any:
    """Run :func:`sectorkit.core.pipeline.run` under ``hydra.main`` with ``hydra_args`` as its command line and
    return what the (last) run returned (for ``train``: the best validation score, a search trial's objective).
    An exception of a ``keep`` type raised by the run is raised again here, outside Hydra, which would print a
    traceback and exit (a search passes ``Exception``, so a failed or pruned trial does not end the sweep)."""
    import hydra

    from sectorkit.core.config import searchpath_override, without_searchpath
    from sectorkit.core.schema import register_resolvers, register_schemas

    register_schemas()
    register_resolvers()
    domain.register_schemas()
    config_dir = domain.config_dir

    errors: list[Exception] = []
    results: list[Any] = []

    @hydra.main(version_base="1.3", config_path=str(config_dir), config_name="main")
    def task(cfg):  # noqa: ANN001, ANN202 - signature fixed by Hydra
        from sectorkit.core.pipeline import run

        try:
            results.append(run(cfg))
            return results[-1]
        except keep as err:  # re-raised below, outside Hydra, which would print a traceback
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            errors.append(err)
            return None

    saved = sys.argv
    overrides = [a for a in hydra_args if "=" in a]  # Hydra wants its flags (--cfg job, ...) before the overrides
    sys.argv = [saved[0], *(a for a in hydra_args if "=" not in a), searchpath_override(overrides), *without_searchpath(overrides)]
    try:
        task()
    finally:
        sys.argv = saved
    if errors:
        raise errors[0]
    return results[-1] if results else None
