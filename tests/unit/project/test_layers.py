# SPDX-License-Identifier: Apache-2.0
"""The tree keeps its shape: no import cycle among the product's modules, and no
module imports one from a layer above its own (doc/source/architecture.rst).

Every import counts: at module level, inside functions, and under
``if TYPE_CHECKING:``. A module in no layer fails the test, so a new module
has to be given its place.
"""

from __future__ import annotations

import ast
import configparser
import pathlib
from collections.abc import Collection

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "rbd_driver"

# Lowest first. A module may import its own layer and the ones below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("rbd_driver", "rbd_driver.conf", "rbd_driver.exception")),
    # storage/krbd.py is kernelspace mechanics (sysfs writes, the kernel keyring).
    ("storage", ("rbd_driver.storage",)),
    ("access", ("rbd_driver.libvirt", "rbd_driver.volumes", "rbd_driver.encryption")),
    ("backends", ("rbd_driver.imagebackend", "rbd_driver.backends")),
    ("managers", ("rbd_driver.ops",)),
    ("testing", ("rbd_driver.testing",)),
    # rbd_driver.cli is the package: cli/__init__ (main), _common, output, and one
    # module per command group.
    ("command", ("rbd_driver.cli", "rbd_driver.cli._common", "rbd_driver.cli.output",
                 "rbd_driver.cli.health", "rbd_driver.cli.disks", "rbd_driver.cli.backup",
                 "rbd_driver.cli.golden", "rbd_driver.cli.provision", "rbd_driver.cli.qos",
                 "rbd_driver.cli.throwaway", "rbd_driver.cli.__main__",
                 "rbd_driver.cli.ganeti", "rbd_driver.cli.extstorage",
                 "rbd_driver.cli.demo")),
]
# The fake librbd mirrors the C library's object graph (a cluster knows its
# images, an image its cluster); its modules may name each other's types, under
# ``if TYPE_CHECKING:`` only: those edges (and no others) are left out of the
# cycle check.
TYPE_ONLY_CYCLES_UNDER = "rbd_driver.testing.fakes"

# Modules loaded through an entry point (setup.cfg) are edges of the layer check
# too: a module that names an entry-point group in a call (or as a module
# constant) loads every module of that group. (Not of the cycle check: a plugin
# is loaded when called, never at import, and imports its loader's base class.)
# Allowed above the loader's own layer only:
ENTRY_POINT_LOADS_ABOVE = {
    # list_opts walks the backend plugins so their options reach the sample config,
    # as glance_store's list_opts walks its drivers.
    ("rbd_driver.conf", "rbd_driver.image_backends"),
}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(test: ast.expr, imported: bool) -> bool:
    """``typing.TYPE_CHECKING``, or ``TYPE_CHECKING`` where the module imports it from typing."""
    return (imported and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
         and isinstance(test.value, ast.Name) and test.value.id == "typing")


def _imports_type_checking(tree: ast.AST) -> bool:
    """The module's ``TYPE_CHECKING`` is typing's, never a name it binds itself."""
    from_typing = any(isinstance(node, ast.ImportFrom) and node.module == "typing"
                      and any(a.name == "TYPE_CHECKING" and a.asname is None for a in node.names)
                      for node in ast.walk(tree))
    rebound = any(isinstance(node, ast.Name) and node.id == "TYPE_CHECKING"
                  and isinstance(node.ctx, ast.Store) for node in ast.walk(tree))
    return from_typing and not rebound


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside the body of an ``if TYPE_CHECKING:`` (not its ``else``)."""
    inside: set[int] = set()
    imported = _imports_type_checking(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test, imported):
            for stmt in node.body:
                inside.update(id(n) for n in ast.walk(stmt))
    return inside


def _entry_points() -> dict[str, set[str]]:
    """setup.cfg's entry-point groups -> the modules their entry points name."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    groups: dict[str, set[str]] = {}
    for group, text in parser["options.entry_points"].items():
        groups[group] = {line.split("=", 1)[1].strip().split(":")[0]
                         for line in text.splitlines() if "=" in line}
    return groups


ENTRY_POINTS = _entry_points()


def _loads(path: pathlib.Path) -> set[str]:
    """The entry-point groups a module loads: named by a string in a call, or assigned
    to a module constant (``NAMESPACE = "..."``)."""
    tree = ast.parse(path.read_text(), str(path))
    strings: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            strings += [*node.args, *(k.value for k in node.keywords)]
    strings += [n.value for n in tree.body if isinstance(n, ast.Assign)]
    return {s.value for s in strings
            if isinstance(s, ast.Constant) and isinstance(s.value, str) and s.value in ENTRY_POINTS}


def _imports(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    return _import_edges(name, path, modules)[0]


def _import_edges(name: str, path: pathlib.Path,
                  modules: dict[str, pathlib.Path]) -> tuple[set[str], set[str]]:
    """Return (every module ``name`` imports, those it imports under TYPE_CHECKING only)."""
    return _source_edges(name, path.name == "__init__.py", path.read_text(), modules)


def _source_edges(name: str, is_package: bool, source: str,
                  modules: Collection[str]) -> tuple[set[str], set[str]]:
    package = name if is_package else name.rpartition(".")[0]
    deps: set[str] = set()
    runtime: set[str] = set()
    tree = ast.parse(source, name)
    typing_only = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        found = {t for t in targets if t in modules and t != name}
        deps.update(found)
        if id(node) not in typing_only:
            runtime.update(found)
    return deps, deps - runtime


def _layer(name: str) -> int:
    best = (-1, -1)  # (length of the matching prefix, layer index)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or (name.startswith(prefix + ".") and prefix != "rbd_driver"):
                best = max(best, (len(prefix), index))
    return best[1]


MODULES = _modules()
EDGES = {name: _import_edges(name, path, MODULES) for name, path in MODULES.items()}
LOADS = {name: {(group, module) for group in _loads(path) for module in ENTRY_POINTS[group]
                if module in MODULES and module != name}
         for name, path in MODULES.items()}
# Every edge: imports (module level, in functions, under TYPE_CHECKING) and loads.
GRAPH = {name: EDGES[name][0] | {m for _, m in LOADS[name]} for name in MODULES}


def test_every_module_has_a_layer() -> None:
    assert [name for name in MODULES if _layer(name) < 0] == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    wrong = [f"{name} ({LAYERS[_layer(name)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})"
             for name, deps in GRAPH.items() for dep in sorted(deps - _allowed_loads(name))
             if _layer(dep) > _layer(name)]
    assert wrong == []


def _allowed_loads(name: str) -> set[str]:
    return {m for group, m in LOADS[name] if (name, group) in ENTRY_POINT_LOADS_ABOVE}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _cycle_graph(edges: dict[str, tuple[set[str], set[str]]] | None = None) -> dict[str, set[str]]:
    """The imports, without the fakes' TYPE_CHECKING-only ones among themselves."""
    edges = EDGES if edges is None else edges
    graph = {}
    for name, (deps, typing_only) in edges.items():
        skip = set()
        if _under(name, TYPE_ONLY_CYCLES_UNDER):
            skip = {d for d in typing_only if _under(d, TYPE_ONLY_CYCLES_UNDER)}
        graph[name] = deps - skip
    return graph


def test_no_import_cycle_among_the_products_modules() -> None:
    assert _cycles(_cycle_graph()) == []


def test_the_fakes_exemption_is_only_for_type_checking_imports() -> None:
    # Their runtime imports form no cycle; only the TYPE_CHECKING ones do.
    cluster = "rbd_driver.testing.fakes.fake_cluster"
    assert "rbd_driver.testing.fakes.image" in EDGES[cluster][1]
    assert "rbd_driver.testing.fakes.model" in GRAPH[cluster] - EDGES[cluster][1]
    assert "rbd_driver.testing.fakes.model" in _cycle_graph()[cluster]
    everything = {name: EDGES[name][0] for name in MODULES}
    assert [c for c in _cycles(everything) if cluster in c]  # what is exempted is real
    # A runtime import closing the cycle is caught, however it is written; a
    # TYPE_CHECKING that is not typing's exempts nothing.
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    {}\n"
    back = "from rbd_driver.testing.fakes.a import A"
    for a_imports_b, exempted in [
        (typed, True),
        ("import typing\nif typing.TYPE_CHECKING:\n    {}\n", True),
        ("{}\n", False),
        ("def f():\n    {}\n", False),
        (typed + "else:\n    {}\n", False),
        ("from typing import TYPE_CHECKING\nif not TYPE_CHECKING:\n    {}\n", False),
        (typed + "{}\n", False),  # both: the runtime one counts
        ("TYPE_CHECKING = True\nif TYPE_CHECKING:\n    {}\n", False),
        ("from typing import TYPE_CHECKING\nTYPE_CHECKING = True\nif TYPE_CHECKING:\n    {}\n",
         False),
    ]:
        fake = {"rbd_driver.testing.fakes.a": a_imports_b.replace(
                    "{}", "from rbd_driver.testing.fakes.b import B"),
                "rbd_driver.testing.fakes.b": back}
        edges = {n: _source_edges(n, False, text, fake) for n, text in fake.items()}
        assert edges["rbd_driver.testing.fakes.b"][0] == {"rbd_driver.testing.fakes.a"}
        assert (_cycles(_cycle_graph(edges)) == []) == exempted, a_imports_b
        assert _cycles({n: e[0] for n, e in edges.items()}) != []  # the walk sees the edge
    # Outside the fakes, or with a module outside them, a TYPE_CHECKING cycle counts.
    for a, b in [("rbd_driver.storage.a", "rbd_driver.storage.b"),
                 ("rbd_driver.testing.fakes.a", "rbd_driver.testing.fakes_b")]:
        edges = {a: ({b}, {b}), b: ({a}, set())}
        assert _cycles(_cycle_graph(edges)) == [sorted([a, b])]


def test_the_walk_sees_modules_loaded_through_entry_points() -> None:
    assert ("rbd_driver.image_backends", "rbd_driver.backends.rbd") in LOADS["rbd_driver.conf"]
    assert "rbd_driver.backends.rbd" in GRAPH["rbd_driver.conf"]
    assert "rbd_driver.backends.flat" in GRAPH["rbd_driver.imagebackend"]
    assert _allowed_loads("rbd_driver.imagebackend") == set()  # same layer: nothing to allow


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, expected) -> None:
    assert _cycles(graph) == expected


def test_the_walk_sees_function_level_and_type_checking_imports() -> None:
    # rbd_utils builds its spares and flatten queue on demand, importing them in
    # a function; the walk must see those edges or a cycle through them hides.
    assert "rbd_driver.storage.spares" in GRAPH["rbd_driver.storage.rbd_utils"]
    assert "rbd_driver.storage.flatten_queue" in GRAPH["rbd_driver.storage.rbd_utils"]
