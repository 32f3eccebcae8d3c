"""``sectorkit new-domain NAME``: render a pip-installable domain plugin package from the templates.

The templates live in ``core/templates/domain`` as ``*.tmpl`` files rendered with :class:`string.Template`
(``$name`` is the domain name, ``$Name`` its CamelCase form, ``$$`` a literal dollar). The folder
``package`` becomes the Python package ``<name>`` and ``test_package.py`` becomes ``test_<name>.py``.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from pathlib import Path
from string import Template

from sectorkit.core.errors import ConfigError
from sectorkit.core.registry import discover

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates" / "domain"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


def check_domain_name(name: str) -> None:
    """Raise a ConfigError unless ``name`` can be a new domain: a lowercase Python identifier that is
    neither a registered domain nor an importable module."""
    if not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        raise ConfigError(
            f"new-domain NAME {name!r}: expected a lowercase Python identifier (a letter, then letters, digits or '_'), e.g. 'insurance'"
        )
    registered = discover()
    if name in registered:
        raise ConfigError(f"new-domain NAME {name!r}: a domain with that name is already registered ({', '.join(registered)})")
    if importlib.util.find_spec(name) is not None:
        raise ConfigError(f"new-domain NAME {name!r}: a Python module with that name is already importable; choose another name")


def camel_case(name: str) -> str:
    """``crop_yield`` -> ``CropYield``."""
    return "".join(part.capitalize() for part in name.split("_"))


def scaffold_domain(name: str, dest: Path | str) -> Path:
    """Render the domain package into ``dest/sectorkit-<name>/`` and return that folder."""
    check_domain_name(name)
    target = Path(dest).expanduser().resolve() / f"sectorkit-{name}"
    if target.exists():
        raise ConfigError(f"new-domain: {target} already exists; remove it or choose another --dest")
    mapping = {"name": name, "Name": camel_case(name)}
    renames = {"package": name, "test_package.py": f"test_{name}.py"}
    rendered: dict[Path, str] = {}
    for template in sorted(TEMPLATE_DIR.rglob("*.tmpl")):
        relative = template.relative_to(TEMPLATE_DIR).with_suffix("")  # drop ".tmpl"
        out = Path(*(renames.get(part, part) for part in relative.parts))
        try:
            rendered[out] = Template(template.read_text(encoding="utf-8")).substitute(mapping)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{template}: bad template placeholder ({exc}); use $name, $Name or $$ for a literal $") from None
    if not rendered:
        raise ConfigError(f"{TEMPLATE_DIR}: no *.tmpl templates found (is sectorkit installed completely?)")
    for out, text in rendered.items():
        path = target / out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target
