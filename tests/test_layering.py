"""The package is layered: its import graph has no cycle, and every import points down a floor.

The graph is read from the source with :mod:`ast`, not by importing anything. An
import anywhere in a module counts, at module level or inside a function (an import
moved into a function to dodge a cycle still closes the cycle); imports under
``if TYPE_CHECKING:`` are for type checkers only and do not count. Importing a module
also runs its parent packages' ``__init__``; those implicit edges are left out, as
every import linter does (a package that re-exports its submodules would otherwise
be a cycle with each of them). Imports by name at run time (``importlib``: the lazy
front ends of ``dvid_store.__getattr__`` and the commands of ``dvid_store.cli``) are
not in the graph either; both start on the front-end floor.

The floors, bottom to top, are in :data:`FLOORS` (and in "How the package is layered"
on the concepts page of the docs).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "dvid_store"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Floor of every module, by module or subpackage name (the nearest entry wins).
FLOORS: dict[str, int] = {
    # 1. the HTTP core
    "dvid_store.errors": 1,
    "dvid_store.transport": 1,
    "dvid_store._version": 1,
    # 2. the node API and the codecs
    "dvid_store.geometry": 2,
    "dvid_store.names": 2,
    "dvid_store.settings": 2,
    "dvid_store.repo": 2,
    "dvid_store.datatypes": 2,
    "dvid_store.codecs": 2,
    "dvid_store.node": 2,
    "dvid_store.client": 2,
    "dvid_store.urls": 2,
    # 3. blocks and the geometry of an instance
    "dvid_store.blocks": 3,
    "dvid_store.layout": 3,
    "dvid_store.level_io": 3,
    # 4. the front ends (and the package itself, which re-exports them)
    "dvid_store": 4,
    "dvid_store.zarr": 4,
    "dvid_store.fs": 4,
    "dvid_store.dask": 4,
    "dvid_store.dask_array": 4,
    "dvid_store.xarray_backend": 4,
    "dvid_store.create": 4,
    "dvid_store.cli": 4,
    "dvid_store.compat": 4,
    "dvid_store.cli_commands": 4,
    # 5. test support, and the demo command, which runs on its throwaway DVID server
    "dvid_store.testing": 5,
    "dvid_store.cli_commands.demo": 5,
}
FRONT_END = 4
FLOOR_NAMES = {
    1: "HTTP core",
    2: "node API and codecs",
    3: "blocks and geometry",
    4: "front ends",
    5: "testing and demo",
}
HTTP_CORE_MAY_IMPORT = {"dvid_store.errors"}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name → (file, is a package ``__init__``)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs at some point: module level or in functions, not under TYPE_CHECKING."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    elif isinstance(node, ast.If) and _is_type_checking(node):
        for other in node.orelse:
            yield from _runtime_imports(other)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _runtime_imports(child)


def _targets(module: str, is_package: bool, statement: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The package modules an import statement loads."""
    if isinstance(statement, ast.Import):
        for alias in statement.names:
            name = alias.name
            while name and name not in MODULES:  # "import dvid_store.zarr.store" loads that module
                name = name.rpartition(".")[0]
            if name:
                yield name
        return
    if statement.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (statement.level - 1)]
        source = ".".join([*base, *([statement.module] if statement.module else [])])
    else:
        source = statement.module or ""
    if source not in MODULES:
        return
    for alias in statement.names:
        submodule = f"{source}.{alias.name}"
        yield submodule if submodule in MODULES else source


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, (path, is_package) in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[module] = {
            target
            for statement in _runtime_imports(tree)
            for target in _targets(module, is_package, statement)
            if target != module
        }
    return graph


GRAPH = _graph()


def _floor(module: str) -> int | None:
    """The floor of ``module``: its own entry in FLOORS, else its nearest package's (not the top package's)."""
    if module == PACKAGE:
        return FLOORS[PACKAGE]
    name = module
    while name != PACKAGE:
        if name in FLOORS:
            return FLOORS[name]
        name = name.rpartition(".")[0]
    return None


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other in a circle, however many groups."""
    cycles: list[list[str]] = []
    remaining = {node: set(targets) for node, targets in graph.items()}
    while (cycle := _find_cycle(remaining)) is not None:
        cycles.append(cycle)
        members = set(cycle)  # drop the cycle's own edges; other circles through its modules remain
        for node in members:
            remaining[node] -= members
    return cycles


def test_the_graph_is_read() -> None:
    assert "dvid_store.transport" in GRAPH and "dvid_store.zarr.store" in GRAPH
    assert "dvid_store.errors" in GRAPH["dvid_store.transport"]
    assert "dvid_store.blocks" in GRAPH["dvid_store.zarr.store"]


def test_finding_cycles() -> None:
    """The checker itself: a cycle is reported as a path, an acyclic graph passes."""
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    two = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}
    assert _all_cycles(two) == [["a", "b", "a"], ["c", "d", "c"]]


def test_imports_in_functions_count_and_type_checking_ones_do_not() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .node import Node\n"
        "def f():\n    from .blocks import BlockIO\n"
    )
    statements = list(_runtime_imports(ast.parse(source)))
    names = {t for s in statements for t in _targets("dvid_store.dask", False, s)}
    assert names == {"dvid_store.blocks"}


def test_no_import_cycle() -> None:
    cycles = _all_cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_every_module_has_a_floor() -> None:
    missing = sorted(m for m in MODULES if _floor(m) is None)
    assert not missing, f"give these modules a floor in FLOORS (and in the concepts page): {missing}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if (_floor(m) or FRONT_END) < FRONT_END))
def test_nothing_below_the_front_ends_imports_a_front_end(module: str) -> None:
    """zarr, fs, dask, dask_array, xarray_backend, create, cli, cli_commands, testing (and the package)."""
    upward = sorted(t for t in GRAPH[module] if (_floor(t) or 0) >= FRONT_END)
    assert not upward, f"{module} (floor {_floor(module)}) imports front-end modules {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _floor(m) == 1))
def test_the_http_core_imports_only_errors(module: str) -> None:
    others = sorted(GRAPH[module] - HTTP_CORE_MAY_IMPORT)
    assert not others, f"{module} is HTTP core and may import only {sorted(HTTP_CORE_MAY_IMPORT)}, not {others}"


def test_every_import_points_down_or_across() -> None:
    upward = sorted(
        f"{module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})"
        for module, targets in GRAPH.items()
        for target in targets
        if (_floor(target) or 0) > (_floor(module) or 0)
    )
    assert not upward, "imports that point up a floor:\n" + "\n".join(upward)
