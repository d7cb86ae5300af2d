"""The package's layers point one way: algorithms and data never import command lines, the
serving package or the demo, and no modules import each other in a circle (imports inside
functions included, since a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("binmap_tf", "serving", "demo")
# Algorithms and data: they must work without argparse, a model server or Gradio.
CORE = ("binmap_tf.backbones", "binmap_tf.binary_map", "binmap_tf.datasets", "binmap_tf.files",
        "binmap_tf.geometry", "binmap_tf.hashing", "binmap_tf.hierarchy", "binmap_tf.images", "binmap_tf.labels",
        "binmap_tf.map_cache", "binmap_tf.merge", "binmap_tf.methods", "binmap_tf.metrics",
        "binmap_tf.model", "binmap_tf.outputs", "binmap_tf.paths", "binmap_tf.segment",
        "binmap_tf.superpixels", "binmap_tf.tiling")
FORBIDDEN_FOR_CORE = ("argparse", "binmap_tf.cli", "serving", "demo")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*.py"):
            parts = list(file.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = file
    return modules


def imported_names(file: Path) -> set[str]:
    """Every absolute module name ``file`` imports, anywhere in it (``from a import b`` gives a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (names resolved to the longest known module)."""
    modules = module_files()
    graph = {}
    for module, file in modules.items():
        edges = set()
        for name in imported_names(file):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.add(name)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert cycles(project_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def is_core(module: str) -> bool:
    return any(module == core or module.startswith(core + ".") for core in CORE) and not module.endswith("__main__")


@pytest.mark.parametrize("module", sorted(m for m in module_files() if is_core(m)))
def test_core_modules_import_no_cli_serving_or_demo(module):
    names = imported_names(module_files()[module])
    bad = sorted(name for name in names
                 if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_FOR_CORE) or name.endswith("__main__"))
    assert bad == [], f"{module} imports {bad}: move command-line or serving code out of it"
