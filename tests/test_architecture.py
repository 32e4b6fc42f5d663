"""The layout rules of docs/architecture.md, checked on the source (no import is executed).

- The package graph points one way: workstation -> reporting/dictation/triage/orders/models ->
  readingroom. The kernel imports no feature package; no two packages import each other; no cycle.
- Nothing outside a package imports its private names (``from pkg.mod import _name``) or calls
  them on an imported module (``mod._name``).
- Every package names what it offers (``__all__`` in its ``__init__``).
- No function is over 150 lines.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from readingroom.settings import PROJECT_ROOT

PACKAGES = ("readingroom", "orders", "triage", "models", "dictation", "reporting", "workstation")
# Who may import whom (besides itself). The composition root app.py may import everything.
ALLOWED = {
    "readingroom": set(),
    "orders": {"readingroom"},
    "models": {"readingroom"},
    "triage": {"readingroom", "orders", "models"},
    "reporting": {"readingroom"},
    "dictation": {"readingroom", "reporting"},
    "workstation": {"readingroom", "orders", "triage", "models", "dictation", "reporting"},
}
MAX_FUNCTION_LINES = 150


def source_files() -> dict[str, list[Path]]:
    files = {pkg: sorted((PROJECT_ROOT / pkg).rglob("*.py")) for pkg in PACKAGES}
    files["app"] = [PROJECT_ROOT / "app.py"]
    return {pkg: [f for f in paths if "migrations" not in f.parts] for pkg, paths in files.items()}


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every absolute import in the file, including those inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def package_graph(files: dict[str, list[Path]]) -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> the files that import it."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for pkg, paths in files.items():
        for path in paths:
            for module, _names in imports_of(path):
                top = module.split(".")[0]
                if top in files and top != pkg:
                    graph[pkg][top].add(str(path.relative_to(PROJECT_ROOT)))
    return graph


def find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """A cycle of packages (first == last), or [] when the graph is acyclic."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_cycle_finder_finds_a_cycle():
    """The checks below can fail: a two-package and a three-package cycle are found."""
    assert find_cycle({"a": {"b": set()}, "b": {"a": set()}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": set()}, "b": {"c": set()}}) == []


def test_packages_import_one_way_down():
    graph = package_graph(source_files())
    assert find_cycle(graph) == []
    wrong = {f"{pkg} -> {dep}": sorted(where) for pkg, deps in graph.items() if pkg != "app"
             for dep, where in deps.items() if dep not in ALLOWED[pkg]}
    assert not wrong, f"imports that run up or sideways against docs/architecture.md: {wrong}"
    assert not graph.get("readingroom"), f"the kernel imports a feature package: {dict(graph['readingroom'])}"


def test_no_private_name_is_used_outside_its_package():
    files = source_files()
    found = []
    for pkg, paths in files.items():
        for path in paths:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            modules = {}   # local alias -> imported module of another package
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    top = node.module.split(".")[0]
                    if top in files and top != pkg:
                        found += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                                  if a.name.startswith("_") and not a.name.startswith("__")]
                        modules.update({a.asname or a.name: top for a in node.names})
                elif isinstance(node, ast.Import):
                    for a in node.names:
                        if a.name.split(".")[0] in files and a.name.split(".")[0] != pkg and a.asname:
                            modules[a.asname] = a.name
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id in modules and node.attr.startswith("_")
                        and not node.attr.startswith("__")):
                    found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, f"private names used outside their package: {found}"


def test_every_package_names_what_it_offers():
    missing = [pkg for pkg in PACKAGES
               if "__all__" not in (PROJECT_ROOT / pkg / "__init__.py").read_text(encoding="utf-8")]
    assert not missing, f"add __all__ to the __init__.py of: {missing}"


def test_no_function_is_over_150_lines():
    long = []
    for paths in source_files().values():
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"split these functions: {long}"
