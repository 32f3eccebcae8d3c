"""The shape of the library, checked from its source: no import loop between modules, figures drawn only in
report modules, and a core that never names a domain."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"core": "sectorkit.core", "domains": "sectorkit.domains"}


def modules() -> dict[str, Path]:
    """Every module of sectorkit.core and sectorkit.domains, by dotted name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts))
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The sectorkit modules ``path`` imports anywhere (at import time or inside a function; type-checking
    imports aside): a lazy import is a dependency too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for sub in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known.keys()
            names.update(submodules or {node.module})  # ``from package import module`` depends on that module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:  # lazy("pkg.mod:hook")
            names.add(node.value.split(":", 1)[0])
    return {name for name in names if name in known}


def test_no_import_loop() -> None:
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    # a package's __init__ importing its own submodules is fine; a loop between two modules is not
    state: dict[str, int] = {}
    loops: list[list[str]] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                loop = trail[trail.index(dep):] + [dep] if dep in trail else [name, dep]
                if not all(loop[i + 1].startswith(loop[i] + ".") or loop[i].startswith(loop[i + 1] + ".") for i in range(len(loop) - 1)):
                    loops.append(loop)
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not loops, loops


def test_figures_are_drawn_only_in_report_modules() -> None:
    """Only report modules (and core's figure writer) touch matplotlib, and only the pipeline calls them."""
    known = modules()
    drawing = [name for name, path in known.items() if not name.endswith(("report", "reporting", "core.io"))
               and ("matplotlib" in path.read_text(encoding="utf-8") or "save_figure" in path.read_text(encoding="utf-8"))]
    callers = [name for name, path in known.items() if not name.endswith(("report", "reporting", "core.pipeline"))
               and any(dep.endswith(".report") and not dep.startswith(name) for dep in imports(path, known))]
    assert not drawing and not callers, (drawing, callers)


def test_core_never_names_a_domain() -> None:
    """No code of core names a built-in domain (its docstrings may show examples)."""
    for path in (ROOT / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
                   and id(node) not in docstrings]
        named = [s for s in strings if "sectorkit.domains." in s or s in ("finance", "healthcare", "retail", "agriculture")]
        assert not named, (path, named)
