"""Composing a domain's config and checking command-line overrides before a run starts.

A misspelt key, an unknown option of a config group or a bad value becomes one :class:`ConfigError` line
that names the key and lists the valid choices, instead of Hydra's multi-line composition error.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterator, Sequence
from importlib.resources import files
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sectorkit.core.errors import ConfigError
from sectorkit.core.registry import Domain, discover, get_domain
from sectorkit.core.schema import check_ranges, check_run_keys, check_targets, register_resolvers, register_schemas

CORE_CONF_DIR = Path(str(files("sectorkit.conf")))
DOMAIN_GROUPS = ("data", "model", "experiment")


def user_searchpath(overrides: Sequence[str]) -> list[str]:
    """The entries of a user's ``hydra.searchpath=[...]`` override (config folders of their own: a new model's
    config, say), in order; empty without one."""
    entries: list[str] = []
    for override in overrides:
        if override.startswith("hydra.searchpath="):
            value = OverridesParser.create().parse_override(override).value()
            entries = [str(v) for v in (value if isinstance(value, list) else [value])]
    return entries


def searchpath_override(overrides: Sequence[str] = ()) -> str:
    """The override that puts the core config tree on a domain config's search path, after the user's own
    folders (``hydra.searchpath`` among ``overrides``), which thus come first."""
    return f"hydra.searchpath=[{','.join([*user_searchpath(overrides), f'file://{CORE_CONF_DIR}'])}]"


def without_searchpath(overrides: Sequence[str]) -> list[str]:
    """``overrides`` less a ``hydra.searchpath`` one (merged by :func:`searchpath_override`)."""
    return [o for o in overrides if not o.startswith("hydra.searchpath=")]


def core_options(group: str) -> list[str]:
    """Names of the core configs in ``conf/<group>`` (schemas excluded)."""
    return yaml_names(CORE_CONF_DIR / group)


def yaml_names(folder: Path) -> list[str]:
    """Names of the YAML configs in ``folder`` (schemas, whose names start with ``_``, excluded)."""
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")) if folder.is_dir() else []


def group_options(domain: Domain, group: str, searchpath: Sequence[str] = ()) -> list[str] | None:
    """Valid choices for a config group of ``domain`` (with the user's own ``file://`` config folders), or None
    when ``group`` is not a config group."""
    extra = [name for entry in searchpath if entry.startswith("file://") for name in yaml_names(Path(entry.removeprefix("file://")) / group)]
    if group in DOMAIN_GROUPS:
        return sorted({*domain.options(group), *extra})
    if (CORE_CONF_DIR / group).is_dir():
        return sorted({*core_options(group), *extra})
    return None


def domain_from_overrides(overrides: Sequence[str]) -> Domain:
    """The domain chosen by ``domain=<name>`` among the overrides."""
    values = [o.split("=", 1)[1] for o in overrides if o.startswith("domain=")]
    if not values:
        raise ConfigError(f"choose a domain with domain=<name>; registered domains: {', '.join(discover()) or 'none'}")
    if "," in values[-1]:
        raise ConfigError(f"domain={values[-1]}: sweep one domain at a time (each domain has its own config tree)")
    return get_domain(values[-1])


def compose_config(domain: Domain, overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose ``domain``'s ``main.yaml`` with the core tree on its search path, as a run would."""
    register_schemas()
    register_resolvers()
    domain.register_schemas()
    with initialize_config_dir(config_dir=str(domain.config_dir), version_base="1.3"):
        return compose("main", overrides=[searchpath_override(overrides), *without_searchpath(overrides)], return_hydra_config=return_hydra_config)


def validate_overrides(domain: Domain, overrides: Sequence[str]) -> None:
    """Raise a one-line ConfigError for an unknown group option or key; compose once to catch the rest."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(f"cannot parse the overrides: {_first_line(err)}") from None
    searchpath = user_searchpath(overrides)
    for override in parsed:
        if override.is_delete() or override.key_or_group.startswith("hydra"):
            continue
        options = group_options(domain, override.key_or_group, searchpath)
        if options is None:
            continue
        for value in _values(override):
            if value not in options and value != "null":
                hint = _suggest(value, options)
                raise ConfigError(f"unknown {override.key_or_group} {value!r} for domain {domain.name!r}{hint}; valid choices for "
                                  f"'{override.key_or_group}': {', '.join(options)}")
    plain = [o.input_line for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    plain += [o for o in overrides if o.startswith("hydra.searchpath=")]
    try:
        composed = compose_config(domain, plain)
        check_run_keys(composed)
        check_ranges(composed)
        check_targets(composed, [d.package for d in discover().values()])
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_explain(err, domain, plain)) from None


def _values(override) -> Iterator[str]:
    if override.is_discrete_sweep():
        yield from override.sweep_string_iterator()
    elif not override.is_sweep_override():
        yield override.get_value_element_as_str()


def _explain(err: Exception, domain: Domain, overrides: Sequence[str]) -> str:
    """Turn a composition error into one line naming the key and the closest valid keys."""
    text = str(err)
    match = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' (?:is not in struct|not in)", text)
    if match:
        key = match.group(1)
        bad = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key]
        rest = [o for o in overrides if o not in bad]
        try:
            composed = compose_config(domain, rest)
        except (HydraException, OmegaConfBaseException):
            composed = None
        known = list(_flat_keys(composed)) if composed is not None else []
        hint = _suggest(key, known)
        if composed is not None and _typed_parent(composed, key):
            return f"unknown config key {key!r}{hint} (its section has a typed schema: check the spelling)"
        return f"unknown config key {key!r}{hint} (use +{key}=... to add a new key)"
    if err.__cause__ is not None:
        return f"{_first_line(err)}: {_first_line(err.__cause__)}"
    return _first_line(err)


def _typed_parent(cfg: DictConfig, key: str) -> bool:
    """Whether the section that would hold ``key`` has a typed schema (adding keys to it fails too)."""
    parent, _, _ = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(node))


def _flat_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    for key, value in cfg.items_ex(resolve=False):
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, DictConfig):
            yield from _flat_keys(value, f"{path}.")


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
