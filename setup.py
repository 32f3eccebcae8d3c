"""Install the repository's ``core/``, ``domains/`` and ``conf/`` folders as ``sectorkit.core``,
``sectorkit.domains`` and ``sectorkit.conf``: one import name, nothing generic at the top level.

Everything else (metadata, dependencies, entry points, package data) is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

FOLDERS = ("core", "domains", "conf")

package_dir = {"sectorkit": "sectorkit", **{f"sectorkit.{folder}": folder for folder in FOLDERS}}
packages = ["sectorkit"] + [
    f"sectorkit.{package}"
    for package in find_namespace_packages(include=[f"{folder}*" for folder in FOLDERS], exclude=["*__pycache__*"])
]

setup(packages=packages, package_dir=package_dir)
