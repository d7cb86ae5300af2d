"""The package's layers point one way, derived from the folders: each stage subpackage of
``binmap_tf`` may import its own stage and the stages below it, never one above; ``serving`` and
``demo`` sit above the library; the command lines (``binmap_tf.cli``) sit on top. Every import
counts, inside functions too (a lazy import is still a dependency), and no modules import each other
in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("binmap_tf", "serving", "demo")
# The layers, lowest first: the stages of the pipeline in the order data flows through them, then
# the applications on top of the library. A module may import its own layer and the ones below.
LAYERS = ("binmap_tf.common", "binmap_tf.binary_map", "binmap_tf.segmentation", "binmap_tf.evaluation",
          "binmap_tf.training", "binmap_tf.batch", "serving", "demo", "binmap_tf.cli")
# The package's front door (binmap_tf/__init__.py) re-exports the public API: nothing inside imports it.
FACADE = "binmap_tf"
# Only the applications parse command lines; research and benchmarks sit outside the product.
COMMAND_LINE_LAYERS = ("serving", "demo", "binmap_tf.cli")
OUTSIDE = ("experiments", "benchmarks", "tests")


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


def imported_names(source: str) -> set[str]:
    """Every absolute module name ``source`` imports, anywhere in it (``from a import b`` gives a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known project module ``name`` refers to (``a.b.func`` -> ``a.b``), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = module_files()
    graph = {}
    for module, file in modules.items():
        targets = {resolve(name, modules) for name in imported_names(file.read_text())}
        graph[module] = {target for target in targets if target and target != module}
    return graph


def layer_of(module: str) -> int | None:
    """Index of ``module``'s layer in :data:`LAYERS` (None for the facade)."""
    for index, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return index
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import of a higher layer or of the facade."""
    found = []
    for module, targets in graph.items():
        own = layer_of(module)
        for target in sorted(targets):
            if own is None:  # the facade may import anything below it
                continue
            theirs = layer_of(target)
            if theirs is None or theirs > own:
                found.append(f"{module} -> {target}")
    return found


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


def test_every_module_belongs_to_a_layer():
    homeless = sorted(module for module in module_files() if module != FACADE and layer_of(module) is None)
    assert homeless == [], f"{homeless}: put them in one of the stage folders {LAYERS}"


def test_no_upward_imports():
    assert upward_imports(project_graph()) == []


def test_upward_import_finder_finds_a_planted_one():
    graph = project_graph()
    graph["binmap_tf.segmentation.pipeline"] = graph["binmap_tf.segmentation.pipeline"] | {"binmap_tf.cli.common"}
    graph["binmap_tf.common.files"] = graph["binmap_tf.common.files"] | {"binmap_tf"}
    assert sorted(upward_imports(graph)) == ["binmap_tf.common.files -> binmap_tf",
                                     "binmap_tf.segmentation.pipeline -> binmap_tf.cli.common"]


def test_a_lazy_import_counts():
    source = "def later():\n    from binmap_tf.cli.common import parse\n    import serving.client\n"
    assert {"binmap_tf.cli.common.parse", "serving.client"} <= imported_names(source)


def test_no_import_cycles():
    assert cycles(project_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(m for m in module_files()
                                          if m != FACADE and not any(m.startswith(layer)
                                                                     for layer in COMMAND_LINE_LAYERS)))
def test_library_modules_parse_no_command_lines(module):
    names = imported_names(module_files()[module].read_text())
    assert "argparse" not in names, f"{module} imports argparse: command lines live in binmap_tf.cli"


@pytest.mark.parametrize("module", sorted(module_files()))
def test_the_product_imports_nothing_from_outside_it(module):
    names = imported_names(module_files()[module].read_text())
    bad = sorted(name for name in names if name.split(".")[0] in OUTSIDE)
    assert bad == [], f"{module} imports {bad}: experiments, benchmarks and tests are not installed"
