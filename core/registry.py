"""Domain plugins: what a domain provides and how sectorkit finds it (``sectorkit.domains`` entry points)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import import_module
from importlib.metadata import entry_points
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sectorkit.core.baselines import BaselinesFn
from sectorkit.core.errors import ConfigError

if TYPE_CHECKING:
    from sectorkit.core.reporting import ReportSection, RunContext

ENTRY_POINT_GROUP = "sectorkit.domains"

ReportFn = Callable[["RunContext"], list["ReportSection"]]


def lazy(target: str) -> Callable[..., Any]:
    """A hook given as ``"package.module:function"``, imported on its first call.

    Domains register their baselines and report hooks this way, so that discovering every domain (for
    ``sectorkit domains`` or a run of another domain) does not import their heavy modules.
    """
    module_name, _, attribute = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(import_module(module_name), attribute)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attribute
    call.__doc__ = f"Calls {target} (imported on first use)."
    return call


@dataclass(frozen=True)
class Domain:
    """A domain plugin.

    ``package`` is the domain's Python package; its ``conf/`` folder holds the primary config ``main.yaml`` and
    the ``data/``, ``model/`` and ``experiment/`` groups (found through the package, so it works the same from a
    source checkout, an editable install and a wheel). ``schemas`` stores the typed configs of the domain's
    ``data`` and ``model`` groups in Hydra's ConfigStore (so a typo fails when the config is composed).
    ``baselines`` returns a :class:`~sectorkit.core.baselines.BaselineResult` per baseline, fitted on the run's
    training split and scored on its test split; ``report`` draws every figure of the domain and returns its
    sections of ``report.md`` (after a test, and for the files a ``predict`` writes).
    """

    name: str
    description: str
    package: str
    schemas: Callable[[], None] | None = None
    baselines: BaselinesFn | None = None
    report: ReportFn | None = None

    def register_schemas(self) -> None:
        """Store the domain's typed configs in Hydra's ConfigStore (before composing its config)."""
        if self.schemas is not None:
            self.schemas()

    @property
    def config_dir(self) -> Path:
        """The domain's config folder: ``conf/`` inside its package."""
        return Path(str(files(self.package) / "conf"))

    def options(self, group: str) -> list[str]:
        """Names of the configs in one of the domain's groups (``data``, ``model``, ``experiment``)."""
        folder = self.config_dir / group
        return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


@lru_cache(maxsize=1)
def discover() -> dict[str, Domain]:
    """Load every domain registered under the ``sectorkit.domains`` entry-point group."""
    found: dict[str, Domain] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        domain = ep.load()
        if not isinstance(domain, Domain):
            raise ConfigError(f"entry point {ep.name!r} ({ep.value}) must point to a sectorkit.core.registry.Domain, got {type(domain).__name__}")
        if not (domain.config_dir / "main.yaml").is_file():
            raise ConfigError(f"domain {domain.name!r}: no main.yaml in its config_dir {domain.config_dir}")
        found[domain.name] = domain
    return dict(sorted(found.items()))


def get_domain(name: Any) -> Domain:
    """The registered domain called ``name``; a ConfigError listing the valid names otherwise."""
    domains = discover()
    if name not in domains:
        valid = ", ".join(domains) or "none registered"
        raise ConfigError(f"unknown domain {name!r}; valid choices for 'domain': {valid}")
    return domains[name]
